"""Review page: each reader labels cells from the keyboard, blind to the other reader."""

import time

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.review import reads

ui.page_setup("Review")
st.title("Review cells")
user = ui.require_login(*reads.REVIEW_ROLES)

with ui.store() as db:
    slides = views.review_slides(db)
if not slides:
    st.info("No cells to review yet. Import labelled cells or fields on the Import page; "
            "cells found by the segmenter appear here once it has run.")
    st.stop()

requested = st.query_params.get("cell")
if requested and requested.isdigit() and st.session_state.get("review_opened") != requested:
    # Opened from the Dashboard: show that cell first (the viewer still sees only their own read).
    st.session_state["review_opened"] = requested
    with ui.store() as db:
        opened = reads.load_cell_view(db, user, int(requested), show_proposal=False)
    st.session_state["review_slide"] = next((s for s in slides if s.id == opened.cell.slide_id), slides[0])
    st.session_state["review_open_cell"] = opened.cell.id

with st.sidebar:
    slide = st.selectbox("Slide", slides, format_func=lambda s: s.case_id, key="review_slide")
    mode = st.radio("Queue", ["Most uncertain first", "Slide order", "Gallery"], key="review_mode")
    hide_model = st.toggle("Hide the model's proposal (avoids automation bias)", key="review_hide_model")
    show_cam = st.toggle("Show Grad-CAM (where the model looks)", key="review_cam", disabled=hide_model)


