"""Import page: upload smear fields, labelled single cells (zip of class folders) or image/mask pairs."""

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.ingest import importer

ui.page_setup("Import")
st.title("Import")
user = ui.require_login("adjudicator", "admin")

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
                               help=f"Up to {ui.settings().max_upload_mb} MB per file; zip a folder to keep class "
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
        files = importer.files_from_uploads([(u.name, u.getvalue()) for u in uploads], ui.settings().max_upload_mb)
        progress = lambda done, total, name: bar.progress(done / max(total, 1), text=f"{done}/{total}: {name}")
        with ui.store() as db:
            report = importer.run_import(db, kind, slide_name, files, scheme_name=scheme.strip() or None, user=user,
                                       max_pixels=ui.settings().max_image_pixels, progress=progress)
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

st.caption("Formats are described in the README under 'Import formats'. Importing the same files again adds nothing.")
