"""Import page: upload smear fields, labelled single cells (zip of class folders), image/mask pairs, or a
whole-slide scan whose fields are chosen in its monolayer."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.app.overview import clicked_box, overview_figure
from mdsdys.errors import MdsdysError
from mdsdys.ingest import importer, slide_import, wsi
from mdsdys.jobs import progress

ui.page_setup("Import")
st.title("Import")
user = ui.require_login("import")

KINDS = {
    "Smear fields (images or a zip of images)": "patches",
    "Labelled single cells (a zip with one folder per class)": "cells",
    "Fields with nucleus masks (a zip with images/ and masks/)": "masks",
}
with ui.store() as db:
    slide_names = [s.case_id for s in views.slides(db)]
    scheme_names = views.scheme_names(db)

with st.form("import_form"):
    kind = KINDS[st.radio("What are you importing?", list(KINDS), key="import_kind")]
    slide = st.selectbox("Slide (case)", ["(new slide)", *slide_names], key="import_slide")
    new_slide = st.text_input("New slide name", key="import_new_slide", placeholder="e.g. BM-2026-0142")
    scheme = st.text_input("Label scheme (single cells only; a new name is created from the folder names)",
                           key="import_scheme", placeholder=", ".join(scheme_names) or "mds8")
    uploads = st.file_uploader("Files", accept_multiple_files=True, key="import_files",
                               help=f"Up to {ui.settings().max_upload_mb} MB per import; zip a folder to keep class "
                                    "folders or images/ and masks/ together.",
                               type=["jpg", "jpeg", "png", "tif", "tiff", "bmp", "zip"])
    submitted = st.form_submit_button("Import", type="primary")

if submitted:
    slide_name = new_slide.strip() if slide == "(new slide)" else slide
    if not slide_name or not uploads:
        st.warning("Choose or name a slide and add at least one file.")
        st.stop()
    bar = st.progress(0.0, text="Reading files...")
    try:
        files = importer.files_from_uploads([(u.name, u.getvalue()) for u in uploads], ui.settings().max_upload_mb,
                                            importer.unpack_budget(ui.settings()))
        on_file = lambda done, total, name: bar.progress(done / max(total, 1), text=f"{done}/{total}: {name}")
        with ui.store() as db:
            report = importer.run_import(db, kind, slide_name, files, scheme_name=scheme.strip() or None, user=user,
                                       max_pixels=ui.settings().max_image_pixels, progress=on_file,
                                       settings=ui.settings())
    except MdsdysError as exc:
        ui.show_error(exc)
        st.stop()
    (st.success if report.ok else st.warning)(report.summary())
    for name, reason in report.skipped[:20]:
        st.error(reason if name in reason else f"{name}: {reason}")
    if len(report.skipped) > 20:
        st.caption(f"... and {len(report.skipped) - 20} more, listed in the table below.")
    if report.skipped:
        st.dataframe(pd.DataFrame(report.skipped, columns=["file", "why it was skipped"]), hide_index=True,
                     key="import_skipped")
    if report.detection_job is not None:
        st.info(f"Cells are being detected on {report.slide} in the background, then the classifier proposes "
                "labels. The slide appears on the Review page as soon as its first cells are stored.")
    elif report.detection_note and kind != "cells":
        st.warning(report.detection_note)


@st.fragment(run_every=2.0)
def detection_progress() -> None:
    """Each slide's latest detection job, refreshed every 2 s while the page is open."""
    ui.recheck_login("import")  # a fragment rerun skips the page's login check: a logout or demotion stops it
    with ui.store() as db:
        jobs = progress.slide_jobs(db)
        names = {s.id: s.case_id for s in views.slides(db)}
    if not jobs:
        return
    st.subheader("Detection and proposals")
    for slide_id, job in sorted(jobs.items(), key=lambda item: -item[1].job_id)[:8]:
        label = f"{names.get(slide_id, slide_id)}: {job.text}"
        if job.state == "failed":
            st.error(label)
        elif job.fraction is not None and job.state == "running":
            st.progress(job.fraction, text=label)
        else:
            st.caption(label)


