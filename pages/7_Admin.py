"""Admin page: accounts, roles and label schemes."""

import pandas as pd
import streamlit as st

from mdsdys.accounts import admin, auth
from mdsdys.app import ui, views
from mdsdys.errors import MdsdysError
from mdsdys.review import consensus
from mdsdys.schemes import parse_scheme_bytes

ui.page_setup("Admin")
st.title("Administration")
user = ui.require_login("admin")

with ui.store() as db:
    users = views.accounts(db, user)
    schemes = views.scheme_names(db)

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
            st.success(f"Added {role} {name}.")
        except MdsdysError as exc:
            ui.show_error(exc)

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
            st.success(f"Updated {target}.")
        except MdsdysError as exc:
            ui.show_error(exc)

st.subheader("Label schemes")
st.write(", ".join(schemes) or "none yet")
upload = st.file_uploader("Load a scheme file (.json or .toml; see the README)", type=["json", "toml"],
                          key="scheme_upload")
if upload is not None and st.button("Load scheme", key="scheme_load"):
    try:
        with ui.store() as db:
            admin.load_scheme(db, user, parse_scheme_bytes(upload.getvalue(), upload.name))
        st.success("Scheme loaded.")
    except MdsdysError as exc:
        ui.show_error(exc)

st.subheader("Who may settle disagreements")
with ui.store() as db:
    readers_may = consensus.readers_may_settle(db)
allow = st.toggle("Readers may use the Consensus page for cells they have read", value=readers_may,
                  key="admin_readers_settle")
if allow != readers_may:
    with ui.store() as db:
        consensus.set_readers_may_settle(db, user, allow)
    st.rerun()

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
