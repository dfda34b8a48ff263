"""Safe changes to the health model: edit, preview, publish, version, roll back.

`weights.yaml` is the one place the score is defined, and ops change it. Every change
goes through `publish` (or `rollback`, which is a publish of an old text), which refuses

* a user without the ops role (`PermissionDenied` — enforced here, not only in the app);
* a blank reason (`ReasonRequired`);
* a text that does not validate (`ModelError`, with every issue and its line — the same
  messages as `python -m health validate`);
* a stale draft: the draft was started from a version that is no longer the published
  one (`StaleDraft`, naming both versions and who published the newer one) — so two ops
  editing at once never silently overwrite each other;
* a draft identical to the published model (`NoChange`).

The file is written atomically (temp file in the same folder + rename), and every version
is recorded in SQLite (`data/state.db` by default, table `model_versions`): number, hash,
who, when, why, the unified diff against the previous text, the full text and the
back-test figures at that moment. The first time a model file is seen its current text is
recorded as version 1 ("initial"); an edit made outside the app (by hand, a deploy) is
recorded as its own version ("external") the next time the store looks at the file, so
the history is complete and any version's exact bytes can be restored.

`edit_weights` applies structured edits (segment weights, tier thresholds, score points)
to the YAML text. It reads the document with ruamel.yaml's round-trip loader to find the
exact place of each value and replaces only that text, so comments, key order, quoting,
spacing and every untouched line stay byte for byte (the version diff shows just the
lines that changed); when a structure cannot be edited in place it falls back to a
ruamel round-trip dump. Either way the result is re-read and checked against the
intended data before it is returned.

`what_if` scores the book with the published and the draft model side by side: the tier
migration matrix (accounts and ARR), the accounts that change tier, and the back-test
figures of both models when `health.backtest` is available.

No Streamlit here: the Model page (app_pages/model.py) and tests call these functions.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, Union

import polars as pl
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from health.model import INSUFFICIENT, TIER_ORDER, HealthModel
from health.model_loader import LoadedModel, ModelError, _plain, model_hash, parse_model
from health.roles import PermissionDenied, User

UTC = dt.timezone.utc

DEFAULT_STORE = Path("data/state.db")
"""The SQLite file versions are kept in (shared with the action store)."""
STATE_DB_ENV = "CHI_STATE_DB"
"""Environment variable naming another state database (the same one sources/writeback reads)."""
MODEL_ROLES: tuple[str, ...] = ("ops",)
"""Roles (config/roles.yaml) that may publish or roll back the health model. roles.py's
permissions (act, dismiss, approve, retry, sync) are about actions; changing the model is
a role check, defined here."""

TIERS_ALL: tuple[str, ...] = tuple(sorted(TIER_ORDER, key=TIER_ORDER.get))  # type: ignore[arg-type]

__all__ = [
    "DEFAULT_STORE",
    "MODEL_ROLES",
    "Change",
    "EditError",
    "ModelError",
    "NoChange",
    "PermissionDenied",
    "ReasonRequired",
    "SetScore",
    "SetTiers",
    "SetWeight",
    "StaleDraft",
    "UnknownVersion",
    "Version",
    "VersionStore",
    "WhatIf",
    "backtest_figures",
    "backtest_table",
    "can_edit_model",
    "diff",
    "edit_weights",
    "ensure_recorded",
    "form_changes",
    "history",
    "publish",
    "read_model_text",
    "require_model_editor",
    "rollback",
    "text_hashes",
    "version_at",
    "version_periods",
    "what_if",
    "with_model_version",
]


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class ReasonRequired(ValueError):
    """A publish or rollback without a reason."""


class NoChange(ValueError):
    """The draft is the text already published."""


class UnknownVersion(LookupError):
    """No such version number in the store."""


class StaleDraft(RuntimeError):
    """The draft was started from a version that is no longer the published one."""

    def __init__(self, message: str, base_hash: str | None, current: "Version | None", base: "Version | None"):
        super().__init__(message)
        self.base_hash = base_hash
        self.current = current
        self.base = base


# ---------------------------------------------------------------------------------------
# Who may change the model
# ---------------------------------------------------------------------------------------


def can_edit_model(user: User | None, roles: Sequence[str] = MODEL_ROLES) -> bool:
    return user is not None and user.known and any(user.has_role(r) for r in roles)


def require_model_editor(user: User | None, roles: Sequence[str] = MODEL_ROLES) -> None:
    """Raise `PermissionDenied` unless `user` holds one of `roles` (ops)."""
    if can_edit_model(user, roles):
        return
    need = " or ".join(roles)
    if user is None:
        raise PermissionDenied(f"nobody is signed in: changing the health model needs the {need} role")
    if not user.known:
        raise PermissionDenied(
            f"{user.email or 'an anonymous user'} is not listed in config/roles.yaml, so they may not change "
            f"the health model; it needs the {need} role"
        )
    raise PermissionDenied(
        f"{user.label} may not change the health model: it needs the {need} role (see config/roles.yaml)"
    )


# ---------------------------------------------------------------------------------------
# Versions and their store
# ---------------------------------------------------------------------------------------

Kind = Literal["initial", "publish", "rollback", "external"]


@dataclass(frozen=True)
class Version:
    number: int
    hash: str
    kind: str
    """initial (the file as first seen), publish, rollback, external (edited outside the app)."""
    author: str | None
    """E-mail of who published it (None for initial / external)."""
    author_name: str | None
    at: dt.datetime
    reason: str
    diff: str
    """Unified diff against the previous version's text ('' for the first)."""
    text: str
    backtest: dict[str, Any] | None = field(default=None, repr=False)
    restored_from: int | None = None
    """For a rollback: the version whose text was restored."""
    model: str = ""
    """The model file this version belongs to (its resolved path)."""

    @property
    def who(self) -> str:
        if self.author:
            return f"{self.author_name} <{self.author}>" if self.author_name and self.author_name != self.author else self.author
        return {"initial": "(first seen)", "external": "(outside the app)"}.get(self.kind, "(unknown)")

    @property
    def label(self) -> str:
        return f"version {self.number} ({self.hash})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    model         TEXT NOT NULL,
    number        INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    author        TEXT,
    author_name   TEXT,
    at            TEXT NOT NULL,
    reason        TEXT NOT NULL,
    restored_from INTEGER,
    diff          TEXT NOT NULL,
    text          TEXT NOT NULL,
    backtest      TEXT,
    PRIMARY KEY (model, number)
);
"""


def _model_key(path: str | Path) -> str:
    return Path(path).resolve().as_posix()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


class VersionStore:
    """The `model_versions` table in a SQLite file. A connection per call (safe across
    the app's threads and processes); writes take SQLite's write lock first
    (BEGIN IMMEDIATE), so two publishers are serialised and the stale check is exact."""

    def __init__(self, path: str | Path | None = None, *, clock: Callable[[], dt.datetime] | None = None):
        self.path = str(path or os.environ.get(STATE_DB_ENV) or DEFAULT_STORE)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock or (lambda: dt.datetime.now(UTC))
        self._memory: sqlite3.Connection | None = None
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def now(self) -> dt.datetime:
        n = self.clock()
        return n if n.tzinfo else n.replace(tzinfo=UTC)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.path == ":memory:":
            if self._memory is None:
                self._memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                self._memory.row_factory = sqlite3.Row
            yield self._memory
            return
        con = sqlite3.connect(self.path, timeout=15, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout = 15000")
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")

    @staticmethod
    def _row(r: sqlite3.Row) -> Version:
        return Version(
            number=r["number"],
            hash=r["hash"],
            kind=r["kind"],
            author=r["author"],
            author_name=r["author_name"],
            at=dt.datetime.fromisoformat(r["at"]),
            reason=r["reason"],
            diff=r["diff"],
            text=r["text"],
            backtest=json.loads(r["backtest"]) if r["backtest"] else None,
            restored_from=r["restored_from"],
            model=r["model"],
        )

    def versions(self, model: str, con: sqlite3.Connection | None = None) -> list[Version]:
        if con is not None:
            rows = con.execute("SELECT * FROM model_versions WHERE model = ? ORDER BY number", (model,)).fetchall()
            return [self._row(r) for r in rows]
        with self._connect() as c:
            return self.versions(model, c)

    def latest(self, model: str, con: sqlite3.Connection | None = None) -> Version | None:
        sql = "SELECT * FROM model_versions WHERE model = ? ORDER BY number DESC LIMIT 1"
        if con is not None:
            r = con.execute(sql, (model,)).fetchone()
            return self._row(r) if r else None
        with self._connect() as c:
            return self.latest(model, c)

    def get(self, model: str, number: int) -> Version:
        with self._connect() as c:
            r = c.execute("SELECT * FROM model_versions WHERE model = ? AND number = ?", (model, number)).fetchone()
        if r is None:
            raise UnknownVersion(f"there is no version {number} of {Path(model).name}")
        return self._row(r)

    def append(
        self,
        con: sqlite3.Connection,
        model: str,
        *,
        text: str,
        kind: str,
        reason: str,
        author: str | None = None,
        author_name: str | None = None,
        backtest: Mapping[str, Any] | None = None,
        restored_from: int | None = None,
    ) -> Version:
        prev = self.latest(model, con)
        number = (prev.number + 1) if prev else 1
        d = diff(prev.text, text, f"version {prev.number}", f"version {number}") if prev else ""
        at = self.now()
        con.execute(
            "INSERT INTO model_versions (model, number, hash, kind, author, author_name, at, reason, restored_from,"
            " diff, text, backtest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model, number, model_hash(text), kind, author, author_name, _iso(at), reason, restored_from,
                d, text, json.dumps(backtest, default=_json_default) if backtest is not None else None,
            ),
        )  # fmt: skip
        return Version(number, model_hash(text), kind, author, author_name, at, reason, d, text,
                       dict(backtest) if backtest is not None else None, restored_from, model)  # fmt: skip


StoreLike = Union[VersionStore, str, Path, None]


def _store(store: StoreLike) -> VersionStore:
    return store if isinstance(store, VersionStore) else VersionStore(store)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ---------------------------------------------------------------------------------------
# Reading and writing the file
# ---------------------------------------------------------------------------------------


def read_model_text(path: str | Path) -> str:
    """The file's exact text (line ends kept, so a restore gives back the same bytes)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def text_hashes(text: str) -> set[str]:
    """The hash of the exact text and of the text as `load_model` reads it (universal
    newlines): a base hash from either matches."""
    return {model_hash(text), model_hash(text.replace("\r\n", "\n").replace("\r", "\n"))}


def _atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and a rename, keeping the
    file's permissions; the modification time always moves (caches keyed on it reload)."""
    try:
        before = path.stat()
    except FileNotFoundError:
        before = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        if before is not None:
            os.chmod(tmp, before.st_mode & 0o7777)
            after = os.stat(tmp).st_mtime_ns
            if after <= before.st_mtime_ns:  # coarse clocks: never leave the old mtime
                os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _sync(store: VersionStore, con: sqlite3.Connection, path: Path) -> tuple[str, Version]:
    """Record the file as it is now if the store does not know it yet (version 1
    "initial", or an "external" edit); returns (the file's text, the latest version)."""
    key = _model_key(path)
    text = read_model_text(path)
    latest = store.latest(key, con)
    if latest is None:
        latest = store.append(con, key, text=text, kind="initial", reason="initial")
    elif latest.text != text:
        latest = store.append(
            con, key, text=text, kind="external",
            reason=f"{path.name} was changed outside the app (by hand or a deploy)",
        )  # fmt: skip
    return text, latest


def ensure_recorded(path: str | Path, store: StoreLike = None) -> Version:
    """The version the file is at now, recording it first if needed (see `_sync`)."""
    st = _store(store)
    with st.write() as con:
        return _sync(st, con, Path(path))[1]


def history(store: StoreLike = None, path: str | Path = "weights.yaml") -> list[Version]:
    """Every recorded version of the model file at `path`, oldest first."""
    return _store(store).versions(_model_key(path))


def diff(a: "str | Version", b: "str | Version", from_label: str | None = None, to_label: str | None = None) -> str:
    """Unified diff between two texts (or versions)."""
    fa = from_label or (a.label if isinstance(a, Version) else "published")
    tb = to_label or (b.label if isinstance(b, Version) else "draft")
    ta = a.text if isinstance(a, Version) else a
    tt = b.text if isinstance(b, Version) else b
    return "".join(difflib.unified_diff(ta.splitlines(keepends=True), tt.splitlines(keepends=True), fa, tb))


def _stale_message(path: Path, base_hash: str | None, base: Version | None, current: Version) -> str:
    started = f"version {base.number} ({base.hash})" if base else f"an unknown version ({base_hash})"
    by = current.who
    when = f"{current.at.astimezone(UTC):%d %b %Y %H:%M} UTC"
    because = f": “{current.reason}”" if current.reason else ""
    msg = (
        f"This draft was started from {started}, but {path.name} is now at version {current.number} "
        f"({current.hash}), published by {by} on {when}{because}. "
        "Your draft would overwrite it: reload the published model and apply your changes again."
    )
    return msg


def _check_base(store: VersionStore, con: sqlite3.Connection, path: Path, text: str, current: Version,
                base_hash: str | None) -> None:  # fmt: skip
    if base_hash is not None and base_hash in text_hashes(text):
        return
    if base_hash is None:
        return
    base = None
    for v in reversed(store.versions(_model_key(path), con)):
        if base_hash in text_hashes(v.text):
            base = v
            break
    raise StaleDraft(_stale_message(path, base_hash, base, current), base_hash, current, base)


def _require_reason(reason: str | None) -> str:
    r = (reason or "").strip()
    if not r:
        raise ReasonRequired("say why: a reason is required to change the health model (it is kept in the history)")
    return r


def _validate(text: str, path: Path) -> LoadedModel:
    return parse_model(text, file=path.name)


def publish(
    path: str | Path,
    new_text: str,
    *,
    user: User | None,
    reason: str,
    base_hash: str,
    store: StoreLike = None,
    backtest_figures: Mapping[str, Any] | None = None,
    roles: Sequence[str] = MODEL_ROLES,
) -> Version:
    """Validate `new_text`, write it to `path` atomically and record it as a new version.

    `base_hash` is the hash of the published model the draft was started from (what
    `LoadedModel.hash` / `model_hash(text)` gave when the editor opened). Raises
    `PermissionDenied`, `ReasonRequired`, `ModelError` (every issue), `StaleDraft` or
    `NoChange`; the file is untouched whenever it raises.
    """
    require_model_editor(user, roles)
    why = _require_reason(reason)
    p = Path(path)
    _validate(new_text, p)
    if not base_hash:
        raise StaleDraft("a draft must say which published version it was started from (base_hash)", base_hash, None, None)
    st = _store(store)
    with st.write() as con:
        text, current = _sync(st, con, p)
        _check_base(st, con, p, text, current, base_hash)
        if new_text == text:
            raise NoChange(f"the draft is the published model ({current.label}): nothing to publish")
        version = st.append(
            con, _model_key(p), text=new_text, kind="publish", reason=why,
            author=user.email if user else None, author_name=user.name if user else None,
            backtest=backtest_figures,
        )  # fmt: skip
        _atomic_write(p, new_text)  # last: a failure rolls the record back
    return version


def rollback(
    path: str | Path,
    version_number: int,
    *,
    user: User | None,
    reason: str,
    store: StoreLike = None,
    base_hash: str | None = None,
    backtest_figures: Mapping[str, Any] | None = None,
    roles: Sequence[str] = MODEL_ROLES,
) -> Version:
    """Restore the exact text of `version_number` as a new version (kind "rollback").

    The same checks as `publish`. `base_hash`: the published version the user looked at
    when they chose to roll back; without it, the base is the latest recorded version, so
    an edit made outside the app since then is refused as stale rather than overwritten.
    """
    require_model_editor(user, roles)
    why = _require_reason(reason)
    p = Path(path)
    st = _store(store)
    key = _model_key(p)
    with st.write() as con:
        before = st.latest(key, con)
        text, current = _sync(st, con, p)
        base = base_hash if base_hash is not None else (before.hash if before is not None else current.hash)
        _check_base(st, con, p, text, current, base)
        target = next((v for v in st.versions(key, con) if v.number == version_number), None)
        if target is None:
            raise UnknownVersion(f"there is no version {version_number} of {p.name} (latest is {current.number})")
        if target.text == text:
            raise NoChange(f"{p.name} is already the text of version {version_number} ({current.label})")
        _validate(target.text, p)
        version = st.append(
            con, key, text=target.text, kind="rollback", reason=why,
            author=user.email if user else None, author_name=user.name if user else None,
            backtest=backtest_figures if backtest_figures is not None else target.backtest,
            restored_from=target.number,
        )  # fmt: skip
        _atomic_write(p, target.text)
    return version


# ---------------------------------------------------------------------------------------
# Versions over time (for marking model changes on charts, labelling scores)
# ---------------------------------------------------------------------------------------


def version_periods(store: StoreLike = None, path: str | Path = "weights.yaml") -> pl.DataFrame:
    """One row per version: `from` (when it was published), `to` (when the next one was;
    null for the current), `version`, `hash`, `kind`, `author`, `reason`."""
    vs = history(store, path)
    schema = {"from": pl.Datetime("us", "UTC"), "to": pl.Datetime("us", "UTC"), "version": pl.Int64,
              "hash": pl.String, "kind": pl.String, "author": pl.String, "reason": pl.String}  # fmt: skip
    rows = [
        {"from": v.at, "to": (vs[i + 1].at if i + 1 < len(vs) else None), "version": v.number, "hash": v.hash,
         "kind": v.kind, "author": v.author, "reason": v.reason}  # fmt: skip
        for i, v in enumerate(vs)
    ]
    return pl.DataFrame(rows, schema=schema)


def version_at(store: StoreLike, when: dt.date | dt.datetime, path: str | Path = "weights.yaml") -> Version | None:
    """The version in force at `when` (a date means the end of that day, UTC); None before
    the first recorded version."""
    if isinstance(when, dt.datetime):
        t = when if when.tzinfo else when.replace(tzinfo=UTC)
    else:
        t = dt.datetime.combine(when, dt.time.max, tzinfo=UTC)
    found = None
    for v in history(store, path):
        if v.at <= t:
            found = v
    return found


def with_model_version(frame: pl.DataFrame, loaded_hash: str, store: StoreLike = None,
                       path: str | Path = "weights.yaml") -> pl.DataFrame:  # fmt: skip
    """`frame` (scores) with `model_version` (the recorded version number whose text has
    this hash, null if none) and `model_hash` columns."""
    number = None
    for v in history(store, path):
        if loaded_hash in text_hashes(v.text):
            number = v.number
    return frame.with_columns(
        pl.lit(number, pl.Int64).alias("model_version"), pl.lit(loaded_hash, pl.String).alias("model_hash")
    )


# ---------------------------------------------------------------------------------------
# Structured edits (weights, tiers, score points) that keep the file as it was written
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetWeight:
    """A signal's weight in a segment; `weight=None` takes the signal out of the segment."""

    segment: str
    signal: str
    weight: float | None


@dataclass(frozen=True)
class SetTiers:
    """Tier thresholds of a segment (`segment=None`: the global `tiers`). A value left
    None keeps what is there (for a segment without its own tiers: the global value);
    `clear=True` removes a segment's own thresholds so it follows the global ones."""

    segment: str | None = None
    at_risk: float | None = None
    watch: float | None = None
    clear: bool = False


@dataclass(frozen=True)
class SetScore:
    """A signal's score: piecewise-linear points [[raw, sub-score], ...] or "percentile"."""

    signal: str
    points: tuple[tuple[float, float], ...] | Literal["percentile"]


Change = Union[SetWeight, SetTiers, SetScore]


class EditError(ValueError):
    """A structured edit names something the model does not have."""


def _num(x: float) -> int | float:
    f = float(x)
    if not math.isfinite(f):
        raise EditError(f"{x!r} is not a finite number")
    return int(f) if f.is_integer() and abs(f) < 1e15 else f


def _num_text(x: float) -> str:
    return str(_num(x))


def _points_value(points: Any) -> Any:
    if points == "percentile":
        return "percentile"
    return [[_num(a), _num(b)] for a, b in points]


def _points_text(points: Any) -> str:
    if points == "percentile":
        return "percentile"
    return "[" + ", ".join(f"[{_num_text(a)}, {_num_text(b)}]" for a, b in points) + "]"


def _tiers_text(at_risk: float, watch: float) -> str:
    return f"{{ at_risk: {_num_text(at_risk)}, watch: {_num_text(watch)} }}"


class _Doc:
    """The text plus its round-trip parse: offsets of keys and values."""

    def __init__(self, text: str):
        self.text = text
        self.doc = _yaml().load(text)
        self.starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self.starts.append(i + 1)

    def off(self, line: int, col: int) -> int:
        return self.starts[line] + col

    def line_start(self, off: int) -> int:
        return self.text.rfind("\n", 0, off) + 1

    def line_end(self, off: int) -> int:
        e = self.text.find("\n", off)
        return len(self.text) if e < 0 else e

    # -- token ends ----------------------------------------------------------------------
    def _quoted_end(self, i: int) -> int:
        q = self.text[i]
        j = i + 1
        while j < len(self.text):
            c = self.text[j]
            if q == '"' and c == "\\":
                j += 2
                continue
            if c == q:
                if q == "'" and self.text[j + 1 : j + 2] == "'":
                    j += 2
                    continue
                return j + 1
            j += 1
        raise EditError("unterminated quoted scalar")

    def _flow_end(self, i: int) -> int:
        depth, j = 0, i
        while j < len(self.text):
            c = self.text[j]
            if c in "\"'":
                j = self._quoted_end(j)
                continue
            if c == "#" and (j == 0 or self.text[j - 1] in " \t\n"):
                j = self.line_end(j)
                continue
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        raise EditError("unterminated flow collection")

    def _scalar_end(self, i: int, in_flow: bool) -> int:
        if self.text[i] in "\"'":
            return self._quoted_end(i)
        j, end = i, self.line_end(i)
        while j < end:
            c = self.text[j]
            if in_flow and c in ",]}":
                break
            if c == "#" and j > i and self.text[j - 1] in " \t":
                break
            j += 1
        while j > i and self.text[j - 1] in " \t":
            j -= 1
        return j

    def value_span(self, parent: Any, key: Any) -> tuple[int, int]:
        """(start, end) offsets of the value of `key` in `parent` (a map or a seq)."""
        value = parent[key]
        if isinstance(value, (CommentedMap, CommentedSeq)) and not value.fa.flow_style():
            if not len(value):
                raise EditError("empty block collection")
            last = list(value.keys())[-1] if isinstance(value, CommentedMap) else len(value) - 1
            first = list(value.keys())[0] if isinstance(value, CommentedMap) else 0
            line, col = value.lc.key(first) if isinstance(value, CommentedMap) else value.lc.item(first)
            return self.off(line, col), self.value_span(value, last)[1]
        line, col = parent.lc.value(key) if isinstance(parent, CommentedMap) else parent.lc.item(key)
        start = self.off(line, col)
        if start >= len(self.text):
            raise EditError("value out of range")
        if isinstance(value, (CommentedMap, CommentedSeq)):
            if self.text[start] not in "[{":
                raise EditError("flow collection not where expected")
            return start, self._flow_end(start)
        in_flow = isinstance(parent, (CommentedMap, CommentedSeq)) and bool(parent.fa.flow_style())
        return start, self._scalar_end(start, in_flow)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    return y


def _dump(doc: Any, original: str) -> str:
    import io

    y = _yaml()
    y.indent(**_guess_indent(original))
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _guess_indent(text: str) -> dict[str, int]:
    """mapping / sequence / offset as the file writes them (defaults 2 / 4 / 2)."""
    mapping, sequence, offset = 2, 4, 2
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
    for a, b in zip(lines, lines[1:]):
        ia, ib = len(a) - len(a.lstrip(" ")), len(b) - len(b.lstrip(" "))
        if a.rstrip().endswith(":") and not b.lstrip().startswith("- ") and ib > ia:
            mapping = ib - ia
            break
    for a, b in zip(lines, lines[1:]):
        ia, ib = len(a) - len(a.lstrip(" ")), len(b) - len(b.lstrip(" "))
        if a.rstrip().endswith(":") and b.lstrip().startswith("- "):
            offset = max(ib - ia, 0)
            rest = b.lstrip()[1:]
            sequence = offset + 1 + (len(rest) - len(rest.lstrip(" ")))
            break
    return {"mapping": mapping, "sequence": max(sequence, offset + 2), "offset": offset}


def _seg_map(doc: Any, segment: str) -> Any:
    segs = doc.get("segments") if isinstance(doc, dict) else None
    if not isinstance(segs, dict) or segment not in segs:
        known = ", ".join(segs) if isinstance(segs, dict) else "none"
        raise EditError(f"unknown segment '{segment}' (segments: {known})")
    seg = segs[segment]
    if not isinstance(seg, dict):
        raise EditError(f"segment '{segment}' is not a mapping")
    return seg


def _global_tiers(doc: Any) -> Any:
    t = doc.get("tiers") if isinstance(doc, dict) else None
    if not isinstance(t, dict):
        raise EditError("the model has no `tiers:` mapping")
    return t


def _expected(data: Any, change: Change) -> Any:
    """Apply `change` to plain data (what the edited text must read back as)."""
    data = json.loads(json.dumps(data, default=str))
    if isinstance(change, SetWeight):
        w = data["segments"][change.segment]["weights"]
        if change.weight is None:
            w.pop(change.signal, None)
        else:
            w[change.signal] = _num(change.weight)
    elif isinstance(change, SetScore):
        data["signals"][change.signal]["score"] = _points_value(change.points)
    elif isinstance(change, SetTiers):
        if change.segment is None:
            t = data["tiers"]
            for k in ("at_risk", "watch"):
                if getattr(change, k) is not None:
                    t[k] = _num(getattr(change, k))
        else:
            seg = data["segments"][change.segment]
            if change.clear:
                seg.pop("tiers", None)
            else:
                base = seg.get("tiers") or {k: data["tiers"][k] for k in ("at_risk", "watch")}
                seg["tiers"] = {**base, **{k: _num(getattr(change, k)) for k in ("at_risk", "watch")
                                           if getattr(change, k) is not None}}  # fmt: skip
    return data


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=str) == json.dumps(b, default=str)


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _splices(d: _Doc, edits: Sequence[tuple[Any, Any, str]]) -> str:
    """Replace several values at once (spans from one parse, applied last first)."""
    spans = sorted(((*d.value_span(parent, key), new) for parent, key, new in edits), reverse=True)
    out = d.text
    for start, end, new in spans:
        out = _splice(out, start, end, new)
    return out


