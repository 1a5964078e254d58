"""The app's entry: Home (log in, then an overview with counts and links) and the pages a role can use.

Streamlit runs this file on every rerun; `st.navigation` then runs the page the URL names. The
sidebar lists only the pages this user may use (mdsdys.app.navigation); each page refuses on its own.
"""

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views


def home() -> None:
    """The Home page: the login form, or the project's counts, its slides and where to go."""
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
    ui.home_links(user)


ui.refuse_damaged_store()  # before the first store read, so a damaged store says so instead of a traceback
ui.navigation(home, ui.current_user()).run()
