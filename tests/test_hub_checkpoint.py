"""Checkpoint folders: save -> strict load round trips, refusals, the model card, atomic writes."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from numerics import assert_outputs_differ, assert_same_outputs, assert_same_weights
from safetensors.torch import load_file, save_file

from age2hie_hub.errors import CheckpointError
from age2hie_hub.hub import CheckpointConfig, load_checkpoint, save_pretrained
from age2hie_hub.hub.card import card_is_generated
from age2hie_hub.models import HEADS, ModelConfig, build_model, list_models
from age2hie_hub.preprocess.config import PreprocessConfig

# Tiny variants of every registered architecture (and the input size each needs).
TINY = {
    "resnet3d_10": ({"width": 0.0625}, (16, 16, 12)),
    "resnet3d_18": ({"width": 0.0625}, (16, 16, 12)),
    "resnet3d_34": ({"width": 0.0625}, (16, 16, 12)),
    "sfcn": ({"channels": [2, 2, 4, 4, 4, 2]}, (32, 32, 32)),
    "slice_resnet18": ({"width": 0.0625, "pooling": "attention", "attention_dim": 4}, (16, 16, 12)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


HEAD_ARGS = {"age_softbin": {"bins": 6, "age_range": [0.0, 12.0]}, "classification": {"num_classes": 3}}


def tiny_model(arch: str = "resnet3d_10", head: str = "outcome", seed: int = 0) -> torch.nn.Module:
    """A tiny model whose every parameter AND buffer is random, so a lost BatchNorm statistic changes outputs."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch, TINY[arch][0], head, HEAD_ARGS.get(head, {})))
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(7)
    return model.eval()


def tiny_input(arch: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 1, *TINY[arch][1], generator=g)


def test_tiny_table_covers_every_registered_architecture() -> None:
    assert sorted(TINY) == list_models()


@pytest.mark.numerics
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("arch", sorted(TINY))
def test_round_trip_every_architecture_and_head(tmp_path: Path, arch: str, head: str) -> None:
    model = tiny_model(arch, head)
    folder = save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = load_checkpoint(folder)
    assert not loaded.training
    assert loaded.config == model.config
    # Ready to fine-tune: real Parameters that require grad, nothing left on the meta device.
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in loaded.parameters())
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert_same_weights(model, loaded)  # the round trip is lossless: bit for bit
    x = tiny_input(arch)
    with torch.no_grad():
        # Two module instances: equal to float32 rounding, not bit for bit (tests/numerics.py).
        assert_same_outputs(loaded(x), model(x))
        # A differently seeded model of the same shape is >1000x the tolerance away: the comparison can fail.
        assert_outputs_differ(tiny_model(arch, head, seed=5)(x), loaded(x))


def test_config_and_source_recorded(tmp_path: Path) -> None:
    model = tiny_model()
    config = CheckpointConfig(
        model=model.config,
        preprocess=PreprocessConfig(shape=(16, 16, 12), intensity="adc_fixed", clip=(0.0, 3.5)),
        task="hie_outcome",
        provenance={"seed": 0, "training_data": "synthetic test cohort", "synthetic": True},
        metrics={"accuracy": 0.5},
    )
    folder = save_pretrained(model, tmp_path / "ckpt", config)
    data = json.loads((folder / "config.json").read_text())
    assert data["preprocess"]["clip"] == [0.0, 3.5]
    assert data["provenance"]["seed"] == 0
    assert data["provenance"]["library_version"]  # added by save_pretrained
    loaded = load_checkpoint(folder)
    assert loaded.checkpoint_config.preprocess == config.preprocess
    assert loaded.checkpoint_config.metrics == {"accuracy": 0.5}
    import hashlib

    assert loaded.checkpoint_source.sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.checkpoint_source.folder == folder.resolve()
    # A loaded model is saved again with its own config, unchanged.
    again = save_pretrained(loaded, tmp_path / "again")
    assert json.loads((again / "config.json").read_text()) == data


def test_config_for_another_model_is_refused(tmp_path: Path) -> None:
    model = tiny_model()
    other = CheckpointConfig(model=ModelConfig("resnet3d_18", {"width": 0.0625}), preprocess=PreprocessConfig())
    with pytest.raises(CheckpointError, match="describes model"):
        save_pretrained(model, tmp_path / "ckpt", other)
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()