def _insert_key(d: _Doc, mapping: Any, key: str, value_text: str) -> str:
    if not isinstance(mapping, CommentedMap) or mapping.fa.flow_style() or not len(mapping):
        raise EditError("not a block mapping")
    keys = list(mapping.keys())
    line, col = mapping.lc.key(keys[0])
    ks = d.off(line, col)
    if d.text[d.line_start(ks) : ks].strip():
        raise EditError("keys do not start their lines")
    end = d.line_end(d.value_span(mapping, keys[-1])[1])
    return d.text[:end] + "\n" + " " * col + f"{key}: {value_text}" + d.text[end:]


def _delete_key(d: _Doc, mapping: Any, key: str) -> str:
    if not isinstance(mapping, CommentedMap) or mapping.fa.flow_style():
        raise EditError("not a block mapping")
    if len(mapping) == 1:
        raise EditError("would leave an empty mapping")
    line, col = mapping.lc.key(key)
    ks = d.off(line, col)
    ls = d.line_start(ks)
    if d.text[ls:ks].strip():
        raise EditError("key does not start its line")
    end = d.line_end(d.value_span(mapping, key)[1])
    return d.text[:ls] + d.text[min(end + 1, len(d.text)) :]


def _numbers(parent: Any, values: Mapping[Any, float]) -> list[tuple[Any, Any, str]]:
    """Edits for the numbers that really change (an equal value keeps its spelling)."""
    out = []
    for key, v in values.items():
        cur = parent[key]
        if isinstance(cur, (int, float)) and not isinstance(cur, bool) and float(cur) == float(v):
            continue
        out.append((parent, key, _num_text(v)))
    return out


