"""Customer Health Intelligence — the entry point: routing and the sidebar, nothing else.

Run with `make run` (or `python -m streamlit run app.py`). Each page is a thin script in
app_pages/; the data and the scores come from ui.data (cached), the logic from health/.
"""

import streamlit as st

from ui.shell import sidebar, style

st.set_page_config(page_title="Customer Health", page_icon="🩺", layout="wide")

pages = [
    st.Page("app_pages/at_risk.py", title="At-risk accounts", icon=":material/priority_high:", url_path="at-risk", default=True),
    st.Page("app_pages/account.py", title="Account", icon=":material/person_search:", url_path="account"),
    st.Page("app_pages/segments.py", title="Segments", icon=":material/leaderboard:", url_path="segments"),
    st.Page("app_pages/actions.py", title="Actions & approvals", icon=":material/task_alt:", url_path="actions"),
    st.Page("app_pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page("app_pages/model.py", title="Health model", icon=":material/tune:", url_path="model"),
    st.Page("app_pages/sources.py", title="Sources & uploads", icon=":material/upload_file:", url_path="sources"),
]
page = st.navigation(pages)
style()
sidebar()
page.run()
