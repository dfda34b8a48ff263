"""Shared machinery for the small YAML config files (playbooks, roles, crm): read the
file, validate it section by section with pydantic, and report **every** problem at once
with file, line and a "did you mean" — the same way `health.model_loader` reports
`weights.yaml` (and with the same `ModelIssue` type, so the CLI and the app print them
alike)."""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError


__all__ = ["ModelIssue", "did_you_mean", "ConfigError", "Collector", "read_text", "parse_yaml", "ModelIssue", "did_you_mean"]


@dataclass(frozen=True)
class ModelIssue:
    file: str
    line: int | None
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        sev = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {sev}{self.path}: {self.message}" if self.path else f"{where}: {sev}{self.message}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


class _Locator:
    """Maps a path of keys / indices in the YAML document to a 1-based line number."""

    def __init__(self, doc: Any):
        self.doc = doc

    def line(self, path: tuple[Any, ...]) -> int | None:
        node = self.doc
        line: int | None = None
        for part in path:
            lc = getattr(node, "lc", None)
            if lc is None:
                break
            try:
                if isinstance(node, dict) and part in node:
                    line = lc.key(part)[0] + 1
                    node = node[part]
                elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                    line = lc.item(part)[0] + 1
                    node = node[part]
                else:
                    break
            except (KeyError, IndexError, TypeError):
                break
        if line is None and hasattr(self.doc, "lc"):
            return None
        return line


def _fmt_path(path: tuple[Any, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node



class ConfigError(ValueError):
    """A config file has errors; `issues` lists every one of them."""

    def __init__(self, issues: list[ModelIssue], what: str = "the config file"):
        self.issues = issues
        self.what = what
        errors = [i for i in issues if i.severity == "error"]
        super().__init__(f"{len(errors)} problem(s) in {what}:\n" + "\n".join(str(i) for i in errors))


def read_text(path: str | Path, what: str) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ModelIssue(str(path), None, "", "file not found")], what) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ModelIssue(str(path), None, "", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")], what
        ) from None
    except OSError as exc:
        raise ConfigError([ModelIssue(str(path), None, "", f"cannot read the file: {exc.strerror}")], what) from None


def parse_yaml(text: str, file: str, what: str) -> tuple[Any, "Collector"]:
    """The round-trip document (keeps line numbers) and a collector for its issues."""
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ModelIssue(file, line, "", f"not valid YAML: {exc.problem or exc}")], what) from None
    except YAMLError as exc:
        raise ConfigError([ModelIssue(file, None, "", f"not valid YAML: {exc}")], what) from None
    return doc, Collector(file, _Locator(doc), what)


def plain(doc: Any) -> Any:
    return _plain(doc)


def _unwrap(ann: Any) -> tuple[Any, int]:
    """(the model-ish type inside `ann`, how many loc parts the containers consume)."""
    skip = 0
    while True:
        origin = get_origin(ann)
        if origin is typing.Annotated:
            ann = get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(ann) if a is not type(None)]
            pick = next((a for a in args if _is_container_or_model(a)), args[0] if args else ann)
            if pick is ann:
                return ann, skip
            ann = pick
        elif origin is dict:
            ann = get_args(ann)[1]
            skip += 1
        elif origin in (list, tuple):
            ann = get_args(ann)[0]
            skip += 1
        else:
            return ann, skip


def _is_container_or_model(a: Any) -> bool:
    return get_origin(a) in (dict, list, tuple) or (isinstance(a, type) and issubclass(a, BaseModel))


def model_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the keys at `loc` (for did-you-mean on keys)."""
    current: Any = cls
    i = 0
    while i < len(loc):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        part = loc[i]
        if part not in current.model_fields:
            return None
        ann, skip = _unwrap(current.model_fields[part].annotation)
        i += 1 + skip
        current = ann
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


class Collector:
    def __init__(self, file: str, locator: _Locator, what: str):
        self.file = file
        self.locator = locator
        self.what = what
        self.issues: list[ModelIssue] = []

    def add(self, path: tuple[Any, ...], message: str, severity: str = "error") -> None:
        self.issues.append(ModelIssue(self.file, self.locator.line(path), _fmt_path(path), message, severity))

    @property
    def errors(self) -> list[ModelIssue]:
        return [i for i in self.issues if i.severity == "error"]

    def raise_if_errors(self) -> None:
        self.issues.sort(key=lambda i: i.line or 0)
        if self.errors:
            raise ConfigError(self.issues, self.what)

    def pydantic(self, base: tuple[Any, ...], exc: ValidationError, cls: type[BaseModel]) -> None:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            path = base + loc
            kind = err["type"]
            if kind == "extra_forbidden":
                owner = model_at(cls, loc[:-1])
                allowed = sorted(owner.model_fields) if owner else []
                msg = f"unknown key '{loc[-1]}'{did_you_mean(loc[-1], allowed)}"
                if allowed:
                    msg += f" (allowed: {', '.join(allowed)})"
            elif kind == "missing":
                msg = f"required key '{loc[-1]}' is missing"
            elif kind in ("literal_error", "enum"):
                expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
                msg = f"'{err.get('input')}' is not allowed{did_you_mean(err.get('input'), expected)}; " + (
                    f"use one of: {', '.join(expected)}"
                )
            else:
                msg = err["msg"].removeprefix("Value error, ")
            self.add(path, msg)

    def one(self, path: tuple[Any, ...], value: Any, cls: type[BaseModel]) -> Any:
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            self.pydantic(path, exc, cls)
            return None

    def each(self, path: tuple[Any, ...], value: Any, cls: type[BaseModel]) -> dict[str, Any]:
        """Validate a mapping of name -> definition item by item."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"'{path[-1]}' must be a mapping of name -> definition")
            return {}
        out = {}
        for name, item in value.items():
            parsed = self.one(path + (name,), item, cls)
            if parsed is not None:
                out[str(name)] = parsed
        return out

    def each_item(self, path: tuple[Any, ...], value: Any, cls: type[BaseModel]) -> list[Any]:
        """Validate a list of definitions item by item."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(path, f"'{path[-1]}' must be a list")
            return []
        out = []
        for i, item in enumerate(value):
            parsed = self.one(path + (i,), item, cls)
            if parsed is not None:
                out.append(parsed)
        return out

    def top_level(self, data: Any, cls: type[BaseModel], required: tuple[str, ...]) -> bool:
        """Unknown / missing top-level sections. False when `data` is not a mapping."""
        if not isinstance(data, dict):
            self.add((), f"{self.what} must be a mapping")
            return False
        fields = set(cls.model_fields)
        for key in data:
            if key not in fields:
                self.add((key,), f"unknown section '{key}'{did_you_mean(key, fields)} (allowed: {', '.join(sorted(fields))})")
        for key in required:
            if key not in data:
                self.add((), f"the section '{key}' is missing")
        return True


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