detection_progress()

st.caption("Formats are described in the README under 'Import formats'. Importing the same files again adds nothing.")

# --- Whole-slide scans (issue 18) ---------------------------------------------------------------
st.divider()
st.subheader("Whole-slide scan")
st.caption("Formats: " + "; ".join(wsi.FORMATS) + ". The app finds the monolayer at low power and proposes "
           "fields there; click a field's marker on the overview to drop it, or a faint marker to add one.")
with st.form("wsi_form"):
    scan_upload = st.file_uploader("Scan file", key="wsi_upload", type=[s.lstrip(".") for s in wsi.SLIDE_SUFFIXES])
    scan_path = st.text_input("... or the scan's path on the server (for large files and MIRAX folders)",
                              key="wsi_path", placeholder="/data/scans/BM-2026-0142.svs")
    entered_um = st.number_input("µm per pixel, only if the scan does not say (0 = unknown)", min_value=0.0,
                                 max_value=20.0, value=0.0, step=0.01, format="%.3f", key="wsi_um")
    open_scan = st.form_submit_button("Open scan")

if open_scan:
    try:
        if scan_upload is not None:
            path = slide_import.save_upload(ui.settings(), scan_upload.name, scan_upload.getvalue())
        elif scan_path.strip():
            path = Path(scan_path.strip()).expanduser()
        else:
            st.warning("Upload a scan or give its path.")
            st.stop()
        with st.spinner("Reading the overview and finding the monolayer..."):
            st.session_state["wsi_plan"] = slide_import.plan_slide(path, entered_um or None)
        st.session_state["wsi_chart"] = st.session_state.get("wsi_chart", 0) + 1
    except MdsdysError as exc:
        ui.show_error(exc)
        st.stop()

plan = st.session_state.get("wsi_plan")
if plan is not None:
    info = plan.info
    scale = {"scan": f"{plan.um_per_px:g} µm per px (from the scan)",
             "entered": f"{plan.um_per_px:g} µm per px (entered)",
             "assumed": f"unknown: fields sized as if {plan.um_per_px:g} µm per px; enter the scale above"}[plan.scale_source]
    st.write(f"**{info.file_name}**: {info.format}, {info.width:,} x {info.height:,} px; scale {scale}.")
    st.write(f"**{len(plan.chosen)} fields chosen**, about {plan.expected_cells:.0f} nucleated cells expected "
             f"(overview in {plan.seconds.get('overview', 0):.1f} s, zones in {plan.seconds.get('zones', 0):.1f} s).")
    chart_key = f"wsi_overview_{st.session_state.get('wsi_chart', 0)}"
    event = st.plotly_chart(overview_figure(plan), on_select="rerun", selection_mode="points", key=chart_key,
                            config={"displayModeBar": False})
    box = clicked_box(event)
    if box is not None:
        plan.toggle(box)
        st.session_state["wsi_chart"] = st.session_state.get("wsi_chart", 0) + 1  # a fresh chart: no stale selection
        st.rerun()
    with st.form("wsi_import_form"):
        wsi_slide = st.selectbox("Slide (case)", ["(new slide)", *slide_names], key="wsi_slide")
        wsi_new = st.text_input("New slide name for this scan", key="wsi_new_slide", value=Path(info.file_name).stem)
        do_import = st.form_submit_button(f"Import {len(plan.chosen)} fields", type="primary")
    if do_import:
        slide_name = wsi_new.strip() if wsi_slide == "(new slide)" else wsi_slide
        bar = st.progress(0.0, text="Reading fields...")
        try:
            with ui.store() as db:
                report = slide_import.import_fields(
                    db, slide_name, plan, user,
                    progress=lambda done, total, name: bar.progress(done / max(total, 1), text=f"{done}/{total}: {name}"))
                report.job_id = slide_import.queue_detection(ui.settings(), db, report.slide_id)
        except MdsdysError as exc:
            ui.show_error(exc)
            st.stop()
        st.success(report.summary())
