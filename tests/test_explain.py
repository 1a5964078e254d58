"""Grad-CAM on the review pages: a heatmap over the crop, and its share outside the nucleus."""

import math

import pytest
from conftest import open_page

from mdsdys.accounts import auth
from mdsdys.classify import cam as cam_module
from mdsdys.classify.proposals import propose_labels
from mdsdys.classify.train import ClsTrainConfig
from mdsdys.config import load_settings
from mdsdys.demo.study import build_demo
from mdsdys.errors import MdsdysError
from mdsdys.registry.retrain import train_classifier_from_store
from mdsdys.review import explain
from mdsdys.store.cells import list_cells
from mdsdys.store.models import active_model
from mdsdys.store.slides import list_slides


@pytest.fixture
def trained(db, home):
    build_demo(db, seed=0, patches_per_slide=1, training_cells_per_class=6)
    reader = auth.authenticate(db, "reader1", "demo-reader-1")
    slide = list_slides(db)[0]
    cell = list_cells(db, slide.id)[0]
    with pytest.raises(MdsdysError, match="No classifier"):
        explain.cell_grad_cam(db, reader, cell.id)
    train_classifier_from_store(load_settings(), "mds8", ClsTrainConfig(epochs=3, batch_size=8, input_size=32),
                                min_train_per_class=3)  # a tiny demo: 6 labels a class
    propose_labels(db, slide.id)
    # A 3-epoch model can give a cell an empty Grad-CAM (no mass anywhere: the fraction is undefined);
    # these tests are about a cell it looks at, so take the first such cell.
    cell = next(c for c in list_cells(db, slide.id)
                if math.isfinite(explain.cell_grad_cam(db, reader, c.id).outside_fraction))
    explain.forget_slide_calibrations()  # the probe calibrated the slide; each test calibrates it under its own settings
    return reader, slide, cell


@pytest.mark.slow
def test_grad_cam_overlays_the_crop_and_measures_mass_outside_the_nucleus(db, trained):
    reader, _, cell = trained
    view = explain.cell_grad_cam(db, reader, cell.id)
    again = explain.cell_grad_cam(db, reader, cell.id)  # cached
    assert view.image.shape[2] == 3 and view.image.shape[0] == view.image.shape[1]
    assert 0.0 <= view.outside_fraction <= 1.0 and again.outside_fraction == view.outside_fraction
    assert explain.cell_grad_cam(db, reader, cell.id, code="BL").code == "BL"


@pytest.mark.slow
def test_a_model_without_its_own_calibration_is_judged_against_the_slides_cells(db, trained, monkeypatch):
    reader, slide, cell = trained  # the demo's classifier trained on imported single cells: no nucleus masks
    classifier = explain._classifier(active_model(db, "classifier", "mds8").path,
                                     active_model(db, "classifier", "mds8").version)
    assert classifier.cam_warning is None
    monkeypatch.setattr(cam_module, "MIN_CAM_CALIBRATION_CELLS", 3)  # a one-field demo slide has a few cells
    view = explain.cell_grad_cam(db, reader, cell.id)
    n = len([c for c in list_cells(db, slide.id) if c.nucleus_png])
    assert "of this slide's cells" in view.calibrated_on and int(view.calibrated_on.split()[0]) <= n  # empty CAMs drop out
    if view.diffuse:  # a 3-epoch model may look wholly outside the nucleus on one of a few cells: no threshold
        assert view.threshold is None and view.unusual is None and "wholly outside the nucleus" in view.note()
    else:
        assert view.threshold is not None
        assert view.unusual is (view.outside_fraction > view.threshold) and "this slide's cells" in view.note()


@pytest.mark.slow
def test_the_review_page_shows_grad_cam_when_toggled(db, trained):
    reader, _, _ = trained
    at = open_page("pages/3_Review.py", reader.id)
    at.toggle(key="review_cam").set_value(True).run()
    assert not at.exception and not at.error
    notes = " ".join(str(e.value) for e in [*at.caption, *at.warning])
    assert "outside the nucleus" in notes
