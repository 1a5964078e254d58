"""Dashboard page: the WHO numbers per slide, slide detail, model performance and exports."""

import json

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys import stats
from mdsdys.errors import MdsdysError
from mdsdys.report import charts, export
from mdsdys.report import numbers as dashboard
from mdsdys.review import reads as review

ui.page_setup("Dashboard")
st.title("Slide dashboard")
user = ui.require_login()

SOURCE_LABELS = {"final": "Final labels (consensus > agreed > single read > model)",
                 "human": "Human labels only", "model": "Model only"}
sources = dashboard.allowed_sources(user)
source = st.radio("Label source", sources, format_func=SOURCE_LABELS.get, horizontal=True, key="dash_source")
if len(sources) == 1:
    st.caption("Readers see the model's numbers only: final labels include other readers' reads, "
               "which stay blind until consensus.")
compare = st.toggle("Show the difference from 'model only'", key="dash_compare") if source != "model" else False

try:
    with ui.store() as db:
        summaries = dashboard.dashboard(db, user, source)
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
review_state = filters[1].selectbox("Review state", ["all", "fully labelled", "partly labelled", "unlabelled"],
                                    key="dash_review_state")
shown = dashboard.filter_summaries(summaries, chosen_groups, review_state)
table = pd.DataFrame(dashboard.summary_table(shown))
if baseline is not None:
    table = table.merge(pd.DataFrame(dashboard.difference_table(shown, baseline)), on="slide", how="left")
st.dataframe(table, hide_index=True, key="dash_table")
if not shown:
    st.stop()

st.subheader("Slide detail")
summary = st.selectbox("Slide", shown, format_func=lambda s: s.case_id, key="dash_slide")
with ui.store() as db:
    scheme = views.scheme(db, summary.scheme)
left, right = st.columns(2)
left.plotly_chart(charts.differential_bar([summary], scheme), key="dash_differential")
if summary.dysplasia:
    right.plotly_chart(charts.dysplasia_chart(summary), key="dash_dysplasia")
facts = f"{summary.nucleated} nucleated cells, {summary.labelled} labelled."
if summary.blasts and summary.blasts.n:
    facts += f" Blasts {100 * summary.blasts.value:.1f}% ({summary.blast_band})."
if summary.me_ratio is not None:
    facts += f" M:E {summary.me_ratio:.2f}."
st.write(facts)

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
    for field in fields[:6]:
        with ui.store() as db:
            st.image(dashboard.outlined_field(db, field["id"], labels, scheme), caption=field["name"], width=640)

if user.role in ("adjudicator", "admin"):
    st.subheader("Exports")
    st.caption("Each export is written to the audit log. Prepare one, then download it.")
    EXPORTS = {
        "report": ("Slide report (printable HTML)", "text/html", f"{summary.case_id}-report.html",
                   lambda db: export.slide_report_html(db, user, summary.slide_id, source).encode()),
        "csv": ("Cells with every read (CSV)", "text/csv", f"{summary.case_id}-cells.csv",
                lambda db: export.cells_csv(db, user, summary.slide_id)),
        "coco": ("Nucleus masks and cell boxes (COCO JSON)", "application/json", f"{summary.case_id}-coco.json",
                 lambda db: json.dumps(export.coco_json(db, user, summary.slide_id)).encode()),
        "crops": ("Crops, one folder per class (zip)", "application/zip", f"{summary.case_id}-crops.zip",
                  lambda db: export.crops_zip(db, user, summary.slide_id, source)),
    }
    columns = st.columns(len(EXPORTS))
    for column, (name, (label, mime, filename, build)) in zip(columns, EXPORTS.items()):
        ready_key = f"dash_export_{name}_{summary.slide_id}_{source}"
        if column.button(f"Prepare: {label}", key=f"dash_prepare_{name}"):
            try:
                with ui.store() as db:
                    st.session_state[ready_key] = build(db)
            except MdsdysError as exc:
                ui.show_error(exc)
        if ready_key in st.session_state:
            column.download_button(f"Download {filename}", st.session_state[ready_key], file_name=filename,
                                   mime=mime, key=f"dash_download_{name}")

if user.role in ("adjudicator", "admin"):
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
        st.write(f"**{perf['version']}** on {perf['n']} cells: macro-F1 {report['macro_f1']:.3f}, "
                 f"accuracy {report['accuracy']:.3f}, calibration error (ECE) {report['ece']:.3f}.")
        st.dataframe(pd.DataFrame(stats.table3_rows(report)), hide_index=True, key="perf_table3")
        with ui.store() as db:
            colors = {c.code: c.color for c in views.scheme(db, perf_scheme).classes}
        aucs = {code: m.get("auc") for code, m in report["per_class"].items()}
        left, right = st.columns(2)
        left.plotly_chart(charts.roc_figure(perf["roc"], aucs, colors), key="perf_roc")
        right.plotly_chart(charts.confusion_heatmap(report["confusion"], report["codes"], "Confusion"),
                           key="perf_confusion")
        st.plotly_chart(charts.reliability_figure(perf["reliability"]), key="perf_reliability")
