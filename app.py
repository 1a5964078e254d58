"""Home page: log in, then an overview of the project with counts and links."""

import pandas as pd
import streamlit as st

from mdsdys import ui
from mdsdys.store.stats import slide_overview, store_counts

ui.page_setup("Home")
st.title("mdsdys: dysplastic cells in bone-marrow smears")
user = ui.require_login()

with ui.store() as db:
    counts = store_counts(db)
    slides = slide_overview(db)

columns = st.columns(len(counts))
for column, (name, value) in zip(columns, counts.items()):
    column.metric(name.capitalize(), f"{value:,}")

st.subheader("Slides")
if slides:
    st.dataframe(pd.DataFrame(slides).drop(columns=["id"]), hide_index=True, key="home_slides")
else:
    st.info("No slides yet. Import smear fields or labelled cells on the Import page, "
            "or start the demo with `mdsdys demo`.")

st.subheader("Where to go")
st.page_link("pages/1_Import.py", label="Import: add smear fields, labelled cells or masks", icon="📥")
st.page_link("pages/2_Annotate.py", label="Annotate: draw nucleus masks to train the segmenter", icon="✏️")
st.page_link("pages/3_Review.py", label="Review: label cells from the keyboard, blinded", icon="🔍")
st.page_link("pages/4_Consensus.py", label="Consensus: settle disagreements between readers", icon="🤝")
st.page_link("pages/5_Train.py", label="Train: retrain the segmenter or classifier", icon="🧠")
st.page_link("pages/6_Dashboard.py", label="Dashboard: differential, dysplasia %, blasts, M:E", icon="📊")
if user.is_admin:
    st.page_link("pages/7_Admin.py", label="Admin: users, roles and label schemes", icon="🛠️")
