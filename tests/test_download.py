"""age2hie-download / age2hie_hub.hub.download against tests/hub_server.py on 127.0.0.1, with the real
huggingface_hub client: a clean download then offline prediction, a dropped connection, an interrupted download
and its rerun, tampered files (against the Hub's record and against the release's SHA256SUMS), unknown
repo / revision, no network. The release served is the bundled age2hie folder (config, weights, card, ONNX,
SHA256SUMS), uploaded once per module.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants  # noqa: F401  # read the environment now, before any test sets HF_HUB_OFFLINE
import pytest
from hub_server import HubServer

from age2hie_hub.cli.download import main
from age2hie_hub.errors import ModelNotFoundError
from age2hie_hub.hub import download, fetch_release
from age2hie_hub.hub.resolve import BUNDLED_DIR, resolve_checkpoint

REPO_ID = "neonatal-lab/age2hie-release"
RELEASE = BUNDLED_DIR / "age2hie"
FETCHED = ["config.json", "model.safetensors", "README.md", "model.onnx", "SHA256SUMS"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server():
    from huggingface_hub import HfApi

    if not (RELEASE / "SHA256SUMS").is_file():
        pytest.skip(f"no bundled release in {RELEASE} to serve")
    hub = HubServer().start()
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo(REPO_ID)
    commit = api.upload_folder(folder_path=RELEASE, repo_id=REPO_ID).oid
    hub.release_commit = commit
    yield hub
    hub.stop()


@pytest.fixture
def hub(server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubServer:
    server.faults.clear()
    server.tamper.clear()
    server.lfs_suffixes = ()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return server


def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "hf_home" / "hub"


def storage(tmp_path: Path) -> Path:
    return cache_root(tmp_path) / ("models--" + REPO_ID.replace("/", "--"))


def loads_offline(monkeypatch: pytest.MonkeyPatch, name: str = REPO_ID, **kwargs) -> Path | None:
    """The folder an offline from_pretrained(name) would load, or None when it refuses."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        folder = resolve_checkpoint(name, **kwargs).folder
    except ModelNotFoundError:
        folder = None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    return folder


