"""Source adapters register by kind, like datasette's built-in plugins.

An adapter module calls `@register("kind")` on its factory. Heavy connector packages
(Snowflake, Databricks, ...) must be imported inside the factory or the adapter's
methods, never at module top, so the app still boots when one is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from sources.base import Source, SourceConfigError, SourceFactory

_FACTORIES: dict[str, SourceFactory] = {}

BUILTIN_MODULES: tuple[str, ...] = (
    "sources.sample", "sources.files", "sources.sql", "sources.snowflake", "sources.databricks",
)


def register(kind: str) -> Callable[[SourceFactory], SourceFactory]:
    def deco(factory: SourceFactory) -> SourceFactory:
        _FACTORIES[kind] = factory
        return factory

    return deco


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def kinds() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def build(name: str, settings: dict[str, Any], *, base_dir: str = ".") -> Source:
    """Build the source called `name` from its `sources.yaml` settings (must hold `kind`)."""
    _load_builtins()
    kind = settings.get("kind")
    if kind not in _FACTORIES:
        raise SourceConfigError(
            f"Source {name!r} in config/sources.yaml has kind {kind!r}, which is not a known "
            f"source kind. Set `kind:` to one of: {', '.join(sorted(_FACTORIES))}."
        )
    rest = {k: v for k, v in settings.items() if k != "kind"}
    return _FACTORIES[kind](name, rest, base_dir=base_dir)
