"""The one small protocol every source adapter implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from health.loading import LoadResult


class SourceConfigError(ValueError):
    """A source is misconfigured; the message says, in one paragraph, what to fix."""


@runtime_checkable
class Source(Protocol):
    """Reads the canonical tables from somewhere and validates them.

    `name` is the name the source has in `config/sources.yaml`; `describe()` is a short
    human line for the sidebar ("Sample book, 600 accounts", "CSV folder /data/x").
    """

    name: str

    def load(self) -> LoadResult: ...

    def describe(self) -> str: ...


class SourceFactory(Protocol):
    def __call__(self, name: str, settings: dict[str, Any], *, base_dir: str) -> Source: ...
