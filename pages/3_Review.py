"""Review page: each reader labels cells, blind to the other reader."""

import pandas as pd
import streamlit as st

from mdsdys import ui
from mdsdys.store.reads import reader_progress

ui.page_setup("Review")
st.title("Review cells")
user = ui.require_login("reader", "adjudicator")

with ui.store() as db:
    progress = reader_progress(db, user.id)

if not progress:
    st.info("No cells to review yet. Import labelled cells or fields on the Import page; "
            "cells found by the segmenter appear here once it has run.")
    st.stop()
st.subheader(f"Your progress, {user.username}")
st.dataframe(pd.DataFrame(progress), hide_index=True, key="review_progress")
st.info("Keyboard review with model proposals and Grad-CAM comes with the review issue (#4).")
