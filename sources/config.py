"""`config/sources.yaml`: which sources exist and which one is active.

```yaml
active: sample                 # the source the app and the CLI use (CHI_SOURCE overrides)
sources:
  sample: {kind: sample, accounts: 600, seed: 7}
  my_export: {kind: files, path: exports/2026-11, tables: {...}}
```

Each source's settings (everything but `kind`) belong to its adapter, which validates
them. Every mistake comes back as a `SourceConfigError` naming the file and line.
Relative paths in the settings are read from the project root: the folder that holds
`config/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from health.contract import did_you_mean
from sources import registry
from sources.base import Source, SourceConfigError

ENV_VAR = "CHI_SOURCE"
DEFAULT_SOURCE = "sample"


class SourceEntry(BaseModel):
    """One source: its kind, plus adapter-specific settings (kept as extras)."""

    model_config = ConfigDict(extra="allow")

    kind: str

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, **(self.model_extra or {})}


class SourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: str = DEFAULT_SOURCE
    sources: dict[str, SourceEntry] = Field(default_factory=dict)
    expected_latency: dict[str, int | str | None] = Field(default_factory=dict)
    """Optional, per canonical table: how late its latest record may be before the feed
    counts as stale (`{usage: 2d, invoices: 35d}`); the other tables keep the defaults of
    `health.freshness.STALE_AFTER_DAYS`."""

    _path: Path | None = PrivateAttr(default=None)
    _doc: Any = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        return self._path

    def line_of(self, *loc: Any) -> int | None:
        """1-based line of the YAML node at `loc` (or of its nearest parent), if known."""
        return _line_of(self._doc, loc)


def _line_of(doc: Any, loc: tuple[Any, ...]) -> int | None:
    node, line = doc, None
    for key in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and key in node:
                if lc is not None:
                    line = lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if lc is not None:
                    line = lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, AttributeError, TypeError, IndexError):
            break
    if line is None and getattr(doc, "lc", None) is not None:
        line = doc.lc.line + 1
    return line


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _at(path: Path, line: int | None) -> str:
    return f"{path}, line {line}" if line else str(path)


def load_sources_config(path: Path) -> SourcesConfig:
    """Read and check `sources.yaml`. Raises SourceConfigError (file and line) on mistakes."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceConfigError(
            f"The sources file {path} does not exist. Create it (see config/sources.yaml in the "
            f"project for a commented example), or run without it to use the sample book."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceConfigError(f"The sources file {path} cannot be read ({exc}).") from None
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise SourceConfigError(
            f"{_at(path, line)}: this is not valid YAML ({exc.problem or exc.context}). Check the "
            f"indentation and the quoting around that line."
        ) from None
    except YAMLError as exc:
        raise SourceConfigError(f"{path}: this is not valid YAML ({exc}).") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SourceConfigError(
            f"{path}: the file must be a mapping with `active:` and `sources:` keys, not a "
            f"{type(doc).__name__}."
        )
    try:
        cfg = SourcesConfig.model_validate(_plain(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc)
        if first["type"] == "extra_forbidden":
            guess = did_you_mean(str(loc[-1]), ["active", "sources"])
            msg = f"unknown key {loc[-1]!r} (the top level has `active:` and `sources:`)" + (
                f"; did you mean {guess!r}?" if guess else ""
            )
        elif first["type"] == "missing" and loc[-1] == "kind":
            kinds = ", ".join(_known_kinds())
            msg = f"source {loc[1]!r} has no `kind:` (one of: {kinds})"
        else:
            msg = f"{where}: {first['msg']}"
        raise SourceConfigError(f"{_at(path, _line_of(doc, loc))}: {msg}. Fix it in {path.name}.") from None
    cfg._path = path
    cfg._doc = doc
    _check_latency(cfg, path, doc)
    if cfg.sources and cfg.active not in cfg.sources:
        guess = did_you_mean(cfg.active, list(cfg.sources))
        raise SourceConfigError(
            f"{_at(path, _line_of(doc, ('active',)))}: `active: {cfg.active}` names no source in "
            f"`sources:`" + (f" — did you mean {guess!r}?" if guess else "")
            + f" The sources are: {', '.join(cfg.sources)}."
        )
    return cfg


def _check_latency(cfg: SourcesConfig, path: Path, doc: Any) -> None:
    from health.freshness import parse_latency
    from health.schema import TABLES

    for table, value in cfg.expected_latency.items():
        line = _line_of(doc, ("expected_latency", table))
        if table not in TABLES:
            guess = did_you_mean(table, list(TABLES))
            raise SourceConfigError(
                f"{_at(path, line)}: `expected_latency` names {table!r}, which is not a canonical table"
                + (f" — did you mean {guess!r}?" if guess else "") + f" The tables are: {', '.join(TABLES)}."
            )
        try:
            parse_latency(value)
        except ValueError as exc:
            raise SourceConfigError(f"{_at(path, line)}: `expected_latency` for {table!r}: {exc}. Fix it in {path.name}.") from None


def expected_latency(path: Path) -> dict[str, int | None]:
    """The staleness threshold (days) per table: the defaults, with `expected_latency:` from
    the sources file applied. No file: the defaults. Raises SourceConfigError on mistakes."""
    from health.freshness import expected_latencies, parse_latency

    path = Path(path)
    if not path.exists():
        return expected_latencies()
    cfg = load_sources_config(path)
    return expected_latencies({t: parse_latency(v) for t, v in cfg.expected_latency.items()})


def _known_kinds() -> list[str]:
    try:
        return registry.kinds()
    except ImportError:  # a built-in adapter failed to import; name what we can
        return sorted(registry._FACTORIES)


def project_root(config_path: Path) -> Path:
    """The project root: the folder holding `config/` (the config file's parent's parent)."""
    return Path(config_path).resolve().parent.parent


def build_source(cfg: SourcesConfig, name: str, base_dir: Path) -> Source:
    """Build the named source, turning an adapter's SourceConfigError into one with the line."""
    path = cfg.path or Path("config/sources.yaml")
    entry = cfg.sources[name]
    kinds = _known_kinds()
    if entry.kind not in kinds:
        guess = did_you_mean(entry.kind, kinds)
        raise SourceConfigError(
            f"{_at(path, cfg.line_of('sources', name, 'kind'))}: source {name!r} has kind "
            f"{entry.kind!r}, which is not a known source kind"
            + (f" — did you mean {guess!r}?" if guess else "")
            + f" Set `kind:` to one of: {', '.join(kinds)}."
        )
    try:
        return registry.build(name, entry.settings(), base_dir=str(base_dir))
    except SourceConfigError as exc:
        loc = getattr(exc, "loc", ())
        line = cfg.line_of("sources", name, *loc)
        raise SourceConfigError(f"{_at(path, line)}: {exc}") from None


def build_active_source(path: Path, name: str | None = None) -> Source:
    """The source to use: `name` if given, else $CHI_SOURCE, else `active:` in the file.

    Without a config file the sample book is used (unless a name other than "sample" is
    asked for, which is an error).
    """
    path = Path(path)
    root = project_root(path)
    env = os.environ.get(ENV_VAR) or None
    chosen, origin = (name, "--source") if name else (env, f"${ENV_VAR}") if env else (None, "active:")
    if not path.exists():
        if chosen not in (None, DEFAULT_SOURCE):
            raise SourceConfigError(
                f"{origin} asks for the source {chosen!r}, but there is no sources file at {path}, "
                f"so only the built-in sample book is available. Create {path} with a {chosen!r} "
                f"entry under `sources:`, or unset {origin}."
            )
        return registry.build(DEFAULT_SOURCE, {"kind": "sample"}, base_dir=str(root))
    cfg = load_sources_config(path)
    if chosen is None:
        chosen = cfg.active
        if not cfg.sources and chosen == DEFAULT_SOURCE:
            return registry.build(DEFAULT_SOURCE, {"kind": "sample"}, base_dir=str(root))
    if chosen not in cfg.sources:
        guess = did_you_mean(chosen, list(cfg.sources))
        line = cfg.line_of("active") if origin == "active:" else None
        raise SourceConfigError(
            f"{_at(path, line)}: {origin} names the source {chosen!r}, which is not in `sources:`"
            + (f" — did you mean {guess!r}?" if guess else ".")
            + f" The sources are: {', '.join(cfg.sources) or 'none'}."
        )
    return build_source(cfg, chosen, root)
