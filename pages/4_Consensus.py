"""Consensus page: settle the cells on which two readers disagree, from the keyboard."""

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.report import charts
from mdsdys.review import agreement, consensus, explain
from mdsdys.review import reads as review

ui.page_setup("Consensus")
st.title("Consensus")
user = ui.require_login()

def agreement_view(user, slide) -> None:
    """Kappa with raw agreement, the reader x reader confusion, readers vs consensus, model vs final labels."""
    with ui.store() as db:
        readers = views.readers(db, user)
    if len(readers) < 2:
        st.info("Agreement needs two readers who have both read cells.")
        return
    names = dict(readers)
    pick = st.columns(3)
    reader_a = pick[0].selectbox("Reader A", list(names), format_func=names.get, key="agree_a")
    reader_b = pick[1].selectbox("Reader B", list(names), index=1, format_func=names.get, key="agree_b")
    scheme = pick[2].selectbox("Scheme", sorted({s.scheme_name for s in slides}), key="agree_scheme")
    slide_id = slide.id if slide else None
    try:
        with ui.store() as db:
            result = agreement.reader_agreement(db, user, reader_a, reader_b, scheme, slide_id)
            versus = {names[r]: agreement.against_consensus(db, user, r, slide_id) for r in (reader_a, reader_b)}
            model = agreement.model_against_final(db, user, scheme, slide_id)
            decisions = agreement.decision_agreement(db, user, reader_a, reader_b)
    except MdsdysError as exc:
        ui.show_error(exc)
        return
    overall = result["overall"]
    metrics = st.columns(3)
    metrics[0].metric("Cohen's kappa", "n/a" if overall["kappa"] is None else f"{overall['kappa']:.2f}")
    metrics[1].metric("Raw agreement", "n/a" if overall["agreement"] is None else f"{overall['agreement']:.0%}")
    metrics[2].metric("Cells both read", overall["n"])
    rows = [{"group": f"lineage: {k}", **v} for k, v in result["per_lineage"].items()]
    rows += [{"group": f"class: {k} vs rest", **v} for k, v in result["per_class"].items()]
    rows += [{"group": f"{name} vs consensus", **v} for name, v in versus.items()]
    rows += [{"group": "model vs final labels (CellaVision: kappa 0.52)", **{k: model[k] for k in ("kappa", "agreement", "n")}}]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="agree_table")
    st.plotly_chart(charts.confusion_heatmap(result["confusion"], result["codes"],
                                             f"{names[reader_a]} (rows) x {names[reader_b]} (columns)"),
                    key="agree_confusion")
    st.write("**Decision-level agreement per slide** (each reader's own reads)")
    st.dataframe(pd.DataFrame(decisions), hide_index=True, key="agree_decisions")


QUEUE_LABELS = {
    "disagree_class": "Readers disagree on the class",
    "disagree_dysplastic": "Readers disagree on dysplastic yes/no",
    "agree_not_model": "Readers agree, but not with the model",
}
with ui.store() as db:
    if not consensus.may_settle(db, user):
        st.error(f"{user.username} is a reader; consensus is for adjudicators (an admin can open it to readers).")
        st.stop()
    slides = views.slides(db)

with st.sidebar:
    view_mode = st.radio("View", ["Settle disagreements", "Agreement statistics"], key="consensus_view")
    slide = st.selectbox("Slide", [None, *slides], format_func=lambda s: "All slides" if s is None else s.case_id,
                         key="consensus_slide")
    queue = st.radio("Queue", list(QUEUE_LABELS), format_func=QUEUE_LABELS.get, key="consensus_queue")

if view_mode == "Agreement statistics":
    agreement_view(user, slide)
    st.stop()

if message := st.session_state.pop("consensus_message", None):
    st.success(message)
if error := st.session_state.pop("consensus_error", None):
    st.error(error)
skipped = st.session_state.setdefault("consensus_skipped", [])
with ui.store() as db:
    items = consensus.consensus_queue(db, user, queue, slide.id if slide else None)
waiting = [item for item in items if item.cell_id not in skipped]
st.caption(f"{len(items)} cells in this queue" + (f", {len(items) - len(waiting)} skipped" if skipped else ""))
if not waiting:
    st.success("Nothing to settle in this queue. Cells arrive here once two readers have read them and differ.")
    if skipped:
        st.button("Show skipped cells again", key="consensus_unskip", on_click=skipped.clear)
    st.stop()

item = waiting[0]
try:
    with ui.store() as db:
        view = review.load_cell_view(db, user, item.cell_id)
        reads = consensus.unblinded_reads(db, user, item.cell_id)
except MdsdysError as exc:
    ui.show_error(exc)
    st.stop()


crop_col, context_col, info_col = st.columns(3)
crop_col.image(view.crop, width=240)
try:
    with ui.store() as db:
        cam = explain.cell_grad_cam(db, user, item.cell_id)
    crop_col.image(cam.image, width=240, caption=f"Grad-CAM for {cam.code}" + (
        f": {cam.outside_fraction:.0%} outside the nucleus" if cam.outside_fraction is not None else ""))
except MdsdysError as exc:
    crop_col.caption(str(exc))
crop_col.caption(f"Cell {view.cell.id} · slide {view.slide}")
context_col.image(view.context, width=320)
with info_col:
    for read in reads:
        st.write(f"**{read.reader}**: {read.code} ({view.scheme.get(read.code).name})"
                 + (f" · {', '.join(read.tags)}" if read.tags else ""))
    if view.proposal:
        st.write("**Model**")
        for code, p in view.proposal.ranked[:3]:
            st.progress(p, text=f"{code}: {p:.0%}")

reason = st.radio("Reason", list(consensus.REASON_CODES), format_func=consensus.REASON_CODES.get,
                  index=2, horizontal=True, key="consensus_reason")
reason_text = st.text_input("Why (needed for 'other')", key="consensus_reason_text")
features = sorted({f for c in view.scheme.classes for f in view.scheme.features_for(c.code)})
tags = st.multiselect("Dysplasia features", features, key=f"consensus_tags_{item.cell_id}")


def _decide(code: str) -> None:
    try:
        with ui.store() as db:
            consensus.decide(db, user, item.cell_id, code, review.tags_for_code(view.scheme, code, tags),
                             reason, reason_text)
        st.session_state["consensus_message"] = f"Cell {item.cell_id} settled as {code}."
    except MdsdysError as exc:
        st.session_state["consensus_error"] = f"Not saved: {exc}"


st.write("**Final class** (press its key)")
columns = st.columns(len(view.scheme.classes))
for column, label_class in zip(columns, view.scheme.classes, strict=True):
    column.button(f"{label_class.code} [{label_class.hotkey}]", key=f"consensus_class_{label_class.code}",
                  help=label_class.name, shortcut=label_class.hotkey.upper(), width="stretch",
                  on_click=_decide, args=(label_class.code,))
st.button("Skip [S]", key="consensus_skip", shortcut="S", on_click=skipped.append, args=(item.cell_id,))