def run_json(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def flipped(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def test_clean_download_then_offline_predict(hub: HubServer, tmp_path: Path, monkeypatch, capsys) -> None:
    from age2hie_hub.cli.predict import main as predict

    # Negative control: before the download an offline prediction with the repo name fails.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert predict(["--model", REPO_ID, "--example", "--json"]) == 1
    assert "not in the local cache" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")

    code, [row], err = run_json(capsys, REPO_ID)
    assert code == 0, err
    commit = hub.release_commit
    assert row["status"] == "ok" and row["commit"] == commit and row["bundled"] is False
    folder = Path(row["folder"])
    assert folder == storage(tmp_path) / "snapshots" / commit
    assert [f["name"] for f in row["files"]] == FETCHED  # RELEASE.md and .gitattributes are not fetched
    for f in row["files"]:
        assert f["checks"] == ["hub-git-sha1", "SHA256SUMS"] or (f["name"] == "SHA256SUMS" and f["checks"] == ["hub-git-sha1"])
        assert f["sha256"] == _sha256(RELEASE / f["name"]) == _sha256(folder / f["name"])
    assert (storage(tmp_path) / "refs" / "main").read_text() == commit
    assert row["offline_command"] == (
        f"HF_HUB_CACHE={cache_root(tmp_path)} HF_HUB_OFFLINE=1 age2hie-predict --model {REPO_ID} scan.nii.gz"
    )

    # Offline: predict reads the downloaded release and the server sees no request; same answer as the bundle.
    n_requests = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert predict(["--model", REPO_ID, "--example", "--json"]) == 0
    downloaded = json.loads(capsys.readouterr().out)
    assert predict(["--model", "age2hie", "--example", "--json"]) == 0
    bundled = json.loads(capsys.readouterr().out)
    assert len(hub.requests) == n_requests
    assert downloaded["model"] == REPO_ID and downloaded["model_file_sha256"] == bundled["model_file_sha256"]
    assert downloaded["probability"] == pytest.approx(bundled["probability"], abs=1e-5)

    # A second run finds every file in place, checks them again, and says the same.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, [again], _ = run_json(capsys, REPO_ID)
    assert code == 0 and again["files"] == row["files"]


def test_text_output_names_the_folder_and_the_offline_command(hub: HubServer, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "elsewhere"
    assert main([f"hf-hub:{REPO_ID}", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"in {cache / ('models--' + REPO_ID.replace('/', '--')) / 'snapshots' / hub.release_commit}" in out
    assert "checked against the Hub's hashes and the release SHA256SUMS" in out
    assert f"HF_HUB_CACHE={cache} HF_HUB_OFFLINE=1 age2hie-predict --model hf-hub:{REPO_ID} scan.nii.gz" in out
    assert not cache_root(tmp_path).exists()  # --cache-dir, not HF_HOME


@pytest.mark.slow
def test_the_printed_command_works_offline_in_a_fresh_process(hub: HubServer, tmp_path: Path) -> None:
    """The console scripts as a user runs them: download, then exactly the printed command with the server gone."""
    from age2hie_hub.inference import example_scan

    scripts = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    done = subprocess.run([scripts / "age2hie-download", REPO_ID, "--json"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    command = json.loads(done.stdout)["offline_command"]
    words = shlex.split(command)
    offline_env = dict(env, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        offline_env[key] = value
    assert offline_env["HF_HUB_OFFLINE"] == "1" and words[-1] == "scan.nii.gz"
    words = [str(scripts / words[0]), *words[1:-1], str(example_scan()), "--json"]
    ran = subprocess.run(words, env=offline_env, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr
    assert 0.0 <= json.loads(ran.stdout)["probability"] <= 1.0


def test_local_dir_holds_a_loadable_folder(hub: HubServer, tmp_path: Path, capsys) -> None:
    target = tmp_path / "models" / "age2hie"
    code, [row], err = run_json(capsys, REPO_ID, "--local-dir", str(target))
    assert code == 0, err
    assert Path(row["folder"]) == target and row["local_dir"] == str(target)
    for name in FETCHED:
        assert (target / name).is_file() and not (target / name).is_symlink()
        assert _sha256(target / name) == _sha256(RELEASE / name)
    assert row["offline_command"] == f"HF_HUB_OFFLINE=1 age2hie-predict --model {target} scan.nii.gz"
    assert not cache_root(tmp_path).exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["age2hie"]  # no staging folder left
    assert resolve_checkpoint(str(target)).folder == target

    # Again into the same folder: replaced whole. A folder holding other things is refused.
    (target / "model.onnx").write_bytes(b"stale")
    assert main([REPO_ID, "--local-dir", str(target), "-q"]) == 0
    assert _sha256(target / "model.onnx") == _sha256(RELEASE / "model.onnx")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([REPO_ID, "--local-dir", str(other)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_python_api_and_a_branch(hub: HubServer, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.endpoint, token=hub.token).create_branch(REPO_ID, branch="dev", exist_ok=True)
    folder = download(REPO_ID, revision="dev")
    assert folder == storage(tmp_path) / "snapshots" / hub.release_commit
    assert (storage(tmp_path) / "refs" / "dev").read_text() == hub.release_commit
    assert not (storage(tmp_path) / "refs" / "main").exists()
    assert loads_offline(monkeypatch, revision="dev") == folder
    assert loads_offline(monkeypatch) is None  # main was not downloaded

    # A commit needs no ref: from_pretrained(name, revision=<commit>) finds the snapshot itself.
    release = fetch_release(REPO_ID, revision=hub.release_commit, cache_dir=tmp_path / "c2")
    assert release.commit == hub.release_commit and not (release.folder.parents[1] / "refs").exists()
    assert download(REPO_ID, local_dir=tmp_path / "d") == (tmp_path / "d").resolve()


def test_bundled_alias_downloads_nothing(hub: HubServer, tmp_path: Path, capsys) -> None:
    n_requests = len(hub.requests)
    assert main(["age2hie", "brain-age"]) == 0
    out = capsys.readouterr().out
    assert out.count("already in the package, nothing to download") == 2
    assert "HF_HUB_OFFLINE=1 age2hie-predict --model age2hie scan.nii.gz" in out
    assert len(hub.requests) == n_requests and not cache_root(tmp_path).exists()


def test_dropped_connection_is_resumed_in_the_same_run(hub: HubServer, capsys) -> None:
    hub.faults["model.safetensors"] = ["close"]
    code, [row], err = run_json(capsys, REPO_ID)
    assert code == 0, err
    assert not hub.faults["model.safetensors"]  # the fault was served
    gets = [p for m, p in hub.requests if m == "GET" and p.endswith("/model.safetensors")]
    assert len(gets) >= 2  # the first GET was cut; huggingface_hub resumed it
    weights = next(f for f in row["files"] if f["name"] == "model.safetensors")
    assert weights["sha256"] == _sha256(RELEASE / "model.safetensors")


@pytest.mark.parametrize("where", ["cache", "local-dir"])
def test_interrupted_download_leaves_nothing_loadable_and_a_rerun_completes(
    hub: HubServer, tmp_path: Path, monkeypatch, capsys, where: str
) -> None:
    target = tmp_path / "release"
    extra = ["--local-dir", str(target)] if where == "local-dir" else []
    hub.faults["model.safetensors"] = ["truncate"]
    assert main([REPO_ID, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err and "run the download again" in err
    if where == "cache":
        assert loads_offline(monkeypatch) is None
        snapshot = storage(tmp_path) / "snapshots" / hub.release_commit
        assert not (snapshot / "model.safetensors").exists()
        assert not (storage(tmp_path) / "refs" / "main").exists()
    else:
        assert not target.exists()  # only the hidden staging folder, never the folder itself

    n_requests = len(hub.requests)
    code, [row], err = run_json(capsys, REPO_ID, *extra)
    assert code == 0, err
    gets = [p.rsplit("/", 1)[-1] for m, p in hub.requests[n_requests:] if m == "GET" and "/resolve/" in p]
    assert "config.json" not in gets and "model.safetensors" in gets  # the rerun fetches only what was missing
    folder = Path(row["folder"])
    assert _sha256(folder / "model.safetensors") == _sha256(RELEASE / "model.safetensors")
    if where == "cache":
        assert loads_offline(monkeypatch) == folder
    else:
        assert folder == target and not (tmp_path / ".release.partial").exists()


@pytest.mark.parametrize("lfs", [False, True], ids=["git-blob-id", "lfs-sha256"])
@pytest.mark.parametrize("where", ["cache", "local-dir"])
def test_file_not_matching_the_hub_record_is_refused(
    hub: HubServer, tmp_path: Path, monkeypatch, capsys, where: str, lfs: bool
) -> None:
    if lfs:
        hub.lfs_suffixes = (".safetensors", ".onnx")
    target = tmp_path / "release"
    extra = ["--local-dir", str(target)] if where == "local-dir" else []
    hub.tamper["model.safetensors"] = flipped(RELEASE / "model.safetensors")
    assert main([REPO_ID, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("age2hie-download: error: model.safetensors from ")
    assert ("SHA-256" if lfs else "git blob id") in err and "recorded by the Hub" in err
    if where == "cache":
        assert loads_offline(monkeypatch) is None
        assert not (storage(tmp_path) / "snapshots" / hub.release_commit).exists()
        blobs = storage(tmp_path) / "blobs"
        assert not any(p.read_bytes() == hub.tamper["model.safetensors"] for p in blobs.iterdir())
    else:
        assert not target.exists() and not (tmp_path / ".release.partial").exists()

    # The mirror is fixed: the rerun downloads the file again (the bad copy was not kept) and succeeds.
    del hub.tamper["model.safetensors"]
    code, [row], err = run_json(capsys, REPO_ID, *extra)
    assert code == 0, err
    weights = next(f for f in row["files"] if f["name"] == "model.safetensors")
    assert weights["checks"] == ["hub-lfs-sha256" if lfs else "hub-git-sha1", "SHA256SUMS"]
    assert weights["sha256"] == _sha256(RELEASE / "model.safetensors")


def test_file_not_matching_the_release_sha256sums_is_refused(hub: HubServer, tmp_path: Path, monkeypatch, capsys) -> None:
    """The Hub's record is consistent but the release's own SHA256SUMS pins another config.json."""
    from huggingface_hub import HfApi

    repo = "neonatal-lab/inconsistent"
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo(repo, exist_ok=True)
    sums = (RELEASE / "SHA256SUMS").read_text().replace(_sha256(RELEASE / "config.json"), "0" * 64)
    assert "0" * 64 in sums
    api.upload_folder(folder_path=RELEASE, repo_id=repo, allow_patterns=["config.json", "model.safetensors"])
    api.upload_file(path_or_fileobj=sums.encode(), path_in_repo="SHA256SUMS", repo_id=repo)
    assert main([repo]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json from " in err and "listed in the release's SHA256SUMS" in err
    assert loads_offline(monkeypatch, repo) is None


@pytest.mark.parametrize("case", ["repo", "revision", "network"])
def test_unknown_repo_revision_and_no_network_exit_1(hub: HubServer, monkeypatch, capsys, case: str) -> None:
    argv = {"repo": ["neonatal-lab/missing"], "revision": [REPO_ID, "--revision", "v9"], "network": [REPO_ID]}[case]
    if case == "network":
        dead = HubServer().start()
        endpoint = dead.endpoint
        dead.stop()
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    expected = {"repo": "was not found on", "revision": "has no revision 'v9'", "network": "Connection refused"}[case]
    assert expected in err and err.startswith("age2hie-download: error: ")


def test_offline_mode_and_several_names(hub: HubServer, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([REPO_ID]) == 1
    assert "offline mode is on" in capsys.readouterr().err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, rows, err = run_json(capsys, "age2hie", "neonatal-lab/missing")
    assert code == 1 and [r["status"] for r in rows] == ["ok", "error"]
    assert "was not found" in rows[1]["error"] and "1 of 2 downloads failed" in err


def test_usage_errors_exit_2(capsys) -> None:
    for argv in ([], ["a/b", "c/d", "--local-dir", "x"], ["a/b", "--local-dir", "x", "--cache-dir", "y"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    capsys.readouterr()
