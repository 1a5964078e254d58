"""Dashboard page: the WHO numbers per slide, slide detail, model performance and exports."""

import json

import pandas as pd
import streamlit as st

from mdsdys.accounts import policy
from mdsdys.app import ui, views
from mdsdys import stats
from mdsdys.errors import MdsdysError
from mdsdys.report import charts, export
from mdsdys.report import numbers as dashboard
from mdsdys.report import provenance, shift
from mdsdys.review import counting
from mdsdys.review import reads as review

ui.page_setup("Dashboard")
st.title("Slide dashboard")
user = ui.require_login("report_view")

sources = dashboard.allowed_sources(user)
source = st.radio("Label source", sources, format_func=provenance.SOURCE_NAMES.get, horizontal=True,
                  key="dash_source")
if len(sources) == 1:
    st.caption("Readers see the model's numbers only: final labels include other readers' reads, "
               "which stay blind until consensus.")
compare = st.toggle("Show the difference from 'model only'", key="dash_compare") if source != "model" else False

try:
    with ui.store() as db:
        summaries = dashboard.dashboard(db, user, source)
        label_sources = provenance.label_sources(db)
        shifts = shift.slides_shift(db)  # each slide against the model that proposed its labels (issue 13)
        baseline = dashboard.dashboard(db, user, "model") if compare else None
except MdsdysError as exc:
    ui.show_error(exc)
    st.stop()
if not summaries:
    st.info("No slides yet. Import fields or labelled cells on the Import page (or run `mdsdys demo`).")
    st.stop()

groups = sorted({s.group or "(none)" for s in summaries})
filters = st.columns(2)
chosen_groups = filters[0].multiselect("Slide group", groups, default=groups, key="dash_groups")
review_state = filters[1].selectbox("Read by a person", dashboard.REVIEW_STATES, key="dash_review_state")
shown = dashboard.filter_summaries(summaries, chosen_groups, review_state, label_sources)
table = pd.DataFrame(dashboard.summary_table(shown, label_sources, source, shifts))
st.caption("human-read: read by at least one person; consensus: settled by an adjudicator; model-only: "
           f"{provenance.NOT_VERIFIED}. 'model share %' is the model's part of the numbers under this source. "
           "A 'call (one look)' reads the 95% interval once, over every cell counted so far; while you are still "
           "counting, decide when to stop with 'Counting to a decision' in the slide detail below.")
if baseline is not None:
    table = table.merge(pd.DataFrame(dashboard.difference_table(shown, baseline)), on="slide", how="left")
st.dataframe(table, hide_index=True, key="dash_table")
if not shown:
    st.stop()

st.subheader("Slide detail")
summary = st.selectbox("Slide", shown, format_func=lambda s: s.case_id, key="dash_slide")
with ui.store() as db:
    scheme = views.scheme(db, summary.scheme)
slide_sources = provenance.sources_of(label_sources, summary.slide_id)
title = provenance.source_title(source, slide_sources)
(st.warning if slide_sources.model_share(source) > 0 else st.success)(title)
st.caption(provenance.source_sentence(slide_sources))
ui.show_shift(shifts.get(summary.slide_id))
left, right = st.columns(2)
left.plotly_chart(charts.differential_bar([summary], scheme), key="dash_differential")
left.dataframe(pd.DataFrame(dashboard.differential_table(summary, scheme)), hide_index=True, key="dash_diff_table")
if summary.dysplasia:
    right.plotly_chart(charts.dysplasia_chart(summary), key="dash_dysplasia")
facts = f"{summary.nucleated} nucleated cells."
if summary.blasts and summary.blasts.n:
    facts += f" Blasts {100 * summary.blasts.value:.1f}% ({summary.blast_band})."
if summary.me_ratio is not None:
    facts += f" M:E {summary.me_ratio:.2f}."
st.write(facts)

st.markdown("**Counting to a decision**", help=counting.EXPLANATION)
with ui.store() as db:
    states = counting.slide_states(db, user, summary.slide_id)
st.caption("From the human labels (consensus, agreed and single reads)." if policy.can(user, "labels_view")
           else "From your own reads of this slide.")
st.dataframe(pd.DataFrame(counting.state_rows(states)), hide_index=True, key="dash_count_states")

with ui.store() as db:
    labels = dashboard.cell_labels(db, user, summary.slide_id, source)
    fields = views.slide_fields(db, summary.slide_id)
