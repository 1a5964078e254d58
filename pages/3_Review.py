"""Review page: each reader labels cells from the keyboard, blind to the other reader."""

import dataclasses
import time
from functools import partial

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.jobs import progress
from mdsdys.report import shift
from mdsdys.errors import MdsdysError
from mdsdys.schemes import UNASSESSABLE_REASONS
from mdsdys.review import counting, reads
from mdsdys.review.location import cell_place

ui.page_setup("Review")
st.title("Review cells")
user = ui.require_login("review")

with ui.store() as db:
    slides = views.review_slides(db)
    detecting = progress.slide_jobs(db)
if not slides:
    st.info("No cells to review yet. Import labelled cells or fields on the Import page; "
            "cells found by the segmenter appear here once it has run.")
    st.stop()

requested = st.query_params.get("cell")
if requested and requested.isdigit() and st.session_state.get("review_opened") != requested:
    # Opened from the Dashboard: show that cell first (the viewer still sees only their own read).
    st.session_state["review_opened"] = requested
    try:
        with ui.store() as db:
            opened = reads.load_cell_view(db, user, int(requested), show_proposal=False)
        st.session_state["review_slide"] = next((s for s in slides if s.id == opened.cell.slide_id), slides[0])
        st.session_state["review_open_cell"] = opened.cell.id
    except MdsdysError as exc:  # a stale or mistyped link: say so and show the queue instead
        ui.show_error(exc)

# After a reload or in a new tab, come back to the slide, queue and position this login last had (issue 14).
if "review_slide" not in st.session_state and (kept := ui.recall("review_slide_id")):
    st.session_state["review_slide"] = next((s for s in slides if s.id == kept), slides[0])
if "review_mode" not in st.session_state and ui.recall("review_mode"):
    st.session_state["review_mode"] = ui.recall("review_mode")

with st.sidebar:
    slide = st.selectbox("Slide", slides, format_func=lambda s: s.case_id + progress.status_line(detecting, s.id),
                         key="review_slide")
    mode = st.radio("Queue", ["Most uncertain first", "Slide order", "Settle this slide", "Gallery"], key="review_mode",
                    help="Settle this slide: cells the model puts in lineages your count has not settled come first.")
    hide_model = st.toggle("Hide the model's proposal (avoids automation bias)", key="review_hide_model")
    show_cam = st.toggle("Show Grad-CAM (where the model looks)", key="review_cam", disabled=hide_model)


SIZE_ORDERS = {"By class": "class", "Largest cells first": "cell_um", "Largest nuclei first": "nucleus_um"}


def count_states(user, slide, mode: str) -> None:
    """The counting rule's state of each lineage and the blast band, from this reader's own reads (issue 17).

    It sits in the cell panel, not the sidebar, so that it updates with every key press: a fragment
    cannot write to the sidebar, and the panel is the part that reruns.
    """
    with ui.store() as db:
        states = counting.reader_states(db, user, slide.id)
    line = " · ".join(f"{'✅' if s.settled else '⏳'} **{s.name}**: {s.describe()}" for s in states)
    st.markdown(f"Your count: {line}", help=counting.EXPLANATION)
    if mode == "Settle this slide":
        st.caption("Cells of unsettled lineages come first, so the blast % here is not the slide's: "
                   "count the 500-cell differential in slide order.")