def _surgical(d: _Doc, change: Change) -> str:
    doc = d.doc
    if isinstance(change, SetWeight):
        w = _seg_map(doc, change.segment).get("weights")
        if not isinstance(w, dict):
            raise EditError(f"segment '{change.segment}' has no weights mapping")
        if change.weight is None:
            return _delete_key(d, w, change.signal) if change.signal in w else d.text
        if change.signal in w:
            return _splices(d, _numbers(w, {change.signal: change.weight}))
        return _insert_key(d, w, change.signal, _num_text(change.weight))
    if isinstance(change, SetScore):
        sig = (doc.get("signals") or {}).get(change.signal)
        if not isinstance(sig, dict) or "score" not in sig:
            raise EditError(f"unknown signal '{change.signal}'")
        cur = sig["score"]
        pts = change.points
        if (
            pts != "percentile"
            and isinstance(cur, CommentedSeq)
            and len(cur) == len(pts)
            and all(isinstance(p, CommentedSeq) and len(p) == 2 for p in cur)
        ):  # same number of points: each number in place (comments between points stay)
            return _splices(d, [e for p, new in zip(cur, pts) for e in _numbers(p, {0: new[0], 1: new[1]})])
        if isinstance(cur, CommentedSeq) and not cur.fa.flow_style():
            raise EditError("block-style points: rewrite through the document")
        return _splices(d, [(sig, "score", _points_text(pts))])
    # tiers
    values = {k: getattr(change, k) for k in ("at_risk", "watch") if getattr(change, k) is not None}
    if change.segment is None:
        return _splices(d, _numbers(_global_tiers(doc), values))
    seg = _seg_map(doc, change.segment)
    if change.clear:
        return _delete_key(d, seg, "tiers") if "tiers" in seg else d.text
    own = seg.get("tiers")
    if isinstance(own, dict):
        if any(k not in own for k in values):
            raise EditError("segment tiers lack a key")
        return _splices(d, _numbers(own, values))
    g = _global_tiers(doc)
    return _insert_key(d, seg, "tiers", _tiers_text(values.get("at_risk", g["at_risk"]), values.get("watch", g["watch"])))


