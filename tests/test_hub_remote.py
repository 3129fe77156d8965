"""push_to_hub / from_pretrained with the real huggingface_hub client against tests/hub_server.py on 127.0.0.1.

Nothing in huggingface_hub is patched: the library reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE at call
time and hands them to huggingface_hub; one test also sets them before a fresh interpreter imports it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from numerics import assert_outputs_differ, assert_same_outputs, assert_same_weights

from age2hie_hub.errors import CheckpointError, ModelNotFoundError
from age2hie_hub.hub import from_pretrained, push_to_hub, save_pretrained
from age2hie_hub.models import ModelConfig, build_model

REPO_ID = "neonatal-lab/age2hie-tiny"
X = torch.randn(2, 1, 16, 16, 12, generator=torch.Generator().manual_seed(3))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig("resnet3d_10", {"width": 0.0625}, "outcome")).eval()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(X)


def assert_same_model(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    """The weights that were pushed, bit for bit, and the outputs they give (to float32 rounding: two modules)."""
    assert_same_weights(loaded, original)
    assert_same_outputs(outputs(loaded), outputs(original))


def cache_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "hf_home" / "hub"
    return sorted(p.name for p in root.rglob("*") if p.is_file() and "snapshots" in p.parts)


@pytest.mark.numerics
def test_push_pin_offline_and_second_revision(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tiny(0), tiny(1)
    info1 = push_to_hub(first, REPO_ID, token=hub.token)
    assert info1.commit_url.startswith(hub.endpoint) and len(info1.oid) == 40
    repo = hub.repos[REPO_ID]
    assert sorted(repo.commits[info1.oid].files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert len(repo.commits) == 2  # the repo's initial commit + exactly one for the whole folder

    pinned = from_pretrained(REPO_ID, revision=info1.oid)
    assert_same_model(pinned, first)
    assert not pinned.training
    src = pinned.checkpoint_source
    assert (src.repo_id, src.revision, src.commit) == (REPO_ID, info1.oid, info1.oid)
    assert str(src.folder).startswith(str(tmp_path / "hf_home" / "hub"))  # HF_HOME honoured
    assert ".gitattributes" not in cache_files(tmp_path)  # only our files are fetched

    info2 = push_to_hub(second, REPO_ID, token=hub.token, commit_message="retrained")
    assert info2.oid != info1.oid and repo.commits[info2.oid].title == "retrained"
    latest = from_pretrained(f"hf-hub:{REPO_ID}")
    assert latest.checkpoint_source.commit == info2.oid
    assert_same_model(latest, second)
    old = from_pretrained(f"hf-hub:{REPO_ID}@{info1.oid}")
    assert_same_model(old, first)
    assert_outputs_differ(outputs(old), outputs(latest))  # the two revisions can be told apart

    # Offline: the same names load from the cache and the server sees no request.
    n_requests = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_model(from_pretrained(REPO_ID, revision=info1.oid), first)
    assert_same_model(from_pretrained(REPO_ID), second)  # main -> cached ref
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert_same_model(from_pretrained(REPO_ID, local_files_only=True), second)
    hub.stop()  # the server is gone: local_files_only still works
    assert_same_model(from_pretrained(REPO_ID, revision=info1.oid, local_files_only=True), first)
    assert len(hub.requests) == n_requests


def test_offline_without_cache_says_so(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    push_to_hub(tiny(0), REPO_ID, token=hub.token)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the local cache and offline"):
        from_pretrained(REPO_ID)


def test_unknown_repo_and_revision(hub: HubServer) -> None:
    with pytest.raises(ModelNotFoundError, match="was not found on http://127.0.0.1"):
        from_pretrained("neonatal-lab/missing")
    push_to_hub(tiny(0), REPO_ID, token=hub.token)
    with pytest.raises(ModelNotFoundError, match="has no revision 'v9'"):
        from_pretrained(REPO_ID, revision="v9")


@pytest.mark.numerics
def test_private_repo_needs_the_token(hub: HubServer) -> None:
    push_to_hub(tiny(0), REPO_ID, private=True, token=hub.token)
    assert hub.repos[REPO_ID].private
    with pytest.raises(ModelNotFoundError, match="private repo needs token"):
        from_pretrained(REPO_ID)
    assert_same_model(from_pretrained(REPO_ID, token=hub.token), tiny(0))


@pytest.mark.numerics
def test_pull_request_and_branch(hub: HubServer) -> None:
    main = push_to_hub(tiny(0), REPO_ID, token=hub.token)
    pr = push_to_hub(tiny(1), REPO_ID, token=hub.token, create_pr=True)
    assert pr.pr_url is not None and pr.pr_revision == "refs/pr/1"
    assert hub.repos[REPO_ID].refs["main"] == main.oid  # main untouched
    assert_same_model(from_pretrained(REPO_ID, revision="refs/pr/1"), tiny(1))

    dev = push_to_hub(tiny(2), REPO_ID, token=hub.token, revision="dev")
    assert hub.repos[REPO_ID].refs["dev"] == dev.oid and hub.repos[REPO_ID].refs["main"] == main.oid
    assert_same_model(from_pretrained(REPO_ID, revision="dev"), tiny(2))
    assert_same_model(from_pretrained(REPO_ID), tiny(0))


def test_push_folder_checks_it_first_and_leaves_out_pickles(hub: HubServer, tmp_path: Path) -> None:
    folder = save_pretrained(tiny(0), tmp_path / "ckpt")
    (folder / "curves").mkdir()
    (folder / "curves" / "loss.csv").write_text("epoch,loss\n0,0.7\n")
    (folder / "optimizer.pt").write_bytes(b"pickle bytes")
    info = push_to_hub(folder, REPO_ID, token=hub.token)
    files = hub.repos[REPO_ID].commits[info.oid].files
    assert "curves/loss.csv" in files and "optimizer.pt" not in files

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        push_to_hub(broken, "neonatal-lab/broken", token=hub.token)
    assert "neonatal-lab/broken" not in hub.repos


def test_writes_need_a_token(hub: HubServer) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError):
        push_to_hub(tiny(0), REPO_ID, token=False)
    assert REPO_ID not in hub.repos


def test_hand_edited_hub_card_is_kept(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    push_to_hub(tiny(0), REPO_ID, token=hub.token)
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    card = "---\nlibrary_name: age2hie-hub\n---\n# Our lab's model\n\nWritten by hand.\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=REPO_ID)
    info = push_to_hub(tiny(1), REPO_ID, token=hub.token)
    files = hub.repos[REPO_ID].commits[info.oid].files
    assert files["README.md"].decode() == card
    info = push_to_hub(tiny(1), REPO_ID, token=hub.token, overwrite_card=True)
    assert b"Written by hand" not in hub.repos[REPO_ID].commits[info.oid].files["README.md"]


@pytest.mark.slow
def test_environment_set_before_import_in_a_fresh_process(hub: HubServer, tmp_path: Path) -> None:
    info = push_to_hub(tiny(0), REPO_ID, token=hub.token)
    script = (
        "import json, torch; torch.set_num_threads(1)\n"
        "from age2hie_hub import from_pretrained\n"
        f"m = from_pretrained({REPO_ID!r}, revision={info.oid!r})\n"
        "x = torch.randn(2, 1, 16, 16, 12, generator=torch.Generator().manual_seed(3))\n"
        "print(json.dumps({'out': m(x).tolist(), 'folder': str(m.checkpoint_source.folder)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "fresh_home"), OMP_NUM_THREADS="1")
    online = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert online.returncode == 0, online.stderr
    result = json.loads(online.stdout.strip().splitlines()[-1])
    assert result["folder"].startswith(str(tmp_path / "fresh_home" / "hub"))
    assert_same_outputs(torch.tensor(result["out"]), outputs(tiny(0)))  # another process: to float32 rounding

    hub.stop()
    env.update(HF_HUB_OFFLINE="1")
    offline = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0, offline.stderr
    again = json.loads(offline.stdout.strip().splitlines()[-1])
    assert again["folder"] == result["folder"]  # the same snapshot, read from the cache
    assert_same_outputs(torch.tensor(again["out"]), torch.tensor(result["out"]))
