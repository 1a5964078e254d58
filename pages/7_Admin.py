"""Admin page: accounts, roles and label schemes."""

import pandas as pd
import streamlit as st

from mdsdys import admin, auth, ui
from mdsdys.errors import MdsdysError
from mdsdys.schemes import parse_scheme_bytes
from mdsdys.store.slides import list_scheme_names
from mdsdys.store.users import ROLES, list_users

ui.page_setup("Admin")
st.title("Administration")
user = ui.require_login("admin")

with ui.store() as db:
    users = list_users(db)
    schemes = list_scheme_names(db)

st.subheader("Accounts")
st.dataframe(pd.DataFrame(users), hide_index=True, key="admin_users")

with st.form("create_user", clear_on_submit=True):
    st.write("**Add an account**")
    name = st.text_input("User name", key="new_username")
    password = st.text_input("Initial password", type="password", key="new_password")
    role = st.selectbox("Role", ROLES, key="new_role")
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
    new_role = st.selectbox("New role (leave as is to keep)", ["(keep)", *ROLES], key="change_role")
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