def _roundtrip(text: str, change: Change) -> str:
    """The fallback: change the round-trip document and dump it (comments and key order
    kept by ruamel; spacing may be normalised)."""
    y = _yaml()
    doc = y.load(text)
    if isinstance(change, SetWeight):
        w = _seg_map(doc, change.segment)["weights"]
        if change.weight is None:
            w.pop(change.signal, None)
        else:
            w[change.signal] = _num(change.weight)
    elif isinstance(change, SetScore):
        sig = doc["signals"][change.signal]
        cur = sig.get("score")
        if change.points == "percentile":
            sig["score"] = "percentile"
        elif isinstance(cur, CommentedSeq):  # in place: comments attached to items stay
            pts = [CommentedSeq([_num(a), _num(b)]) for a, b in change.points]
            for p in pts:
                p.fa.set_flow_style()
            for i, p in enumerate(pts):
                if i < len(cur):
                    cur[i] = p
                else:
                    cur.append(p)
            del cur[len(pts) :]
        else:
            seq = CommentedSeq()
            seq.fa.set_flow_style()
            for a, b in change.points:
                item = CommentedSeq([_num(a), _num(b)])
                item.fa.set_flow_style()
                seq.append(item)
            sig["score"] = seq
    else:
        if change.segment is None:
            t = _global_tiers(doc)
            for k in ("at_risk", "watch"):
                if getattr(change, k) is not None:
                    t[k] = _num(getattr(change, k))
        else:
            seg = _seg_map(doc, change.segment)
            if change.clear:
                seg.pop("tiers", None)
            else:
                own = seg.get("tiers")
                if not isinstance(own, dict):
                    g = _global_tiers(doc)
                    own = CommentedMap([("at_risk", g["at_risk"]), ("watch", g["watch"])])
                    own.fa.set_flow_style()
                    seg["tiers"] = own
                for k in ("at_risk", "watch"):
                    if getattr(change, k) is not None:
                        own[k] = _num(getattr(change, k))
    return _dump(doc, text)


