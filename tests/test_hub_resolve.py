"""The name grammar and its fixed priority (no network: Hub names are only parsed here)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from age2hie_hub.errors import ModelNotFoundError
from age2hie_hub.hub import ALIASES, from_pretrained, list_pretrained, parse_name
from age2hie_hub.hub import resolve as resolve_mod
from age2hie_hub.hub.resolve import hub_cache_dir, hub_endpoint, hub_offline

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def test_local_folder_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder that happens to be spelled like a repo id (org/name) is a folder: local paths win.
    (tmp_path / "neonatal-lab" / "age2hie").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    parsed = parse_name("neonatal-lab/age2hie")
    assert parsed.folder == Path("neonatal-lab/age2hie") and parsed.repo_id is None
    with pytest.raises(ModelNotFoundError, match="local folder; revision='v1' only applies to Hub repos"):
        parse_name("neonatal-lab/age2hie", revision="v1")


def test_aliases_hub_forms_and_repo_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"age2hie", "brain-age"} <= set(ALIASES)
    monkeypatch.setattr(resolve_mod, "BUNDLED_DIR", tmp_path)  # an alias with no bundled copy: its Hub repo
    parsed = parse_name("brain-age")
    assert (parsed.repo_id, parsed.alias, parsed.revision) == (ALIASES["brain-age"].repo_id, "brain-age", None)
    assert parse_name("hf-hub:org/model@v1.2").repo_id == "org/model"
    assert parse_name("hf-hub:org/model@v1.2").revision == "v1.2"
    assert parse_name("hf-hub:org/model", revision="abc").revision == "abc"
    assert parse_name("org/model.v2_a-b", revision="main").repo_id == "org/model.v2_a-b"
    with pytest.raises(ModelNotFoundError, match="pins revision 'v1' but revision='v2'"):
        parse_name("hf-hub:org/model@v1", revision="v2")
    for bad in ("hf-hub:org", "hf-hub:org/model@", "hf-hub:a/b/c"):
        with pytest.raises(ModelNotFoundError, match=r"not hf-hub:org/name\[@revision\]"):
            parse_name(bad)


@pytest.mark.parametrize("name", ["resnet-magic", "a/b/c", "org/", "UPPER CASE/x", ""])
def test_unresolvable_names_list_the_accepted_forms(name: str) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        parse_name(name)
    message = str(err.value)
    for expected in ("local checkpoint folder", "age2hie", "brain-age", "hf-hub:org/name@revision", "org/name"):
        assert expected in message


def test_paths_that_do_not_exist_or_are_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="the path does not exist"):
        parse_name(str(tmp_path / "missing"))
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file, not a checkpoint folder"):
        parse_name(str(a_file))


def test_bundled_alias_folder_is_used_unless_a_revision_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolve_mod, "BUNDLED_DIR", tmp_path)
    assert not any(info.bundled for info in list_pretrained())
    shutil.copytree(GOLDEN, tmp_path / "age2hie")
    listed = {info.alias: info for info in list_pretrained()}
    assert listed["age2hie"].bundled and not listed["brain-age"].bundled
    model = from_pretrained("age2hie")
    assert model.checkpoint_source.folder == (tmp_path / "age2hie").resolve()
    assert model.checkpoint_source.name == "age2hie" and model.checkpoint_source.repo_id is None
    assert not model.training
    assert parse_name("age2hie", revision="v2").repo_id == ALIASES["age2hie"].repo_id


def test_list_pretrained_lists_aliases_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [info.alias for info in list_pretrained()]
    assert names == sorted(ALIASES)
    # The package ships release models only; test checkpoints live in tests/data/ (hidden names: staging folders).
    shipped = {p.name for p in resolve_mod.BUNDLED_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert shipped <= set(ALIASES), f"{sorted(shipped - set(ALIASES))} in {resolve_mod.BUNDLED_DIR} are no release"
    shutil.copytree(GOLDEN, tmp_path / "extra")  # a checkpoint folder beside the bundled ones is no alias
    shutil.copytree(GOLDEN, tmp_path / "age2hie")
    monkeypatch.setattr(resolve_mod, "BUNDLED_DIR", tmp_path)
    listed = {info.alias: info.bundled for info in list_pretrained()}
    assert sorted(listed) == sorted(ALIASES) and listed["age2hie"] and not listed["brain-age"]
    assert all("/" in info.repo_id and info.description for info in list_pretrained())


def test_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HOME", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    assert hub_offline() == bool(constants.HF_HUB_OFFLINE)
    assert hub_cache_dir() is None and hub_endpoint() is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert hub_offline()
    assert hub_cache_dir() == str(tmp_path / "home" / "hub")
    assert hub_endpoint() == "http://127.0.0.1:9"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == str(tmp_path / "cache")


def test_offline_hub_name_without_cache_fails_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there; must not be contacted
    with pytest.raises(ModelNotFoundError, match="not in the local cache and offline"):
        from_pretrained("hf-hub:org/model@v1")
