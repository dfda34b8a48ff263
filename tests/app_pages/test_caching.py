"""Scores are computed once per source x model: filters and account pages only read them."""

from __future__ import annotations

import ui.data
from tests.app_pages.conftest import app, grid, titles


def test_filters_and_accounts_never_rescore(monkeypatch):
    calls = {"history": 0, "summary": 0}
    real_history, real_summary = ui.data.score_history, ui.data.summarize

    def counting_history(*a, **k):
        calls["history"] += 1
        return real_history(*a, **k)

    def counting_summary(*a, **k):
        calls["summary"] += 1
        return real_summary(*a, **k)

    monkeypatch.setattr(ui.data, "score_history", counting_history)
    monkeypatch.setattr(ui.data, "summarize", counting_summary)
    ui.data.reload()
    try:
        at = app()
        at.run()
        assert calls == {"history": 1, "summary": 1}
        at.selectbox(key="segment").select("mid").run()
        at.multiselect(key="tier").select("Watch").run()
        at.text_input(key="q").input("a").run()
        first = grid(at).row(0, named=True)
        at.session_state["grid"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
        at.run()
        assert titles(at) == [first["name"]]
        at.switch_page("app_pages/segments.py").run()
        assert not at.exception
        assert calls == {"history": 1, "summary": 1}
    finally:
        ui.data.reload()  # later tests get caches built by the real functions
