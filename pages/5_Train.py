"""Train page: what a retraining run would use, and the runs so far."""

import streamlit as st

from mdsdys import ui
from mdsdys.store.stats import store_counts

ui.page_setup("Train")
st.title("Train models")
user = ui.require_login("adjudicator")

with ui.store() as db:
    counts = store_counts(db)
left, middle, right = st.columns(3)
left.metric("Nucleus masks (segmenter data)", counts["masks"])
middle.metric("Human reads (classifier data)", counts["reads"])
right.metric("Model versions", counts["models"])
if counts["masks"] == 0 and counts["reads"] == 0:
    st.info("Nothing to train on yet: draw or import nucleus masks, and label cells on the Review page.")
else:
    st.info("One-click retraining in the background arrives with issue #6.")