def _check_target(data: Any, change: Change) -> None:
    if not isinstance(data, dict):
        raise EditError("the model is not a mapping")
    if isinstance(change, (SetWeight, SetScore)):
        signals = data.get("signals") or {}
        if change.signal not in signals:
            raise EditError(f"unknown signal '{change.signal}'")
    if isinstance(change, SetWeight) or (isinstance(change, SetTiers) and change.segment is not None):
        if change.segment not in (data.get("segments") or {}):  # type: ignore[union-attr]
            raise EditError(f"unknown segment '{change.segment}'")
    if isinstance(change, SetTiers) and not isinstance(data.get("tiers"), dict):
        raise EditError("the model has no `tiers:` mapping")


def edit_weights(text: str, changes: Iterable[Change]) -> str:
    """Apply structured `changes` to model `text`; comments, key order and every other
    line are kept. Raises `EditError` for a change that names an unknown segment or
    signal (or a number that is not finite). The result is not validated as a model
    (ranges, tier order...): `parse_model` and `publish` do that, with line numbers."""
    d = _Doc(text)
    for change in changes:
        data = _plain(d.doc)
        _check_target(data, change)
        want = _expected(data, change)
        try:
            got = _surgical(d, change)
            if got == d.text and _same(data, want):
                continue
            nd = _Doc(got)
            if not _same(_plain(nd.doc), want):
                raise EditError("in-place edit did not give the intended data")
        except EditError as exc:
            if "unknown" in str(exc) or "finite" in str(exc):
                raise
            nd = _Doc(_roundtrip(d.text, change))
            if not _same(_plain(nd.doc), want):  # pragma: no cover - a ruamel bug guard
                raise EditError(f"could not apply {change!r} to the model text") from None
        d = nd
    return d.text


