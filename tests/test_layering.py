"""The dependency direction of DESIGN.md: the engine and the adapters never import Streamlit.

`health/` is pure (Polars in, Polars out) and `sources/` talks to the outside; only the
composition roots (app.py, app_pages/, ui/) may import streamlit. Checked by parsing every
module's imports with `ast` (including imports inside functions), not by importing them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ("health", "sources")
COMMAND_LINE = {"health/cli.py", "health/__main__.py"}
"""The command line is the other composition root (DESIGN.md): it may wire sources in."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_never_import_streamlit(package):
    assert _modules(package), f"{package}/ has no modules?"
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m == "streamlit" or m.startswith("streamlit."))
        for p in _modules(package)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ must not import streamlit: {offenders}"


def test_health_never_imports_sources_or_the_ui():
    offenders = {
        str(p.relative_to(ROOT)): sorted(
            m for m in _imports(p) if m.split(".")[0] in ("sources", "ui", "app_pages", "app")
        )
        for p in _modules("health")
        if str(p.relative_to(ROOT)) not in COMMAND_LINE
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"health/ is the engine; it imports neither adapters nor the UI: {offenders}"


def test_the_checker_sees_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import streamlit as st\n    from streamlit import cache_data\n")
    assert {"streamlit"} <= _imports(f)
