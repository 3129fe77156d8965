"""Golden test: a tiny stored checkpoint with a stored input and the outputs it must give.

tests/data/golden/ holds a slim two-channel (ADC + Z-ADC) resnet3d_10 with an outcome
head (random weights, seed 1234, random BatchNorm statistics) and golden_io.safetensors with an input
batch, its logits and its backbone features. Wrong, missing or mis-mapped weights, a changed layer
order in the architecture code, or a loader that silently skips keys all change those numbers.

Regenerate only on purpose (a deliberate architecture change), and say so in the commit:
    python tests/test_hub_golden.py --regenerate
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from age2hie_hub.hub import (
    CheckpointConfig,
    from_pretrained,
    load_checkpoint,
    save_pretrained,
)
from age2hie_hub.models import ModelConfig, build_model
from age2hie_hub.preprocess.config import PreprocessConfig

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
IO_FILE = GOLDEN / "golden_io.safetensors"
SEED = 1234


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.numerics]


def _golden_config() -> CheckpointConfig:
    return CheckpointConfig(
        model=ModelConfig("resnet3d_10", {"in_channels": 2, "width": 0.04}, "outcome"),
        # antialias False: the golden config.json predates the field, and a saved config without it reads as off.
        preprocess=PreprocessConfig(spacing=(2.0, 2.0, 2.0), shape=(12, 12, 10), intensity="adc_fixed", channels=2,
                                    antialias=False),
        task="hie_outcome",
        input_modalities=("ADC", "Z-ADC"),
        provenance={
            "seed": SEED,
            "synthetic": True,
            "training_data": "none: random weights for the golden test (tests/test_hub_golden.py)",
        },
    )


def regenerate() -> None:
    config = _golden_config()
    torch.manual_seed(SEED)
    model = build_model(config.model)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    model.eval()
    save_pretrained(model, GOLDEN, config, overwrite_card=True)
    x = torch.randn(2, 2, 12, 12, 10, generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        tensors = {"input": x, "logits": model(x), "features": model.backbone(x)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(IO_FILE), metadata={"seed": str(SEED)})


def _check(model: torch.nn.Module) -> None:
    io = load_file(str(IO_FILE))
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(io["input"]), io["features"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(io["input"]), io["logits"], rtol=1e-4, atol=1e-5)


def test_golden_folder_is_small() -> None:
    total = sum(p.stat().st_size for p in GOLDEN.iterdir())
    assert total < 200_000, f"golden files take {total} bytes"


def test_golden_outputs_from_load_checkpoint() -> None:
    model = load_checkpoint(GOLDEN)
    expected = _golden_config()
    assert model.checkpoint_config.model == expected.model
    assert model.checkpoint_config.preprocess == expected.preprocess
    assert model.checkpoint_config.input_modalities == ("ADC", "Z-ADC")
    _check(model)
    probability = model.predict_outputs(model(load_file(str(IO_FILE))["input"]))["probability"]
    assert probability.shape == (2,) and bool(((probability > 0) & (probability < 1)).all())


def test_golden_outputs_from_from_pretrained_by_path() -> None:
    _check(from_pretrained(str(GOLDEN)))


def test_golden_check_fails_on_wrong_weights() -> None:
    """The comparison above can fail: a fresh model, or one perturbed BatchNorm statistic, is caught."""
    fresh = build_model(_golden_config().model).eval()
    with pytest.raises(AssertionError):
        _check(fresh)
    model = load_checkpoint(GOLDEN)
    with torch.no_grad():
        model.backbone.state_dict()[next(k for k in model.backbone.state_dict() if k.endswith("running_var"))].mul_(1.5)
    with pytest.raises(AssertionError):
        _check(model)


def test_golden_round_trip_keeps_outputs(tmp_path: Path) -> None:
    _check(load_checkpoint(save_pretrained(load_checkpoint(GOLDEN), tmp_path / "copy")))


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_hub_golden.py --regenerate")
    torch.set_num_threads(1)
    regenerate()
    print(f"wrote {sorted(p.name for p in GOLDEN.iterdir())} to {GOLDEN}")