# The cell panel reruns alone on each key press (st.fragment): the page around it, the slide list and
# the sidebar, does not (issue 16, "fast review"). Every action re-reads the user from the store.
@st.fragment
def cell_panel(slide, mode: str, hide_model: bool, show_cam: bool) -> None:
    """The focused cell, its proposal and the class keys, for one slide and queue mode."""
    user = ui.recheck_login(*reads.REVIEW_ROLES)
    with ui.store() as db:
        row = views.my_progress(db, user, slide.id)
    st.progress(row["reviewed"] / max(row["cells"], 1), text=f"{row['reviewed']} reviewed, {row['remaining']} left")
    cursor_key = f"review_cursor_{slide.id}_{mode}"
    cursor: reads.ReviewCursor = st.session_state.setdefault(cursor_key, reads.ReviewCursor([]))
    queue_mode = "uncertain" if mode.startswith("Most") else "slide"
    if (opened_cell := st.session_state.pop("review_open_cell", None)) is not None:
        cursor.show(opened_cell)

    def _advance() -> None:
        if not cursor.forward():
            with ui.store() as db:
                cursor.show(reads.next_cell(db, user, slide.id, queue_mode, cursor.skipped or []))
        st.session_state["review_shown_at"] = time.monotonic()

    def _act(action, *args) -> None:
        """Run a review action for the focused cell, then move on; errors show on the page."""
        try:
            with ui.store() as db:
                action(db, ui.current_user(), *args)
            st.session_state["review_last_cell"] = args[0]
        except MdsdysError as exc:
            st.session_state["review_error"] = str(exc)
            return
        if mode != "Gallery":
            _advance()

    def _seconds() -> float:
        return round(time.monotonic() - st.session_state.get("review_shown_at", time.monotonic()), 2)

    def _label(cell_id: int, code: str, tags: list[str]) -> None:
        _act(reads.record_read, cell_id, code, tags, _seconds(), hide_model)

    def _undo() -> None:
        last = st.session_state.get("review_last_cell")
        if last is None:
            st.session_state["review_error"] = "Nothing to undo yet."
            return
        _act(reads.undo_read, last)
        cursor.show(last)


    if mode == "Gallery":
        with ui.store() as db:
            rows = views.my_gallery(db, user, slide.id)
        focus = st.session_state.get("review_gallery_focus", rows[0]["cell_id"] if rows else None)
    else:
        if cursor.current is None and cursor.position < len(cursor.history):
            _advance()
        focus = cursor.current

    if focus is None:
        st.success("You have read every cell of this slide. Choose another slide, or go back with ← to change a read.")
        st.button("← Previous", key="review_prev_done", shortcut="Left", on_click=cursor.back)
        return

    try:
        with ui.store() as db:
            view = reads.load_cell_view(db, user, focus, show_proposal=not hide_model)
    except MdsdysError as exc:
        ui.show_error(exc)
        return

    if error := st.session_state.pop("review_error", None):
        st.error(error)

    crop_col, context_col, info_col = st.columns([1, 1, 1])
    if show_cam and not hide_model:
        from mdsdys.review import explain  # Grad-CAM runs the classifier: torch loads only when a reader asks

        try:
            with ui.store() as db:
                cam = explain.cell_grad_cam(db, user, view.cell.id)
            crop_col.image(cam.image, width=240)
            if cam.outside_fraction is not None:
                note = f"Grad-CAM for {cam.code}: {cam.outside_fraction:.0%} of it lies outside the nucleus"
                (crop_col.warning if cam.outside_fraction > explain.OUTSIDE_WARNING else crop_col.caption)(note)
        except MdsdysError as exc:
            crop_col.caption(str(exc))
            crop_col.image(view.crop, width=240)
    else:
        crop_col.image(view.crop, width=240)
    crop_col.caption(f"Cell {view.cell.id} · slide {view.slide}")
    context_col.image(view.context, caption="In its field", width=320)
    with info_col:
        if view.proposal:
            st.write("**Model proposal**")
            for code, p in view.proposal.ranked[:3]:
                st.progress(p, text=f"{code} · {view.scheme.get(code).name}: {p:.0%}")
        elif hide_model:
            st.caption("Model proposal hidden for this session.")
        else:
            st.caption("No model proposal yet for this cell.")
        if view.my_read:
            st.info(f"Your read: **{view.my_read.code}** {', '.join(view.my_read.tags)}")
        features = sorted({f for c in view.scheme.classes for f in view.scheme.features_for(c.code)})
        chosen_tags = st.multiselect("Dysplasia features (kept for a class of that lineage)", features,
                                     key=f"review_tags_{focus}")

    st.write("**Class** (press its key)")
    columns = st.columns(len(view.scheme.classes))
    for column, label_class in zip(columns, view.scheme.classes, strict=True):
        column.button(
            f"{label_class.code} [{label_class.hotkey}]", key=f"review_class_{label_class.code}",
            help=label_class.name, shortcut=label_class.hotkey.upper(), width="stretch",
            on_click=_label, args=(focus, label_class.code, reads.tags_for_code(view.scheme, label_class.code, chosen_tags)),
        )

    actions = st.columns(5)
    actions[0].button("Accept proposal [A]", key="review_accept", shortcut="A", disabled=view.proposal is None,
                      on_click=_act, args=(lambda db, u, cid: reads.accept_proposal(db, u, cid, _seconds()), focus))
    actions[1].button("Skip [S]", key="review_skip", shortcut="S", disabled=mode == "Gallery",
                      on_click=lambda: (cursor.skip(), _advance()))
    actions[2].button("Undo [U]", key="review_undo", shortcut="U", on_click=_undo)
    actions[3].button("← Previous", key="review_prev", shortcut="Left", disabled=mode == "Gallery", on_click=cursor.back)
    actions[4].button("Next →", key="review_next", shortcut="Right", disabled=mode == "Gallery", on_click=_advance)

    if mode == "Gallery":
        st.divider()
        st.caption("Gallery: cells grouped by your read, else the model's class. Click one, then press a class key.")
        frame = pd.DataFrame(rows)
        groups = frame.groupby(frame["my_read"].fillna(frame["proposed"]).fillna("not proposed"))
        shown = {name: members["cell_id"].head(16).tolist() for name, members in groups}
        with ui.store() as db:
            crops = reads.load_crops(db, user, [c for ids in shown.values() for c in ids])
        for name, members in groups:
            st.write(f"**{name}** ({len(members)})")
            grid = st.columns(8)
            for i, cell_id in enumerate(shown[name]):
                with grid[i % 8]:
                    st.image(crops[cell_id], width=90)
                    st.button(f"#{cell_id}", key=f"review_pick_{cell_id}", type="primary" if cell_id == focus else "tertiary",
                              on_click=st.session_state.__setitem__, args=("review_gallery_focus", int(cell_id)))


cell_panel(slide, mode, hide_model, show_cam)
