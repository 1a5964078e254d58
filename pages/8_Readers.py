"""Readers page: each reader's reads of gold cells against the settled class (adjudicators and admins)."""

import pandas as pd
import streamlit as st

from mdsdys.app import ui
from mdsdys.errors import MdsdysError
from mdsdys.report import charts
from mdsdys.review import gold

ui.page_setup("Readers")
st.title("Readers against gold cells")
user = ui.require_login("readers_view")
st.caption("Gold cells are cells settled by consensus that an adjudicator vouches for. The Review queue mixes them "
           "in, unmarked, from other slides; a reader's first answer is scored here and counts nowhere else.")


def _pct(value) -> str:
    return "not defined" if value is None else f"{100 * value:.0f}%"


try:
    with ui.store() as db:
        scores = gold.reader_scores(db, user)
        choices = gold.gold_choices(db, user)
        rate = gold.gold_rate(db)
except MdsdysError as exc:
    ui.show_error(exc)
    st.stop()

if not scores:
    st.info(f"No reader has answered a gold cell yet. Mark settled cells as gold below; about {rate:.0%} of "
            "each reader's queue is then gold cells from other slides.")
else:
    lineages = sorted({name for row in scores for name in row["per_lineage"]})
    table = [{"reader": row["reader"], "gold cells read": row["answers"], "accuracy": _pct(row["accuracy"]),
              "dysplastic vs normal": _pct(row["dysplastic_vs_normal"]),
              "kappa vs gold": "not defined" if row["kappa"] is None else f"{row['kappa']:.2f}",
              **{f"{name} accuracy": _pct(row["per_lineage"].get(name)) for name in lineages},
              "accuracy dropped": "yes: check this reader" if row["dropped"] else "no"} for row in scores]
    st.dataframe(pd.DataFrame(table), hide_index=True, key="readers_scores")
    for row in scores:
        st.markdown(f"**{row['reader']}**: {row['answers']} gold cells read, accuracy {_pct(row['accuracy'])}, "
                    f"dysplastic vs normal {_pct(row['dysplastic_vs_normal'])}")
    for row in scores:
        if row["dropped"]:
            st.warning(f"{row['reader']}: accuracy on the latest {gold.DRIFT_WINDOW} gold cells is below "
                       "their earlier accuracy (the 95% interval of the latest lies wholly under it).")
    st.plotly_chart(charts.drift_figure({row["reader"]: row["drift"] for row in scores}, gold.DRIFT_WINDOW),
                    key="readers_drift")

st.subheader("Gold cells")
labels = {c["cell"]: f"#{c['cell']} · {c['slide']} · {c['class']}" for c in choices}
current = [c["cell"] for c in choices if c["gold"]]
picked = st.multiselect("Cells settled by consensus that are gold", list(labels), default=current,
                        format_func=labels.get, key="readers_gold_pick")
if st.button("Save the gold set", key="readers_gold_save", disabled=set(picked) == set(current)):
    try:
        with ui.store() as db:
            for cell_id in set(picked) - set(current):
                gold.mark_gold(db, user, cell_id)
            for cell_id in set(current) - set(picked):
                gold.unmark_gold(db, user, cell_id)
        st.rerun()
    except MdsdysError as exc:
        ui.show_error(exc)