def form_changes(
    model: HealthModel,
    *,
    weights: Mapping[str, Mapping[str, float | None]] | None = None,
    tiers: Mapping[str | None, tuple[float, float] | None] | None = None,
    scores: Mapping[str, Sequence[tuple[float, float]] | Literal["percentile"]] | None = None,
) -> list[Change]:
    """The changes that turn `model` into what a form shows, and only those (unchanged
    values are not rewritten). `weights`: segment -> signal -> weight (None = not used in
    that segment); `tiers`: segment (None = global) -> (at_risk, watch), or None for a
    segment that follows the global thresholds; `scores`: signal -> points."""
    out: list[Change] = []
    for seg, row in (weights or {}).items():
        have = model.segments[seg].weights
        for sig, w in row.items():
            w = None if w is None or (isinstance(w, float) and math.isnan(w)) else float(w)
            if w is None and sig in have:
                out.append(SetWeight(seg, sig, None))
            elif w is not None and (sig not in have or float(have[sig]) != w):
                out.append(SetWeight(seg, sig, w))
    for seg, pair in (tiers or {}).items():
        if seg is None:
            if pair is None:
                continue
            a, w = pair
            if (float(a), float(w)) != (model.tiers.at_risk, model.tiers.watch):
                out.append(SetTiers(None, a if float(a) != model.tiers.at_risk else None,
                                    w if float(w) != model.tiers.watch else None))  # fmt: skip
            continue
        own = model.segments[seg].tiers
        if pair is None:
            if own is not None:
                out.append(SetTiers(seg, clear=True))
            continue
        a, w = float(pair[0]), float(pair[1])
        if own is None or (own.at_risk, own.watch) != (a, w):
            out.append(SetTiers(seg, a, w))
    for sig, pts in (scores or {}).items():
        cur = model.signals[sig].score
        new = "percentile" if pts == "percentile" else tuple((float(x), float(y)) for x, y in pts)
        old = "percentile" if cur == "percentile" else tuple((float(x), float(y)) for x, y in cur)
        if new != old:
            out.append(SetScore(sig, new))
    return out


