"""The model commands end to end on the demo study: train, segment, propose, evaluate."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mdsdys.demo import synth
from mdsdys.demo.study import build_demo
from mdsdys.store import connect
from mdsdys.store.models import active_model
from mdsdys.store.stats import store_counts

TINY_SEG = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "crop": 64, "max_seconds": None,
            "unet": {"depth": 2, "width": 4}}
TINY_CLS = {"epochs": 4, "batch_size": 8, "input_size": 32}


def _run(home, *args):
    return subprocess.run([sys.executable, "-m", "mdsdys.cli", *args], env=os.environ | {"MDSDYS_HOME": str(home)},
                          capture_output=True, text=True, timeout=600)


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_train_segment_propose_and_evaluate_from_the_command_line(home, tmp_path):
    with connect(home / "labels.db") as db:
        # 14 labels a class leave the 10 training labels a candidate needs (registry.retrain.MIN_TRAIN_PER_CLASS).
        build_demo(db, seed=0, patches_per_slide=4, with_cells=False, training_cells_per_class=14)
    trained = _run(home, "train", "segmenter", "--settings", json.dumps(TINY_SEG))
    assert trained.returncode == 0, trained.stderr
    assert "validation Dice" in trained.stdout and "epoch" in trained.stderr.lower()
    assert _run(home, "segment", "SYN-001").returncode == 0
    trained = _run(home, "train", "classifier", "--settings", json.dumps(TINY_CLS))
    assert trained.returncode == 0, trained.stderr
    proposed = _run(home, "propose", "SYN-001")
    assert proposed.returncode == 0 and "proposals stored" in proposed.stdout
    with connect(home / "labels.db") as db:
        assert active_model(db, "segmenter") and active_model(db, "classifier", "mds8")
        assert store_counts(db)["cells"] > 8 * 6

    rng = np.random.default_rng(5)
    cells = tmp_path / "cells"
    for code in synth.CLASS_CODES:
        (cells / code).mkdir(parents=True)
        for i in range(3):
            (cells / code / f"{i}.png").write_bytes(_png(synth.generate_cell(rng, code, size=72)[0]))
    result = _run(home, "eval-classifier", str(cells), "--json", str(tmp_path / "cls.json"))
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "cls.json").read_text())
    assert set(figures) >= {"macro_f1", "accuracy", "confusion", "per_class"}
    assert set(figures["per_class"]["EN"]) >= {"sensitivity", "specificity", "auc", "accuracy", "ppv", "npv", "f1", "ap"}
    assert "|" in result.stdout

    fields = tmp_path / "fields"
    (fields / "images").mkdir(parents=True)
    (fields / "masks").mkdir()
    for i in range(2):
        patch = synth.generate_patch(rng, 128, 128)
        (fields / "images" / f"f{i}.png").write_bytes(_png(patch.image))
        (fields / "masks" / f"f{i}.png").write_bytes(_png(patch.mask))
    result = _run(home, "eval-segmenter", str(fields), "--diameter", "24", "--json", str(tmp_path / "seg.json"))
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "seg.json").read_text())) >= {"dice", "iou", "object_f1"}
