"""Loading a checkpoint for the torch backend: no torch._dynamo import, weights bit for bit, no random init."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from age2hie_hub.hub import list_pretrained, load_checkpoint  # noqa: E402
from age2hie_hub.hub.checkpoint import WEIGHTS_NAME  # noqa: E402
from age2hie_hub.models import ModelConfig, build_model  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "age2hie_hub" / "data" / "models"

# Runs in a fresh interpreter: a cold start is what a CLI call or a new notebook kernel pays.
_CHILD = r"""
import json, sys
import numpy as np
from safetensors.torch import load_file
from age2hie_hub.inference import Predictor, example_scan

report = {}
for name in sys.argv[1:]:
    predictor = Predictor.from_pretrained(name, backend="torch")
    model = predictor.backend.model
    folder = model.checkpoint_source.folder
    file = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    report[name] = {
        "keys_equal": sorted(file) == sorted(state),
        "bitwise": all(
            state[k].dtype == v.dtype and state[k].numpy().tobytes() == v.numpy().tobytes()
            for k, v in file.items()
        ),
    }
# Predict too: the whole one-scan torch path stays clear of the compiler stack.
Predictor.from_pretrained("age2hie", backend="torch").predict(example_scan())
report["dynamo_after_predict"] = "torch._dynamo" in sys.modules

# Negative control: the meta-device build this replaced does import it (so the check above can fail).
import torch
from age2hie_hub.models import build_model
with torch.device("meta"):
    build_model(model.config)
report["dynamo_after_meta_build"] = "torch._dynamo" in sys.modules
print(json.dumps(report))
"""


def _bundled_names() -> list[str]:
    return sorted(info.alias for info in list_pretrained() if info.bundled)


def test_torch_backend_cold_load_skips_dynamo_and_keeps_weights_bit_for_bit() -> None:
    names = _bundled_names()
    assert names and all((BUNDLED / name / WEIGHTS_NAME).is_file() for name in names), names
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *names], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for name in names:
        assert report[name] == {"keys_equal": True, "bitwise": True}, (name, report[name])
    assert report["dynamo_after_predict"] is False
    assert report["dynamo_after_meta_build"] is True


def _tiny(head: str, head_args: dict | None = None) -> torch.nn.Module:
    config = ModelConfig(arch="resnet3d_10", arch_args={"width": 0.125}, head=head, head_args=head_args or {})
    return build_model(config)


@pytest.mark.parametrize("head", ["outcome", "age_softbin"])
def test_loading_draws_no_random_numbers_and_leaves_no_mode_behind(tmp_path: Path, head: str) -> None:
    from age2hie_hub.hub import save_pretrained

    head_args = {"bins": 8, "age_range": [0.0, 8.0]} if head == "age_softbin" else {}
    folder = save_pretrained(_tiny(head, head_args), tmp_path / "ckpt")

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    loaded = load_checkpoint(folder)
    after_load = torch.rand(4)
    torch.manual_seed(0)
    _tiny(head, head_args)  # negative control: a plain build draws from the generator
    after_build = torch.rand(4)

    if head == "outcome":
        assert torch.equal(after_load, expected)  # the random initialisation was skipped, not run
    assert not torch.equal(after_build, expected)
    # Nothing left uninitialised: every parameter and buffer is the file's or computed from the config.
    reference = _tiny(head, head_args)
    reference.load_state_dict(loaded.state_dict())
    for (name, a), (_, b) in zip(loaded.named_buffers(), reference.named_buffers()):
        assert torch.equal(a, b), name
    # The skip is scoped to loading: a model built afterwards gets its Kaiming (fan_out) initialisation.
    weight = _tiny(head, head_args).backbone.stem[0].weight.detach()
    fan_out = weight.shape[0] * weight[0, 0].numel()
    assert torch.isfinite(weight).all()
    assert abs(float(weight.std()) / (2.0 / fan_out) ** 0.5 - 1.0) < 0.2
