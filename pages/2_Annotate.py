"""Annotate page: nucleus masks on smear fields, which train the segmenter."""

import pandas as pd
import streamlit as st

from mdsdys import ui
from mdsdys.store.patches import list_patches
from mdsdys.store.slides import list_slides

ui.page_setup("Annotate")
st.title("Annotate nucleus masks")
user = ui.require_login()

with ui.store() as db:
    slides = list_slides(db)
    patches = {s.case_id: list_patches(db, s.id) for s in slides}

fields = [dict(p, slide=name) for name, rows in patches.items() for p in rows]
if not fields:
    st.info("No smear fields to annotate yet. Import fields on the Import page (or run `mdsdys demo`).")
    st.stop()

masked = sum(1 for f in fields if f["masks"])
st.metric("Fields with at least one mask", f"{masked} of {len(fields)}")
st.dataframe(pd.DataFrame(fields)[["slide", "name", "width", "height", "masks"]], hide_index=True,
             key="annotate_fields")
st.info("Drawing on the canvas comes with the segmentation issue (#3); masks imported with "
        "`mdsdys import-masks` are already counted here.")
