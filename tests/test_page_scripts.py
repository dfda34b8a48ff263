"""Page scripts are run by Streamlit with "magic" on: a bare string expression (other
than the module docstring) is printed on the page. Keep notes in comments."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "app_pages").glob("*.py")) + [ROOT / "app.py"]


def _bare_strings(body: list[ast.stmt], top: bool) -> list[int]:
    found = []
    for i, node in enumerate(body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if not (top and i == 0):
                found.append(node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for field in ("body", "orelse", "finalbody", "handlers"):
            sub = getattr(node, field, None)
            if isinstance(sub, list) and sub and isinstance(sub[0], ast.AST):
                found += _bare_strings([s for s in sub if isinstance(s, ast.stmt)], False)
    return found


def test_no_page_script_prints_a_stray_string():
    offenders = {
        str(p.relative_to(ROOT)): lines
        for p in SCRIPTS
        if (lines := _bare_strings(ast.parse(p.read_text(encoding="utf-8")).body, True))
    }
    assert not offenders, f"bare strings Streamlit would print: {offenders}"
