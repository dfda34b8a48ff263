"""config/sources.yaml: loading, line numbers in errors, the active source and CHI_SOURCE."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sources.base import SourceConfigError
from sources.config import build_active_source, load_sources_config, project_root
from sources.files import FileSource

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "files"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with config/ and a good export folder; CHI_SOURCE unset."""
    monkeypatch.delenv("CHI_SOURCE", raising=False)
    (tmp_path / "config").mkdir()
    shutil.copytree(FIXTURES / "good", tmp_path / "exports" / "good")
    return tmp_path


def write(project: Path, text: str) -> Path:
    path = project / "config" / "sources.yaml"
    path.write_text(text)
    return path


TWO_SOURCES = """\
# comment
active: export
sources:
  sample:
    kind: sample
    accounts: 20
  export:
    kind: files
    path: exports/good
"""


def test_the_repo_config_parses_and_names_sample_active():
    cfg = load_sources_config(REPO / "config" / "sources.yaml")
    assert cfg.active == "sample"
    assert cfg.sources["sample"].settings() == {"kind": "sample", "accounts": 600, "seed": 7}


def test_active_files_source_resolves_paths_from_the_project_root(project):
    path = write(project, TWO_SOURCES)
    assert project_root(path) == project.resolve()
    source = build_active_source(path)
    assert isinstance(source, FileSource)
    assert source.name == "export"
    assert source.folder == project.resolve() / "exports" / "good"
    assert source.describe() == "CSV/Parquet folder exports/good"
    assert source.load().ok


def test_unknown_kind_names_the_line_and_the_known_kinds(project):
    path = write(project, TWO_SOURCES.replace("kind: files", "kind: ftp"))
    with pytest.raises(SourceConfigError) as exc:
        build_active_source(path)
    msg = str(exc.value)
    assert f"{path}, line 8" in msg and "'ftp'" in msg and "files" in msg and "sample" in msg


def test_unknown_active_name_says_did_you_mean(project):
    path = write(project, TWO_SOURCES.replace("active: export", "active: exprot"))
    with pytest.raises(SourceConfigError) as exc:
        load_sources_config(path)
    msg = str(exc.value)
    assert f"{path}, line 2" in msg and "did you mean 'export'?" in msg and "sample, export" in msg


def test_missing_folder_is_reported_with_the_line_of_the_source(project):
    path = write(project, TWO_SOURCES.replace("exports/good", "exports/nope"))
    with pytest.raises(SourceConfigError) as exc:
        build_active_source(path)
    msg = str(exc.value)
    assert f"{path}, line 7" in msg
    assert str(project.resolve() / "exports" / "nope") in msg and "does not exist" in msg


def test_adapter_setting_errors_point_at_their_line(project):
    path = write(project, TWO_SOURCES + "    tables:\n      accounts:\n        decimal: ';'\n")
    with pytest.raises(SourceConfigError, match=r"line 12: .*tables\.accounts\.decimal"):
        build_active_source(path)


def test_invalid_yaml_and_unknown_top_level_keys(project):
    path = write(project, "active: sample\nsources:\n  sample: {kind: sample\n")
    with pytest.raises(SourceConfigError, match=r"line \d+: this is not valid YAML"):
        load_sources_config(path)
    path = write(project, "active: sample\nsorces: {}\n")
    with pytest.raises(SourceConfigError, match=r"line 2: unknown key 'sorces'.*did you mean 'sources'"):
        load_sources_config(path)
    path = write(project, "active: sample\nsources:\n  sample:\n    accounts: 3\n")
    with pytest.raises(SourceConfigError, match=r"line 3: source 'sample' has no `kind:`"):
        load_sources_config(path)


def test_chi_source_overrides_active(project, monkeypatch):
    path = write(project, TWO_SOURCES.replace("active: export", "active: sample"))
    monkeypatch.setenv("CHI_SOURCE", "export")
    assert build_active_source(path).name == "export"
    # an explicit name beats the environment
    assert build_active_source(path, "sample").name == "sample"
    monkeypatch.setenv("CHI_SOURCE", "exprt")
    with pytest.raises(SourceConfigError, match=r"\$CHI_SOURCE names the source 'exprt'.*did you mean 'export'"):
        build_active_source(path)


def test_missing_config_file_defaults_to_the_sample(project):
    source = build_active_source(project / "config" / "sources.yaml")
    assert source.name == "sample"
    with pytest.raises(SourceConfigError, match="no sources file"):
        build_active_source(project / "config" / "sources.yaml", "export")
