"""Admin page: accounts, roles and label schemes."""

import pandas as pd
import streamlit as st

from mdsdys.accounts import admin, auth
from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.review import consensus, counting, gold
from mdsdys.schemes import parse_scheme_bytes

ui.page_setup("Admin")
st.title("Administration")
user = ui.require_login("user_manage")

with ui.store() as db:
    users = views.accounts(db, user)
    schemes = views.scheme_names(db)


def _done(message: str) -> None:
    """Show the change on the next run, after the tables above have been re-read (issue 14 item 5)."""
    st.session_state["admin_message"] = message
    st.rerun()


if message := st.session_state.pop("admin_message", None):
    st.success(message)

st.subheader("Accounts")
st.dataframe(pd.DataFrame(users), hide_index=True, key="admin_users")

with st.form("create_user", clear_on_submit=True):
    st.write("**Add an account**")
    name = st.text_input("User name", key="new_username")
    password = st.text_input("Initial password", type="password", key="new_password")
    role = st.selectbox("Role", views.ROLES, key="new_role")
    if st.form_submit_button("Add account"):
        try:
            with ui.store() as db:
                auth.create_user(db, name.strip(), password, role, by=user)
        except MdsdysError as exc:
            ui.show_error(exc)
        else:
            _done(f"Added {role} {name}.")

with st.form("change_user"):
    st.write("**Change an account**")
    names = {u["username"]: u["id"] for u in users}
    target = st.selectbox("Account", list(names), key="change_target")
    new_role = st.selectbox("New role (leave as is to keep)", ["(keep)", *views.ROLES], key="change_role")
    new_password = st.text_input("New password (blank to keep)", type="password", key="change_password")
    active = st.checkbox("Account active", value=True, key="change_active")
    if st.form_submit_button("Apply") and target:
        try:
            with ui.store() as db:
                admin.change_account(db, user, names[target], None if new_role == "(keep)" else new_role,
                                     new_password or None, active)
        except MdsdysError as exc:
            ui.show_error(exc)
        else:
            _done(f"Updated {target}.")

st.subheader("Label schemes")
st.write(", ".join(schemes) or "none yet")
upload = st.file_uploader("Load a scheme file (.json or .toml; see the README)", type=["json", "toml"],
                          key="scheme_upload")
if upload is not None and st.button("Load scheme", key="scheme_load"):
    try:
        with ui.store() as db:
            admin.load_scheme(db, user, parse_scheme_bytes(upload.getvalue(), upload.name))
    except MdsdysError as exc:
        ui.show_error(exc)
    else:
        _done("Scheme loaded.")

st.subheader("Who may settle disagreements")
with ui.store() as db:
    readers_may = consensus.readers_may_settle(db)
allow = st.toggle("Readers may use the Consensus page for cells they have read", value=readers_may,
                  key="admin_readers_settle")
if allow != readers_may:
    with ui.store() as db:
        consensus.set_readers_may_settle(db, user, allow)
    st.rerun()

st.subheader("Minimum counts before a call")
st.caption("The counting rule never settles a lineage or the blast band before these counts (WHO practice: "
           "200 erythroid, 200 granulocytic, 30 megakaryocytes, a 500-cell differential).")
with ui.store() as db:
    floors = counting.current_floors(db)
floor_columns = st.columns(len(floors))
for column, (name, cells) in zip(floor_columns, floors.items()):
    chosen = column.number_input(name, min_value=0, max_value=100_000, value=cells, step=10, key=f"admin_floor_{name}")
    if chosen != cells:
        try:
            with ui.store() as db:
                admin.set_count_floor(db, user, name, int(chosen))
        except MdsdysError as exc:
            ui.show_error(exc)

st.subheader("Blind reads per cell")
with ui.store() as db:
    per_cell = counting.current_reads_per_cell(db)
chosen_reads = st.number_input("A cell leaves the Review queues once this many readers have read it (0 = every "
                               "reader reads every cell; 3 or more gives Fleiss' kappa)", min_value=0, max_value=50,
                               value=per_cell, key="admin_reads_per_cell")
if chosen_reads != per_cell:
    try:
        with ui.store() as db:
            admin.set_reads_per_cell(db, user, int(chosen_reads))
    except MdsdysError as exc:
        ui.show_error(exc)

st.subheader("Gold cells in the queues")
with ui.store() as db:
    rate_now = gold.gold_rate(db)
chosen_rate = st.number_input("Share of each reader's queue that is gold cells from other slides (0 = off)",
                              min_value=0.0, max_value=0.5, value=rate_now, step=0.01, key="admin_gold_rate")
if abs(chosen_rate - rate_now) > 1e-9:
    try:
        with ui.store() as db:
            gold.set_gold_rate(db, user, float(chosen_rate))
    except MdsdysError as exc:
        ui.show_error(exc)

st.subheader("Audit log")
with ui.store() as db:
    actions = views.audit_action_names(db, user)
filters = st.columns(3)
action = filters[0].selectbox("Action", ["(all)", *actions], key="audit_action")
who = filters[1].text_input("User name", key="audit_user")
since = filters[2].date_input("Since", value=None, key="audit_since")
with ui.store() as db:
    rows = admin.audit_rows(db, user, None if action == "(all)" else action, who.strip() or None,
                            since.isoformat() if since else None)
st.dataframe(pd.DataFrame(rows, columns=admin.AUDIT_COLUMNS), hide_index=True, key="audit_table")


def _log_audit_export() -> None:
    with ui.store() as db:
        admin.record_export(db, user, "audit_csv", {"rows": len(rows), "action": action, "user": who})


st.download_button("Download as CSV", admin.audit_csv(rows), file_name="mdsdys-audit.csv", mime="text/csv",
                   key="audit_download", on_click=_log_audit_export)
