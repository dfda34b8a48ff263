"""`python -m health validate [FILE]`: exit 0 and "OK" for a good model, exit 1 and every
problem as `file:line: ...` for a broken one, a clear message (never a traceback) for a
file that cannot be read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "tests" / "fixtures" / "models" / "good.yaml"
SHIPPED = ROOT / "weights.yaml"


def validate(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "health", "validate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def line_of(text: str, needle: str) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_shipped_weights_yaml_is_ok() -> None:
    code, out = validate("weights.yaml")
    assert code == 0, out
    assert "weights.yaml: OK" in out
    assert "Traceback" not in out


def test_default_file_is_weights_yaml() -> None:
    code, out = validate()
    assert code == 0, out
    assert "weights.yaml: OK" in out


def test_good_fixture_is_ok_and_counts_its_parts() -> None:
    code, out = validate(str(GOOD))
    assert code == 0, out
    assert f"{GOOD}: OK — 14 signals, 3 segments, 2 rules (model " in out


def test_broken_model_lists_every_error_with_file_and_line(tmp_path: Path) -> None:
    text = GOOD.read_text(encoding="utf-8")
    text = replace_once(text, "    measure: trend", "    measure: trnd")
    text = replace_once(text, "    value: sentiment", "    value: sentimnt")
    text = replace_once(text, "when: \"segment = 'enterprise'\"", "when: \"segmnt = 'enterprise'\"")
    text = replace_once(text, "  watch: 65", "  watch: 165")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text, encoding="utf-8")

    code, out = validate(str(broken))
    assert code == 1, out
    assert "Traceback" not in out
    expected = [
        (line_of(text, "    measure: trnd"), "did you mean 'trend'"),
        (line_of(text, "    value: sentimnt"), "did you mean 'sentiment'"),
        (line_of(text, "segmnt = 'enterprise'"), "did you mean 'segment'"),
        (line_of(text, "  watch: 165"), "less than or equal to 100"),
    ]
    lines = out.splitlines()
    for line, fragment in expected:
        prefix = f"{broken}:{line}: "
        hits = [entry for entry in lines if entry.startswith(prefix)]
        assert hits, f"no line starting with {prefix!r} in:\n{out}"
        assert any(fragment in h for h in hits), f"{fragment!r} not on {prefix!r} in:\n{out}"
    # reported in file order, with a count
    reported = [int(entry.split(":")[1]) for entry in lines if entry.startswith(f"{broken}:")]
    assert reported == sorted(n for n, _ in expected)
    assert f"4 error(s) in {broken}" in out
    assert "OK" not in out


def test_warnings_are_printed_and_the_model_is_ok(tmp_path: Path) -> None:
    text = replace_once(
        GOOD.read_text(encoding="utf-8"),
        "    measure: max_days_overdue\n    direction: lower_is_better",
        "    measure: max_days_overdue\n    direction: higher_is_better",
    )
    path = tmp_path / "warn.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = validate(str(path))
    assert code == 0, out
    assert f"{path}:{line_of(text, '    score: [[0, 100], [60, 0]]')}: warning: " in out
    assert f"{path}: OK" in out


def test_yaml_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    text = replace_once(GOOD.read_text(encoding="utf-8"), "    label: Latest NPS answer", "    label: Latest NPS: answer")
    path = tmp_path / "syntax.yaml"
    path.write_text(text, encoding="utf-8")
    code, out = validate(str(path))
    assert code == 1, out
    assert f"{path}:{line_of(text, 'Latest NPS: answer')}: not valid YAML" in out
    assert "Traceback" not in out


def test_missing_file_is_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.yaml"
    code, out = validate(str(missing))
    assert code in (1, 2), out
    assert "Traceback" not in out
    assert str(missing) in out
    assert "not found" in out


# ---- bugs: files that cannot be read crash the command (documented, not fixed) -------------


def test_directory_is_a_clear_message(tmp_path: Path) -> None:
    code, out = validate(str(tmp_path))
    assert code in (1, 2)
    assert "Traceback" not in out


def test_non_utf8_file_is_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.read_text(encoding="utf-8").replace("Everyone else.", "Tout le monde, café.").encode("latin-1"))
    code, out = validate(str(path))
    assert code in (1, 2)
    assert "Traceback" not in out


def test_control_character_is_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "bell.yaml"
    path.write_text(GOOD.read_text(encoding="utf-8").replace("Customer tenure", "Customer\x07 tenure"), encoding="utf-8")
    code, out = validate(str(path))
    assert code == 1
    assert "Traceback" not in out