gallery_tab, fields_tab = st.tabs(["Cells by class", "Fields"])
with gallery_tab:
    by_class = dashboard.group_by_class(labels, scheme)
    with ui.store() as db:
        crops = review.load_crops(db, user, [c for ids in by_class.values() for c in ids[:12]])
    for code, ids in by_class.items():
        st.write(f"**{code}** · {scheme.get(code).name} ({len(ids)})")
        row = st.columns(12)
        for column, cell_id in zip(row, ids[:12]):
            column.image(crops[cell_id], width=64)
            column.page_link("pages/3_Review.py", label=f"#{cell_id}", query_params={"cell": cell_id})
with fields_tab:
    if not fields:
        st.caption("This slide has no smear fields (its cells were imported one by one).")
    if fields:
        st.markdown("Box colours: " + " ".join(
            f"<span style='border:3px solid {c.color};padding:0 4px'>{c.code} {c.name}</span>" for c in scheme.classes)
            + " <span style='border:3px solid #808080;padding:0 4px'>no label</span>", unsafe_allow_html=True)
    for field in fields[:6]:
        with ui.store() as db:
            st.image(dashboard.outlined_field(db, field["id"], labels, scheme), caption=field["name"], width=640)

if policy.can(user, "export"):
    st.subheader("Exports")
    st.caption("Each export is written to the audit log when you download it.")
    slide_id, case = summary.slide_id, summary.case_id

    def build(make):
        """A download callback that opens its own connection (it runs on a helper thread on click)."""
        def run():
            with ui.store() as db:
                return make(db)
        return run

    EXPORTS = {
        "report": ("Slide report (printable HTML)", "text/html", f"{case}-report.html",
                   lambda db: export.slide_report_html(db, user, slide_id, source).encode()),
        "csv": ("Cells with every read (CSV)", "text/csv", f"{case}-cells.csv",
                lambda db: export.cells_csv(db, user, slide_id)),
        "coco": ("Nucleus masks and cell boxes (COCO JSON)", "application/json", f"{case}-coco.json",
                 lambda db: json.dumps(export.coco_json(db, user, slide_id)).encode()),
        "crops": ("Crops, one folder per class (zip)", "application/zip", f"{case}-crops.zip",
                  lambda db: export.crops_zip(db, user, slide_id, source)),
    }
    for name, (label, mime, filename, make) in EXPORTS.items():
        st.download_button(f"Download {label}", build(make), file_name=filename, mime=mime,
                           key=f"dash_download_{name}")

if policy.can(user, "performance_view"):
    st.subheader("Model performance")
    st.caption("The active classifier scored as the paper reports it (Table 3, Fig. 1, Table 4), "
               "on its frozen test split or on every cell with a consensus label.")
    chosen = st.columns(2)
    perf_scheme = chosen[0].selectbox("Scheme", sorted({s.scheme for s in summaries}), key="perf_scheme")
    perf_set = chosen[1].radio("Cells", stats.EVALUATION_SETS, horizontal=True, key="perf_set",
                               format_func={"test": "frozen test split", "consensus": "consensus labels"}.get)
    perf_key = f"perf_{perf_scheme}_{perf_set}"
    if st.button("Score the active classifier", key="perf_run"):
        from mdsdys.classify import performance  # runs the classifier: torch loads only when asked for

        try:
            with ui.store() as db:
                st.session_state[perf_key] = performance.model_performance(db, user, perf_scheme, perf_set)
        except MdsdysError as exc:
            ui.show_error(exc)
    if perf := st.session_state.get(perf_key):
        report = perf["report"]
        ece = "n/a" if report["ece"] is None else f"{report['ece']:.3f}"
        st.write(f"**{perf['version']}** on {perf['n']} cells: macro-F1 {perf['macro_f1'].text()}, "
                 f"accuracy {perf['accuracy'].text()}, calibration error (ECE) {ece}. 95% intervals: Wilson for "
                 "proportions, a class-stratified bootstrap for AUC, F1, AP and macro-F1.")
        st.dataframe(pd.DataFrame(stats.table3_rows(perf["estimates"])), hide_index=True, key="perf_table3")
        st.caption(stats.paper_note(perf["estimates"]))
        with ui.store() as db:
            colors = {c.code: c.color for c in views.scheme(db, perf_scheme).classes}
        aucs = {code: m["auc"].text() for code, m in perf["estimates"].items()}
        left, right = st.columns(2)
        left.plotly_chart(charts.roc_figure(perf["roc"], aucs, colors), key="perf_roc")
        right.plotly_chart(charts.confusion_heatmap(report["confusion"], report["codes"], "Confusion"),
                           key="perf_confusion")
        st.plotly_chart(charts.reliability_figure(perf["reliability"]), key="perf_reliability")
