"""Streamlit-side helpers: cached data access (`ui.data`), formatting (`ui.fmt`),
Plotly figures (`ui.charts`) and the app shell's sidebar (`ui.shell`).

Only `app.py`, `app_pages/` and this package import Streamlit; `health/` and `sources/` never do.
"""
