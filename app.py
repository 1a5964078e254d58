"""Home page: log in, then an overview of the project with counts and links."""

import pandas as pd
import streamlit as st

from mdsdys.accounts import policy
from mdsdys.app import ui, views

ui.page_setup("Home")
st.title("mdsdys: dysplastic cells in bone-marrow smears")
user = ui.require_login()

with ui.store() as db:
    counts = views.home_counts(db, user)
    slides = views.home_slides(db, user)

columns = st.columns(len(counts))
for column, (name, value) in zip(columns, counts.items()):
    column.metric(name.capitalize(), f"{value:,}")

st.subheader("Slides")
if slides:
    table = pd.DataFrame(slides).drop(columns=["id"]).rename(columns={
        "case_id": "Slide", "scheme": "Label scheme", "diagnosis_group": "Group", "patches": "Fields",
        "masks": "Masks", "cells": "Cells", "labelled_cells": "Labelled cells",
        "my_reads": "Read by you"})
    st.dataframe(table, hide_index=True, key="home_slides")
else:
    st.info("No slides yet. Import smear fields or labelled cells on the Import page, "
            "or start the demo with `mdsdys demo`.")

st.subheader("Where to go")
st.page_link("pages/1_Import.py", label="Import: add smear fields, labelled cells or masks", icon=":material/upload:")
st.page_link("pages/2_Annotate.py", label="Annotate: draw nucleus masks to train the segmenter", icon=":material/draw:")
st.page_link("pages/3_Review.py", label="Review: label cells from the keyboard, blinded", icon=":material/visibility:")
st.page_link("pages/4_Consensus.py", label="Consensus: settle disagreements between readers", icon=":material/handshake:")
st.page_link("pages/5_Train.py", label="Train: retrain the segmenter or classifier", icon=":material/model_training:")
st.page_link("pages/6_Dashboard.py", label="Dashboard: differential, dysplasia %, blasts, M:E", icon=":material/monitoring:")
if policy.can(user, "readers_view"):
    st.page_link("pages/8_Readers.py", label="Readers: each reader against gold cells", icon=":material/verified:")
if policy.can(user, "user_manage"):
    st.page_link("pages/7_Admin.py", label="Admin: users, roles and label schemes", icon=":material/admin_panel_settings:")