# ---------------------------------------------------------------------------------------
# What-if: the draft against the published model on the same book
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIf:
    as_of: dt.date
    matrix: pl.DataFrame
    """Long: from_tier (published), to_tier (draft), accounts, arr — every pair of tiers."""
    changes: pl.DataFrame
    """Accounts whose tier changes: account_id, name, segment, owner, arr, score and tier
    under each model, direction (worse / better); largest ARR first."""
    scores: pl.DataFrame = field(repr=False)
    """Every account: account_id, arr, score_published, score_draft, tier_published, tier_draft."""
    backtest: dict[str, dict[str, Any] | None] | None = None
    """{"published": figures, "draft": figures} (see `backtest_figures`), None when not run."""
    backtest_note: str | None = None
    """Why there are no back-test figures (no outcomes table, module missing, ...)."""

    @property
    def n_accounts(self) -> int:
        return int(self.matrix["accounts"].sum())

    @property
    def n_changed(self) -> int:
        return self.changes.height

    @property
    def arr_changed(self) -> float:
        return float(self.changes["arr"].sum() or 0) if self.changes.height else 0.0

    def table(self, value: Literal["accounts", "arr"] = "accounts") -> pl.DataFrame:
        """The matrix as a grid: one row per published tier, one column per draft tier."""
        used = [t for t in TIERS_ALL if t != INSUFFICIENT] + (
            [INSUFFICIENT]
            if self.matrix.filter(
                ((pl.col("from_tier") == INSUFFICIENT) | (pl.col("to_tier") == INSUFFICIENT)) & (pl.col("accounts") > 0)
            ).height
            else []
        )
        m = self.matrix.filter(pl.col("from_tier").is_in(used) & pl.col("to_tier").is_in(used))
        wide = m.pivot(on="to_tier", index="from_tier", values=value, aggregate_function="sum")
        return wide.select("from_tier", *[t for t in used if t in wide.columns])


def _as_loaded_model(m: HealthModel | LoadedModel) -> HealthModel:
    return m.model if isinstance(m, LoadedModel) else m


