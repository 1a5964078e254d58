"""Train page: one click retrains the segmenter or classifier in the background, with live progress."""

import pandas as pd
import streamlit as st

from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.jobs import queue
from mdsdys.registry import promotion, retrain, view
from mdsdys.report import charts

ui.page_setup("Train")
st.title("Train models")
user = ui.require_login("train")


@st.fragment(run_every=2)
def live_progress() -> None:
    """The newest training job's state, curves and ETA, refreshed every 2 s from the store."""
    viewer = ui.recheck_login("train")  # a fragment rerun skips the page's login check: a logout or demotion stops it
    with ui.store() as db:
        recent = [j for j in views.jobs(db, viewer, limit=20) if j.kind.startswith("train_")]
    if not recent:
        st.caption("No training run yet.")
        return
    job = recent[0]
    progress = job.progress
    st.write(f"**Job {job.id}** · {job.kind.replace('_', ' ')} · **{job.state}**")
    if job.state in ("queued", "running"):
        epoch, epochs = progress.get("epoch", 0), progress.get("epochs") or 1
        eta = progress.get("eta_s")
        st.progress(epoch / epochs, text=f"epoch {epoch} of {epochs}"
                    + (f" · {progress.get('metric')}: {progress.get('value'):.3f}" if progress.get("value") else "")
                    + (f" · about {eta / 60:.1f} min left" if eta else "") + f" · {progress.get('stage', '')}")
        if st.button("Cancel this run", key=f"train_cancel_{job.id}"):
            try:
                with ui.store() as db:
                    queue.cancel(db, viewer, job.id)
            except MdsdysError as exc:
                ui.show_error(exc)
    elif job.state == "failed":
        st.error(job.error)
    elif job.state == "done":
        result = progress.get("result", {})
        if result.get("status") == "active":
            st.success(f"New version {result.get('version')} is active.")
        else:  # a candidate waits for the promotion gate: never a green box before it has passed
            st.info(f"New candidate {result.get('version')}: not active. Compare it below and promote it only if "
                    "the gate allows.")
    if progress.get("history"):
        st.plotly_chart(charts.training_curves(progress["history"], progress.get("metric", "")),
                        key=f"train_curves_{job.id}_{len(progress['history'])}")


live_progress()
segmenter_tab, classifier_tab, models_tab, jobs_tab = st.tabs(["Segmenter", "Classifier", "Models", "All jobs"])

with segmenter_tab:
    with ui.store() as db:
        preview = retrain.segmenter_preview(db)
    st.write(f"**{preview['masked_fields']}** fields with a nucleus mask (a first model needs "
             f"{preview['needed']}). Validation split: {preview['split']}.")
    if preview["masks_by_slide"]:
        st.dataframe(pd.DataFrame(preview["masks_by_slide"]), hide_index=True, key="train_seg_masks")
    with st.form("train_segmenter_form"):
        defaults = preview["settings"]
        with st.expander("Advanced settings"):
            epochs = st.number_input("Epochs", 1, 500, defaults["epochs"], key="seg_epochs")
            steps = st.number_input("Steps per epoch", 1, 1000, defaults["steps_per_epoch"], key="seg_steps")
            depth = st.number_input("U-Net depth", 2, 6, defaults["unet"]["depth"], key="seg_depth")
            width = st.number_input("U-Net width", 2, 64, defaults["unet"]["width"], key="seg_width")
        start = st.form_submit_button("Retrain segmenter", type="primary", disabled=not preview["enough"])
    if start:
        overrides = {"epochs": int(epochs), "steps_per_epoch": int(steps),
                     "unet": {"depth": int(depth), "width": int(width)}}
        try:
            job_id = retrain.queue_training(ui.settings(), user, "segmenter", overrides)
            st.success(f"Queued as job {job_id}; progress shows above. You can leave this page.")
        except MdsdysError as exc:
            ui.show_error(exc)

