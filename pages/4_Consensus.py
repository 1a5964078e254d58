"""Consensus page: settle the cells on which two readers disagree, from the keyboard."""

import pandas as pd
import streamlit as st

from mdsdys import stats
from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.schemes import UNASSESSABLE, UNASSESSABLE_REASONS
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
    metrics = st.columns(4)
    metrics[0].metric("Cohen's kappa (95% CI)", overall["kappa (95% CI)"])
    metrics[1].metric("Gwet's AC1", _defined(overall["ac1"]),
                      help="Chance-corrected like kappa, but it does not collapse when a class is rare.")
    metrics[2].metric("Raw agreement (95% CI)", overall["agreement (95% CI)"])
    metrics[3].metric("Cells both read", overall["n"])
    shown = ("n", "kappa (95% CI)", "ac1", "agreement (95% CI)")
    rows = [{"group": f"lineage: {k}", **{c: v.get(c) for c in shown}} for k, v in result["per_lineage"].items()]
    rows += [{"group": f"class: {k} vs rest", **{c: v.get(c) for c in shown}} for k, v in result["per_class"].items()]
    rows += [{"group": f"{name} vs consensus", **{c: v.get(c) for c in shown}} for name, v in versus.items()]
    rows += [{"group": "model vs human labels (CellaVision: kappa 0.52)", **{c: model.get(c) for c in shown}}]
    for row in rows:
        row["ac1"] = _defined(row.get("ac1"))
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="agree_table")
    st.caption(f"Kappa intervals are bootstrap, agreement intervals Wilson; below {stats.MIN_CELLS_TO_ESTIMATE} "
               "cells no number is shown.")
    st.plotly_chart(charts.confusion_heatmap(result["confusion"], result["codes"],
                                             f"{names[reader_a]} (rows) x {names[reader_b]} (columns)"),
                    key="agree_confusion")
    st.write("**Decision-level agreement per slide** (each reader's own reads)")
    st.dataframe(pd.DataFrame(decisions), hide_index=True, key="agree_decisions")
    panel_and_slide_agreement(user, scheme, slide_id, [reader_a, reader_b], names)


def _defined(value) -> str:
    """A statistic for display: 'not defined' where it has no value (one class, no cells)."""
    return "not defined" if value is None else f"{value:.2f}"


def panel_and_slide_agreement(user, scheme: str, slide_id, pair: list[int], names: dict) -> None:
    """Fleiss' kappa for cells with three or more readers; ICC and Bland-Altman of the readers' dysplasia %."""
    with ui.store() as db:
        panel = agreement.panel_agreement(db, user, scheme, slide_id)
        per_lineage = agreement.slide_percent_agreement(db, user, pair, scheme)
    st.write("**All readers of each cell**")
    cols = st.columns(3)
    cols[0].metric("Fleiss' kappa (3+ readers)", _defined(panel["fleiss_kappa"]),
                   help=f"{panel['cells_read_by_three']} cells read by three or more readers.")
    cols[1].metric("AC1 (3+ readers)", _defined(panel["ac1_panel"]))
    cols[2].metric("AC1 (every cell read twice)", _defined(panel["ac1_all"]),
                   help=f"{panel['cells_read_twice']} cells read by two or more readers.")
    st.write(f"**Slide-level dysplasia %: {names[pair[0]]} and {names[pair[1]]}** "
             "(ICC(A,1), absolute agreement of one reader's % with another's, across slides)")
    st.dataframe(pd.DataFrame([{"lineage": lineage, "slides both read": v["slides"], "ICC(A,1)": _defined(v["icc"]),
                                "bias (pts)": _defined((v.get("bland_altman") or {}).get("bias")),
                                "95% limits (pts)": "not defined" if not v.get("bland_altman") else
                                f"{v['bland_altman']['low']:.1f} to {v['bland_altman']['high']:.1f}"}
                               for lineage, v in per_lineage.items()]), hide_index=True, key="agree_icc")
    for lineage, v in per_lineage.items():
        if v.get("bland_altman"):
            st.plotly_chart(charts.bland_altman_figure(v["points"], v["bland_altman"],
                                                       [names[pair[0]], names[pair[1]]], lineage),
                            key=f"agree_bland_altman_{lineage}")


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
        seen_version = consensus.decision_version(db, item.cell_id)
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
crop_col.caption(f"Cell {view.label} · slide {view.slide}")
context_col.image(view.context, width=320)
with info_col:
    for read in reads:
        named = "can't assess" if read.code == UNASSESSABLE else view.scheme.get(read.code).name
        st.write(f"**{read.reader}**: {read.code} ({named})" + (f" · {', '.join(read.tags)}" if read.tags else ""))
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
    cant_reason = st.session_state["consensus_cant_reason"]
    chosen = [cant_reason] if code == UNASSESSABLE else review.tags_for_code(view.scheme, code, tags)
    try:
        with ui.store() as db:
            consensus.decide(db, user, item.cell_id, code, chosen, reason, reason_text, seen_version=seen_version)
        st.session_state["consensus_message"] = f"Cell {view.label} settled as {code}."
    except MdsdysError as exc:
        st.session_state["consensus_error"] = f"Not saved: {exc}"


st.write("**Final class** (press its key)")
columns = st.columns(len(view.scheme.classes))
for column, label_class in zip(columns, view.scheme.classes, strict=True):
    column.button(f"{label_class.code} [{label_class.hotkey}]", key=f"consensus_class_{label_class.code}",
                  help=label_class.name, shortcut=label_class.hotkey.upper(), width="stretch",
                  on_click=_decide, args=(label_class.code,))
cant = st.columns([1, 2])
cant[1].selectbox("Why it cannot be assessed", list(UNASSESSABLE_REASONS), format_func=UNASSESSABLE_REASONS.get,
                  key="consensus_cant_reason")
cant[0].button("Can't assess [X]", key="consensus_cant", shortcut="X", on_click=_decide, args=(UNASSESSABLE,))
st.button("Skip [S]", key="consensus_skip", shortcut="S", on_click=skipped.append, args=(item.cell_id,))