def backtest_figures(tables: Mapping[str, Any], model: HealthModel | LoadedModel, *, lead_days: int = 90,
                     resamples: int = 200, model_version: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The back-test's figures as plain JSON-able data (no per-renewal rows). Raises
    ImportError when health/backtest.py is missing, and its BacktestError (e.g. no
    outcomes table)."""
    from health.backtest import run_backtest

    result = run_backtest(tables, _as_loaded_model(model), lead_days=lead_days, resamples=resamples,
                          model_version=model_version)  # fmt: skip
    out = result.to_dict(include_rows=False)
    for k in ("engine_seconds", "total_seconds"):
        out.pop(k, None)
    return out


_FIGURES: tuple[tuple[str, str], ...] = (
    ("auc", "AUC (score vs churn)"),
    ("auc_ci", "AUC 95% interval"),
    ("n", "Renewals scored"),
    ("base_rate", "Churn rate, all renewals"),
    ("rate_at_risk", "Churn rate, at risk"),
    ("rate_watch", "Churn rate, watch"),
    ("rate_healthy", "Churn rate, healthy"),
    ("at_risk_lift", "Lift of at risk (x base rate)"),
    ("recall_at_risk", "Churns flagged at risk"),
    ("recall_flagged", "Churns flagged at risk or watch"),
    ("decile_precision", "Churn rate, worst 10% by score"),
    ("decile_lift", "Lift of worst 10%"),
)


def _flat(fig: Mapping[str, Any] | None) -> dict[str, Any]:
    if not fig:
        return {}
    o = fig.get("overall") or {}
    tiers = {b["label"]: b for b in o.get("tiers") or []}
    lo, hi = o.get("auc_low"), o.get("auc_high")
    return {
        "auc": o.get("auc"),
        "auc_ci": f"{lo:.2f}–{hi:.2f}" if lo is not None and hi is not None else None,
        "n": o.get("n"),
        "base_rate": o.get("base_rate"),
        "rate_at_risk": (tiers.get("at_risk") or {}).get("rate"),
        "rate_watch": (tiers.get("watch") or {}).get("rate"),
        "rate_healthy": (tiers.get("healthy") or {}).get("rate"),
        "at_risk_lift": o.get("at_risk_lift"),
        "recall_at_risk": o.get("recall_at_risk"),
        "recall_flagged": o.get("recall_flagged"),
        "decile_precision": o.get("decile_precision"),
        "decile_lift": o.get("decile_lift"),
    }


def _show(key: str, v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if key in ("auc",):
        return f"{v:.3f}"
    if key in ("n",):
        return f"{int(v):,}"
    if key.endswith("lift"):
        return f"{v:.2f}x"
    return f"{v:.1%}"


def backtest_table(published: Mapping[str, Any] | None, draft: Mapping[str, Any] | None) -> pl.DataFrame:
    """The headline back-test figures side by side: figure, published, draft (as text)."""
    a, b = _flat(published), _flat(draft)
    return pl.DataFrame(
        {
            "figure": [label for _, label in _FIGURES],
            "published": [_show(k, a.get(k)) for k, _ in _FIGURES],
            "draft": [_show(k, b.get(k)) for k, _ in _FIGURES],
        }
    )


def what_if(
    tables: Mapping[str, Any],
    published_model: HealthModel | LoadedModel,
    draft_model: HealthModel | LoadedModel,
    as_of: dt.date | None = None,
    *,
    backtest: bool = True,
    lead_days: int = 90,
    resamples: int = 200,
) -> WhatIf:
    """Score the book as of `as_of` (default: the data's latest day) under both models."""
    from health.scoring import default_as_of, score

    pub, dra = _as_loaded_model(published_model), _as_loaded_model(draft_model)
    as_of = as_of or default_as_of(tables)
    cols = ["account_id", "score", "tier"]
    a = score(tables, pub, as_of)
    b = score(tables, dra, as_of)
    info = [c for c in ("name", "segment", "owner", "arr") if c in a.columns]
    both = (
        a.select(*cols, *info, pl.col("health_segment").alias("segment_published"))
        .rename({"score": "score_published", "tier": "tier_published"})
        .join(
            b.select(*cols, pl.col("health_segment").alias("segment_draft")).rename(
                {"score": "score_draft", "tier": "tier_draft"}
            ),
            on="account_id",
            how="full",
            coalesce=True,
        )
        .with_columns(
            pl.col("tier_published").fill_null(INSUFFICIENT),
            pl.col("tier_draft").fill_null(INSUFFICIENT),
            (pl.col("arr") if "arr" in info else pl.lit(0.0)).cast(pl.Float64).fill_null(0.0).alias("arr"),
        )
    )
    pairs = pl.DataFrame(
        [(f, t) for f in TIERS_ALL for t in TIERS_ALL], schema=["from_tier", "to_tier"], orient="row"
    )
    counts = both.group_by(pl.col("tier_published").alias("from_tier"), pl.col("tier_draft").alias("to_tier")).agg(
        pl.len().cast(pl.Int64).alias("accounts"), pl.col("arr").sum().alias("arr")
    )
    matrix = pairs.join(counts, on=["from_tier", "to_tier"], how="left").with_columns(
        pl.col("accounts").fill_null(0), pl.col("arr").fill_null(0.0)
    )
    rank = {t: i for t, i in TIER_ORDER.items()}
    changed = (
        both.filter(pl.col("tier_published") != pl.col("tier_draft"))
        .with_columns(
            pl.when(
                pl.col("tier_draft").replace_strict(rank, return_dtype=pl.Int64)
                < pl.col("tier_published").replace_strict(rank, return_dtype=pl.Int64)
            )
            .then(pl.lit("worse"))
            .otherwise(pl.lit("better"))
            .alias("direction")
        )
        .sort(["arr", "account_id"], descending=[True, False])
    )
    keep = ["account_id", *[c for c in ("name", "segment", "owner") if c in changed.columns], "arr",
            "score_published", "score_draft", "tier_published", "tier_draft", "direction"]  # fmt: skip
    changed = changed.select(keep)
    figures: dict[str, dict[str, Any] | None] | None = None
    note = None
    if backtest:
        try:
            figures = {
                "published": backtest_figures(tables, pub, lead_days=lead_days, resamples=resamples),
                "draft": backtest_figures(tables, dra, lead_days=lead_days, resamples=resamples),
            }
        except ImportError:
            note = "the back-test module (health/backtest.py) is not available"
        except ValueError as exc:  # BacktestError: no outcomes, ...
            note = str(exc)
    return WhatIf(
        as_of=as_of,
        matrix=matrix,
        changes=changed,
        scores=both.select("account_id", "arr", "score_published", "score_draft", "tier_published", "tier_draft"),
        backtest=figures,
        backtest_note=note,
    )