with classifier_tab:
    with ui.store() as db:
        schemes = views.scheme_names(db)
    scheme = st.selectbox("Label scheme", schemes, key="train_cls_scheme")
    with ui.store() as db:
        preview = retrain.classifier_preview(db, scheme)
    st.write(f"**{preview['cells']}** cells with a human label on {len(preview['slides'])} slide(s). "
             f"Split: {preview['split']}. Starts {preview['start']}. Model proposals are never used for retrain.")
    if preview["labels"]:
        st.dataframe(pd.DataFrame(preview["labels"]).fillna(0), hide_index=True, key="train_cls_labels")
    with st.form("train_classifier_form"):
        with st.expander("Advanced settings"):
            arch = st.selectbox("Architecture", retrain.classifier_archs(), key="cls_arch")
            cls_epochs = st.number_input("Epochs from scratch (at most; early stopping on validation macro-F1)", 1,
                                         300, retrain.classifier_defaults()["epochs"], key="cls_epochs")
            fine_tune = st.checkbox("Start from the active model's weights (fine-tune; untick to train from scratch)",
                                    value=retrain.classifier_defaults()["fine_tune"]["enabled"], key="cls_fine_tune")
        start_cls = st.form_submit_button("Retrain classifier", type="primary", disabled=preview["cells"] == 0)
    if start_cls:
        try:
            job_id = retrain.queue_training(ui.settings(), user, "classifier",
                                             {"arch": arch, "epochs": int(cls_epochs), "scheme": scheme,
                                             "fine_tune": {"enabled": bool(fine_tune)}})
            st.success(f"Queued as job {job_id}; progress shows above.")
        except MdsdysError as exc:
            ui.show_error(exc)

with models_tab:
    kind = st.radio("Kind", ["classifier", "segmenter"], horizontal=True, key="models_kind")
    with ui.store() as db:
        versions = views.model_versions(db, user, kind)
    if not versions:
        st.info(f"No {kind} has been trained yet.")
    else:
        st.dataframe(pd.DataFrame(view.version_rows(versions)), hide_index=True, key="models_table")
        st.caption("Each score carries the number of cells it rests on. Scores on different test cells, or on a few "
                   "dozen, are not comparable: see the caveat column.")
        chosen = st.multiselect("Compare versions side by side", [v.version for v in versions],
                                default=[v.version for v in versions[:2]], key="models_compare")
        compared = [v for v in versions if v.version in chosen]
        if compared:
            st.dataframe(pd.DataFrame(view.comparison_rows(compared)), hide_index=True,
                         key="models_comparison")
            columns = st.columns(len(compared))
            for column, version in zip(columns, compared):
                confusion = version.metrics.get("confusion")
                if confusion:
                    column.plotly_chart(charts.confusion_heatmap(confusion, version.metrics.get("codes", []),
                                                                 version.version), key=f"models_cm_{version.id}")
        with st.form("promote_form"):
            target = st.selectbox("Version", [v.version for v in versions], key="models_target")
            force = st.checkbox("Force (promote even if it scores lower than the active version)", key="models_force")
            promote, roll_back = st.columns(2)
            do_promote = promote.form_submit_button("Promote")
            do_rollback = roll_back.form_submit_button("Roll back to this version")
        if do_promote or do_rollback:
            record = next(v for v in versions if v.version == target)
            try:
                with ui.store() as db:
                    if do_promote:
                        gate = promotion.promote(db, ui.settings(), user, record.id, force)
                        # Forced past a refusing gate: active, but say plainly that it scored lower.
                        done = f"{target} is now active{'' if gate.allowed else ', forced past the gate'}. {gate.reason}"
                    else:
                        promotion.rollback(db, ui.settings(), user, record.id)
                        done = f"Rolled back: {target} is active again."
            except MdsdysError as exc:
                ui.show_error(exc)
            else:
                # Rerun so the Models table above shows the new active version (issue 14 item 5).
                st.session_state["models_message"] = done
                st.rerun()
        if message := st.session_state.pop("models_message", None):
            st.success(message)
            st.caption("Detection or proposals are being re-run in the background for cells nobody has read.")

with jobs_tab:
    with ui.store() as db:
        rows = [{"job": j.id, "kind": j.kind, "state": j.state, "queued": j.created_at, "finished": j.finished_at,
                 "error": j.error or ""} for j in views.jobs(db, user, limit=100)]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="train_jobs")
