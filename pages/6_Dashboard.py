"""Dashboard page: one row per slide."""

import pandas as pd
import streamlit as st

from mdsdys import ui
from mdsdys.store.stats import slide_overview

ui.page_setup("Dashboard")
st.title("Slide dashboard")
user = ui.require_login()

with ui.store() as db:
    slides = slide_overview(db)
if not slides:
    st.info("No slides yet. Import fields or labelled cells on the Import page (or run `mdsdys demo`).")
    st.stop()
st.dataframe(pd.DataFrame(slides).drop(columns=["id"]), hide_index=True, key="dashboard_slides")
st.caption("Dysplasia %, blast % and M:E with confidence intervals arrive with the dashboard issue (#7).")