def _edit_weights(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def test_missing_extra_and_misshaped_keys_are_named(tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model(), tmp_path / "ckpt")
    _edit_weights(folder, lambda s: (s.pop("head.fc.bias"), s.__setitem__("extra.weight", torch.zeros(2))))
    with pytest.raises(CheckpointError, match=r"missing keys: head\.fc\.bias.*unexpected keys: extra\.weight"):
        load_checkpoint(folder)

    folder = save_pretrained(tiny_model(), tmp_path / "ckpt2")
    _edit_weights(folder, lambda s: s.__setitem__("head.fc.weight", torch.zeros(1, 3)))
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: head\.fc\.weight \(file \(1, 3\), model \(1, "):
        load_checkpoint(folder)


class _Tripwire:
    """Unpickling this creates a file: proof that a loader unpickled something."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt"])
def test_pickle_only_folder_is_refused_and_never_unpickled(tmp_path: Path, suffix: str) -> None:
    folder = save_pretrained(tiny_model(), tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    tripwire = tmp_path / "unpickled"
    (folder / f"weights{suffix}").write_bytes(pickle.dumps({"state": _Tripwire(tripwire)}))
    with pytest.raises(CheckpointError, match=rf"pickle file\(s\) \['weights\{suffix}'\].*never unpickles"):
        load_checkpoint(folder)
    assert not tripwire.exists()


def test_bad_folders_and_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_checkpoint(tmp_path / "nope")
    folder = save_pretrained(tiny_model(), tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(folder)

    folder = save_pretrained(tiny_model(), tmp_path / "ckpt2")
    data = json.loads((folder / "config.json").read_text())
    data["model"]["arch"] = "no_such_arch"
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="cannot build the model.*no_such_arch"):
        load_checkpoint(folder)
    data["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not a valid checkpoint config"):
        load_checkpoint(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_checkpoint(folder)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder"):
        save_pretrained(tiny_model(), a_file)


def test_model_card_metadata_and_hand_edits(tmp_path: Path) -> None:
    model = tiny_model()
    folder = save_pretrained(model, tmp_path / "ckpt")
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "age2hie-hub"
    assert "hie_outcome" in card.data.tags
    assert "No evaluation was recorded" in card.text
    assert card_is_generated((folder / "README.md").read_text())

    # An unedited generated card follows the config (here: new metrics) ...
    config = CheckpointConfig(model=model.config, preprocess=PreprocessConfig(), metrics={"auc": 0.61})
    save_pretrained(model, folder, config)
    assert "| held-out |  |  |  | 0.610 |" in (folder / "README.md").read_text()
    # ... a hand-edited one is kept unless overwrite_card=True.
    edited = (folder / "README.md").read_text().replace("## Limitations", "## Limitations\n\nHand-written note.")
    (folder / "README.md").write_text(edited)
    assert not card_is_generated(edited)
    save_pretrained(model, folder, config)
    assert (folder / "README.md").read_text() == edited
    save_pretrained(model, folder, config, overwrite_card=True)
    assert "Hand-written note." not in (folder / "README.md").read_text()


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_pretrained(tiny_model(seed=0), tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken_json(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dumps", broken_json)  # fails after the new weights were written to a temp file
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny_model(seed=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temp files, nothing replaced


def test_stale_onnx_is_removed_only_when_weights_change(tmp_path: Path) -> None:
    model = tiny_model()
    folder = save_pretrained(model, tmp_path / "ckpt")
    (folder / "model.onnx").write_bytes(b"exported from these weights")
    save_pretrained(model, folder)
    assert (folder / "model.onnx").exists()
    save_pretrained(tiny_model(seed=3), folder)
    assert not (folder / "model.onnx").exists()


def test_load_to_device_and_dtype(tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model(), tmp_path / "ckpt")
    model = load_checkpoint(folder, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32


def test_weights_get_the_same_permissions_as_config(tmp_path: Path) -> None:
    folder = save_pretrained(tiny_model(), tmp_path / "ckpt")
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == modes["README.md"]


@pytest.mark.numerics
def test_half_precision_file_loads_into_float32_model(tmp_path: Path) -> None:
    model = tiny_model()
    folder = save_pretrained(model, tmp_path / "ckpt")
    _edit_weights(folder, lambda s: s.update({k: v.half() for k, v in s.items() if v.is_floating_point()}))
    loaded = load_checkpoint(folder)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = tiny_input("resnet3d_10")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)


def test_wrapped_models_are_unwrapped_and_other_modules_refused(tmp_path: Path) -> None:
    model = tiny_model()
    folder = save_pretrained(torch.nn.DataParallel(model), tmp_path / "ckpt")
    assert set(load_file(str(folder / "model.safetensors"))) == set(model.state_dict())  # no "module." prefix
    with pytest.raises(CheckpointError, match=r"needs an Age2HieNet .*, got Linear"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path / "linear")


@pytest.mark.parametrize(
    "parent, base_model",
    [("age2hie-hub/brain-age", "age2hie-hub/brain-age"), ("hf-hub:org/model@v1", "org/model"),
     ("/runs/brain-age/checkpoint", None), ("runs/brain-age/checkpoint", None), (None, None)],
)
def test_card_base_model_only_from_hub_parents(tmp_path: Path, parent, base_model) -> None:
    model = tiny_model()
    config = CheckpointConfig(model=model.config, preprocess=PreprocessConfig(), provenance={"parent": parent})
    folder = save_pretrained(model, tmp_path / "ckpt", config)
    assert ModelCard.load(folder / "README.md").data.base_model == base_model