# The cell panel reruns alone on each key press (st.fragment): the page around it, the slide list and
# the sidebar, does not (issue 16, "fast review"). Every action re-reads the user from the store.
@st.fragment
def cell_panel(slide, mode: str, hide_model: bool, show_cam: bool) -> None:
    """The focused cell, its proposal and the class keys, for one slide and queue mode."""
    user = ui.recheck_login("review")
    with ui.store() as db:
        row = views.my_progress(db, user, slide.id)
    st.progress(row["reviewed"] / max(row["cells"], 1), text=f"{row['reviewed']} reviewed, {row['remaining']} left")
    count_states(user, slide, mode)
    cursor_key = f"review_cursor_{slide.id}_{mode}"
    cursor: reads.ReviewCursor = st.session_state.setdefault(
        cursor_key, reads.ReviewCursor(**(ui.recall(cursor_key) or {"history": []})))
    queue_mode = {"Most uncertain first": "uncertain", "Settle this slide": "settle"}.get(mode, "slide")
    if (opened_cell := st.session_state.pop("review_open_cell", None)) is not None:
        cursor.show(opened_cell)

    def _advance(after_read: bool = False) -> None:
        if not cursor.forward():
            # At the head of the queue, → moves past the cell on screen (left unread, not skipped for good);
            # with no other cell left it stays. After a read the queue moves on even when it is empty.
            passed = [cursor.current] if cursor.current is not None else []
            with ui.store() as db:
                following = reads.next_cell(db, user, slide.id, queue_mode, [*(cursor.skipped or []), *passed])
            if following is not None or not passed or after_read:
                cursor.show(following)
        st.session_state["review_shown_at"] = time.monotonic()

    def _act(action, *args) -> None:
        """Run a review action for the focused cell, then move on; errors show on the page, saves are confirmed."""
        try:
            with ui.store() as db:
                saved = action(db, ui.current_user(), *args)
            st.session_state["review_last_cell"] = args[0]
            if saved is not None and getattr(saved, "code", None):
                tags = f" with {', '.join(saved.tags)}" if getattr(saved, "tags", None) else ""
                st.session_state["review_saved"] = f"Saved: read as {saved.code}{tags}."
        except MdsdysError as exc:
            st.session_state["review_error"] = str(exc)
            return
        if mode != "Gallery":
            _advance(after_read=True)

    def _seconds() -> float:
        return round(time.monotonic() - st.session_state.get("review_shown_at", time.monotonic()), 2)

    def _label(cell_id: int, code: str, scheme) -> None:
        chosen = st.session_state.get(f"review_tags_{cell_id}", [])
        if misfit := reads.misfit_tags(scheme, code, chosen):
            st.session_state["review_error"] = (f"Not saved: {', '.join(misfit)} does not belong to {code}'s "
                                                "lineage. Remove it, or choose a class of its lineage.")
            return
        _act(partial(reads.record_read, reading_slide_id=slide.id), cell_id, code, chosen, _seconds(), hide_model)

    def _undo() -> None:
        last = st.session_state.get("review_last_cell")
        if last is None:
            st.session_state["review_error"] = "Nothing to undo yet."
            return
        _act(partial(reads.undo_read, reading_slide_id=slide.id), last)
        st.session_state["review_saved"] = "Undone: your last read is withdrawn."
        cursor.show(last)


    if mode == "Gallery":
        with ui.store() as db:
            rows = views.my_gallery(db, user, slide.id,
                                    SIZE_ORDERS[st.session_state.get("review_gallery_order", "By class")])
        focus = st.session_state.get("review_gallery_focus", rows[0]["cell_id"] if rows else None)
    else:
        if cursor.current is None and cursor.position < len(cursor.history):
            _advance()
        focus = cursor.current
    for kept_key, kept_value in (("review_slide_id", slide.id), ("review_mode", mode),
                                  (cursor_key, dataclasses.asdict(cursor))):
        ui.remember(kept_key, kept_value)  # written only when it changed

    if focus is None:
        st.success("You have read every cell of this slide. Choose another slide, or go back with ← to change a read.")
        st.button("← Previous", key="review_prev_done", shortcut="Left", on_click=cursor.back)
        return

    try:
        with ui.store() as db:
            view = reads.load_cell_view(db, user, focus, show_proposal=not hide_model, reading_slide_id=slide.id)
    except MdsdysError as exc:
        ui.show_error(exc)
        return

    if error := st.session_state.pop("review_error", None):
        st.error(error)
    if saved := st.session_state.pop("review_saved", None):
        st.success(saved)

    with_cam = show_cam and not hide_model
    crop_col, *cam_col, context_col, info_col = st.columns(4 if with_cam else 3)
    crop_col.image(view.crop, width=240)  # Grad-CAM sits beside the crop, never in its place
    if with_cam:
        from mdsdys.review import explain  # Grad-CAM runs the classifier: torch loads only when a reader asks

        try:
            with ui.store() as db:
                cam = explain.cell_grad_cam(db, user, view.cell.id)
            cam_col[0].image(cam.image, width=240, caption=f"Grad-CAM for {cam.code}")
            if cam.outside_fraction is not None:
                (cam_col[0].warning if cam.unusual else cam_col[0].caption)(cam.note())
        except MdsdysError as exc:
            cam_col[0].caption(str(exc))
    crop_col.caption(f"Cell {view.label} · slide {view.slide}")
    context_col.image(view.context, caption="In its field", width=320)
    with ui.store() as db:
        place = cell_place(db, user, view.cell.id)
    if place.overview is not None:
        context_col.image(place.overview, caption="Where on the slide (blue: its field, red: the cell)", width=320)
    with info_col:
        st.caption(place.size_text())
        if view.proposal:
            st.write("**Model proposal**")
            for code, p in view.proposal.ranked[:3]:
                st.progress(p, text=f"{code} · {view.scheme.get(code).name}: {p:.0%}")
        elif hide_model:
            st.caption("Model proposal hidden for this session.")
        else:
            st.caption("No model proposal yet for this cell.")
        if view.my_read:
            st.info(f"Your read: **{reads.describe_read(view.my_read)}**")
        # Offer the features of the lineage the cell most likely belongs to (the reader's read, else the
        # model's class); a reader who sees another lineage widens the list.
        guess = view.my_read.code if view.my_read else (view.proposal.ranked[0][0] if view.proposal else None)
        lineage = view.scheme.get(guess).lineage if guess in view.scheme.codes else None
        every_lineage = st.toggle("Features of every lineage", key=f"review_all_tags_{focus}", value=lineage is None)
        features = reads.tag_options(view.scheme, None if every_lineage else lineage)
        st.multiselect(f"Dysplasia features ({'all lineages' if every_lineage else lineage})", features,
                       key=f"review_tags_{focus}")

    st.write("**Class** (press its key)")
    columns = st.columns(len(view.scheme.classes))
    for column, label_class in zip(columns, view.scheme.classes, strict=True):
        column.button(
            f"{label_class.code} · {label_class.name} [{label_class.hotkey}]", key=f"review_class_{label_class.code}",
            help=label_class.name, shortcut=label_class.hotkey.upper(), width="stretch",
            on_click=_label, args=(focus, label_class.code, view.scheme),
        )

    cant = st.columns([1, 2])
    cant[1].selectbox("Why it cannot be assessed", list(UNASSESSABLE_REASONS), format_func=UNASSESSABLE_REASONS.get,
                      key="review_cant_reason", label_visibility="collapsed")
    cant[0].button("Can't assess [X]", key="review_cant", shortcut="X", help="Debris, overlap, out of focus, broken "
                   "cell: the cell leaves the counts and the training sets.", on_click=lambda: _act(
                       lambda db, u, cid: reads.record_unassessable(db, u, cid, st.session_state["review_cant_reason"],
                                                                    _seconds(), hide_model, slide.id), focus))

    actions = st.columns(5)
    actions[0].button("Accept proposal [A]", key="review_accept", shortcut="A", disabled=view.proposal is None,
                      on_click=_act, args=(lambda db, u, cid: reads.accept_proposal(db, u, cid, _seconds(), slide.id),
                                           focus))
    actions[1].button("Skip [S]", key="review_skip", shortcut="S", disabled=mode == "Gallery",
                      on_click=lambda: (cursor.skip(), _advance()))
    actions[2].button("Undo [U]", key="review_undo", shortcut="U", on_click=_undo)
    actions[3].button("← Previous", key="review_prev", shortcut="Left", disabled=mode == "Gallery", on_click=cursor.back)
    actions[4].button("Next →", key="review_next", shortcut="Right", disabled=mode == "Gallery", on_click=_advance)

    if mode == "Gallery":
        st.divider()
        st.caption("Gallery: cells grouped by your read, else the model's class. Click one, then press a class key.")
        order = st.radio("Order", list(SIZE_ORDERS), horizontal=True, key="review_gallery_order")
        frame = pd.DataFrame(rows)
        if order != "By class":  # size criteria: unusually large granulocytes, micromegakaryocytes (issue 18)
            column = SIZE_ORDERS[order]
            label = "nucleus / cell diameter, largest first"
            groups = frame.groupby(frame[column].notna().map({True: label, False: "size unknown"}), sort=False)
        else:
            groups = frame.groupby(frame["my_read"].fillna(frame["proposed"]).fillna("not proposed"))
        limits = st.session_state.setdefault("review_gallery_limits", {})
        shown = {name: members["cell_id"].head(limits.get(name, 16)).tolist() for name, members in groups}
        with ui.store() as db:
            crops = reads.load_crops(db, user, [c for ids in shown.values() for c in ids])
            labels = reads.cell_labels(db, user, list(crops))
        sizes = {int(r["cell_id"]): f"{r['nucleus_um']:.1f} / {r['cell_um']:.1f} µm" for r in rows
                 if r.get("nucleus_um") is not None and r.get("cell_um") is not None}
        for name, members in groups:
            st.write(f"**{name}** ({len(shown[name])} of {len(members)} shown)")
            grid = st.columns(8)
            for i, cell_id in enumerate(shown[name]):
                with grid[i % 8]:
                    st.image(crops[cell_id], width=90)
                    if cell_id in sizes:
                        st.caption(sizes[cell_id])
                    st.button(f"#{labels[cell_id]}", key=f"review_pick_{cell_id}", type="primary" if cell_id == focus else "tertiary",
                              on_click=st.session_state.__setitem__, args=("review_gallery_focus", int(cell_id)))
            if len(members) > len(shown[name]):
                st.button(f"Show 16 more of {name}", key=f"review_more_{name}",
                          on_click=limits.__setitem__, args=(name, limits.get(name, 16) + 16))


if not hide_model:  # the model's standing on this slide goes with its proposals (issue 13)
    with ui.store() as db:
        ui.show_shift(shift.slide_shift(db, slide.id))
cell_panel(slide, mode, hide_model, show_cam)
