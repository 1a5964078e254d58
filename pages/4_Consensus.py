"""Consensus page: settle the cells on which two readers disagree."""

import streamlit as st

from mdsdys import ui
from mdsdys.store.stats import store_counts

ui.page_setup("Consensus")
st.title("Consensus")
user = ui.require_login("adjudicator")

with ui.store() as db:
    counts = store_counts(db)
st.metric("Consensus decisions so far", counts["consensus"])
st.info("Nothing to settle yet: disagreements appear here once two readers have read the same cells "
        "(consensus workflow: issue #5).")
