"""Shared test fixtures: where real test data lives, and skips with a clear reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import no_openvino
import pytest
from hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
# CI and developer sessions have ../shared beside the checkout; a user's own clone does not.
SHARED_DATA = Path(os.environ.get("AGE2HIE_SHARED_DATA", REPO.parent / "shared" / "data"))

if os.environ.get(no_openvino.ENV):  # set by tests/test_portability.py for its child run
    no_openvino.simulate(os.environ[no_openvino.ENV])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set AGE2HIE_SHARED_DATA to its folder)")
    return SHARED_DATA


def package_data(package: str, *parts: str) -> Path:
    """A data file that a PyPI test dependency ships, or skip naming the missing package."""
    try:
        mod = __import__(package)
    except ImportError:
        pytest.skip(f"test dependency {package!r} is not installed (see README's set-up command)")
    path = Path(mod.__file__).parent.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{package} does not ship {'/'.join(parts)} in this version")
    return path


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture
def torch_threads():
    """``torch.set_num_threads`` for one test: call it with a count; the count before is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread(torch_threads):
    """Tiny convolutions run fastest on one thread (two OpenMP threads on a shared 2-core CPU were ~100x slower)."""
    torch_threads(1)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The loopback Hub server, with huggingface_hub pointed at it and a fresh cache (no token, not offline)."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.stop()
