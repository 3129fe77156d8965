"""The checkpoint folder: config.json + model.safetensors + README.md (+ model.onnx). Save, and strict load.

Loading reads safetensors only. A folder that holds only a pickle (.bin/.pt/.pth/.ckpt) is refused and
nothing in it is unpickled: unpickling runs arbitrary code from whoever made the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from age2hie_hub._atomic import publish, temp_sibling
from age2hie_hub.errors import CheckpointError
from age2hie_hub.hub.card import build_model_card, card_is_generated
from age2hie_hub.hub.config import CheckpointConfig
from age2hie_hub.preprocess.config import PreprocessConfig

if TYPE_CHECKING:
    import torch

    from age2hie_hub.models import Age2HieNet

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
ONNX_NAME = "model.onnx"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# head -> (task, labels) for a config written without one
_DEFAULT_TASK = {
    "outcome": ("hie_outcome", ("favourable", "adverse")),
    "age_regression": ("brain_age", ()),
    "age_softbin": ("brain_age", ()),
    "classification": ("classification", ()),
}


@dataclass(frozen=True)
class CheckpointSource:
    """Where a loaded model's weights came from (`model.checkpoint_source`)."""

    folder: Path  # the local folder read (a bundled folder, a Hub cache snapshot, or the user's folder)
    sha256: str  # of model.safetensors as read
    repo_id: str | None = None  # Hub repo, when downloaded
    revision: str | None = None  # revision asked for ("main", a tag, a commit), when downloaded
    commit: str | None = None  # the commit the revision resolved to, when downloaded
    name: str | None = None  # the name given to from_pretrained

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def _git_commit() -> str | None:
    """The library's git commit when it runs from a checkout (editable installs), else None."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def default_config(model: "Age2HieNet") -> CheckpointConfig:
    """A config for a model saved without one: its ModelConfig, the default preprocessing for its channels."""
    task, labels = _DEFAULT_TASK[model.config.head]
    channels = int(model.in_channels)
    modality = "ADC" if task == "hie_outcome" else "T1w"
    age_unit = model.config.head_args.get("unit", "years") if task == "brain_age" else "years"
    return CheckpointConfig(
        model=model.config,
        preprocess=PreprocessConfig(channels=channels),
        task=task,
        labels=labels,
        age_unit=age_unit,
        input_modalities=(modality,) * channels if channels == 1 else tuple(f"channel{i}" for i in range(channels)),
    )


def _with_provenance(config: CheckpointConfig) -> CheckpointConfig:
    from age2hie_hub import __version__

    provenance = dict(config.provenance)
    # Keep values a training run wrote (they describe the weights); fill in what is missing.
    provenance.setdefault("library_version", __version__)
    commit = _git_commit()
    if commit is not None:
        provenance.setdefault("git_commit", commit)
    return dataclasses.replace(config, provenance=provenance)


def _unwrap(model: Any) -> "Age2HieNet":
    """The Age2HieNet inside a DistributedDataParallel / DataParallel or torch.compile wrapper."""
    seen = 0
    while not hasattr(model, "config") and seen < 4:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model, seen = inner, seen + 1
    if not hasattr(model, "config") or not hasattr(model, "in_channels"):
        raise CheckpointError(
            f"save_pretrained needs an Age2HieNet (from age2hie_hub.models.build_model), got {type(model).__name__}"
        )
    return model


def _resolve_config(model: "Age2HieNet", config: CheckpointConfig | None) -> CheckpointConfig:
    if config is None:
        config = getattr(model, "checkpoint_config", None)
        if config is None:
            config = default_config(model)
            logger.warning(
                "save_pretrained: no CheckpointConfig given; writing default preprocessing %s and task %r. "
                "Pass config= to record the preprocessing the model was trained with.",
                config.preprocess, config.task,
            )
    if config.model != model.config:
        raise CheckpointError(
            f"the CheckpointConfig describes model {config.model} but the model is {model.config}; "
            "pass a config whose `model` field is model.config (e.g. after replace_head)"
        )
    return config


def _state_dict_for_safetensors(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    state = model.state_dict()
    # safetensors stores each tensor once and refuses views sharing memory; clone tied tensors apart.
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1 - len(out)
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_pretrained(
    model: "Age2HieNet",
    folder: str | os.PathLike[str],
    config: CheckpointConfig | None = None,
    *,
    overwrite_card: bool = False,
) -> Path:
    """Write `folder/` with config.json, model.safetensors and a README.md model card; returns the folder.

    Files are written to temporary names in the same folder, then renamed, so a reader never sees a
    half-written file. An existing README.md that was edited by hand is kept unless `overwrite_card`.
    A model.onnx left from other weights is removed (it would no longer match).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder; choose a folder path for the checkpoint")
    model = _unwrap(model)
    config = _with_provenance(_resolve_config(model, config))
    folder.mkdir(parents=True, exist_ok=True)

    staged: list[tuple[Path, Path]] = []  # (temp file, final path)
    try:
        weights_tmp = _temp_path(folder, WEIGHTS_NAME)
        staged.append((weights_tmp, folder / WEIGHTS_NAME))
        save_file(_state_dict_for_safetensors(model), str(weights_tmp), metadata={"format": "pt"})

        config_tmp = _temp_path(folder, CONFIG_NAME)
        staged.append((config_tmp, folder / CONFIG_NAME))
        config_tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")

        card_path = folder / CARD_NAME
        if overwrite_card or not card_path.exists() or card_is_generated(card_path.read_text(encoding="utf-8")):
            card_tmp = _temp_path(folder, CARD_NAME)
            staged.append((card_tmp, card_path))
            card_tmp.write_text(build_model_card(config), encoding="utf-8")
        else:
            logger.info("save_pretrained: keeping the hand-edited %s (pass overwrite_card=True to replace it)", card_path)

        old_weights = folder / WEIGHTS_NAME
        onnx_path = folder / ONNX_NAME
        if onnx_path.exists() and (not old_weights.exists() or file_sha256(old_weights) != file_sha256(weights_tmp)):
            logger.warning("save_pretrained: removing %s, exported from other weights; export it again", onnx_path)
            onnx_path.unlink()
        for tmp, final in staged:
            publish(tmp, final)
        staged.clear()
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    logger.info("saved %s checkpoint (%s, head %s) to %s", config.task, config.model.arch, config.model.head, folder)
    return folder


def _temp_path(folder: Path, name: str) -> Path:
    return temp_sibling(folder / name)


def read_config(folder: str | os.PathLike[str]) -> CheckpointConfig:
    """The CheckpointConfig of a checkpoint folder, without building the model."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{Path(folder)} has no {CONFIG_NAME}; is it a checkpoint folder written by save_pretrained?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("top level must be a JSON object")
        return CheckpointConfig.from_dict(data)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid checkpoint config: {err}") from err


def _refuse_pickles(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    hint = (
        f"it holds only pickle file(s) {pickles}, which age2hie-hub never unpickles (a pickle can run arbitrary code). "
        "Convert it once, from a source you trust, with the named importers in age2hie_hub.models "
        "(load_kinetics_r3d18, load_imagenet_resnet18, load_sfcn_ukbiobank) and save_pretrained"
        if pickles
        else "add the weights with save_pretrained"
    )
    raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}: {hint}")


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    expected: dict[str, "torch.Tensor"], found: dict[str, "torch.Tensor"], where: str
) -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k} (file {tuple(found[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"mis-shaped keys: {_describe(shapes)}")
    if problems:
        raise CheckpointError(
            f"{where} does not match the model its config.json describes; " + "; ".join(problems)
            + ". The weights and config.json must come from the same save_pretrained call."
        )


# Random initialisers whose draws the loaded weights replace. nn.init functions that dispatch on
# __torch_function__ themselves are listed beside the Tensor methods the others end in.
_RANDOM_INIT_NAMES = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                      "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_")


def _skip_random_init() -> Any:
    """A TorchFunctionMode under which random initialisation is a no-op: tensors stay as allocated.

    Not the meta device: initialisers on meta tensors run Python reference kernels that import
    torch._dynamo (most of a cold start), and a random initialisation of a full-width resnet3d_18 costs about
    as much again (docs/inference.md). Deterministic fills (zeros_, ones_, constant_) still run: they are cheap.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    skipped = {torch.Tensor.normal_, torch.Tensor.uniform_}
    skipped.update(getattr(torch.nn.init, name) for name in _RANDOM_INIT_NAMES)

    class SkipRandomInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func in skipped:
                return args[0] if args else (kwargs or {})["tensor"]
            return func(*args, **(kwargs or {}))

    return SkipRandomInit()


def _build_for_loading(config: CheckpointConfig) -> "Age2HieNet":
    """The model, built without spending time on a random initialisation the weights will replace.

    Built on the CPU with random initialisers skipped (parameters keep their uninitialised memory);
    strict loading then assigns every parameter and persistent buffer. A model with non-persistent
    buffers (computed at construction, not stored, e.g. soft-bin centres) is built again normally.
    """
    from age2hie_hub.models import build_model

    with _skip_random_init():
        model = build_model(config.model)
    stored = set(model.state_dict())
    if any(name not in stored for name, _ in model.named_buffers()):
        model = build_model(config.model)
    return model


def load_checkpoint(folder: str | os.PathLike[str], device: "str | torch.device | None" = None) -> "Age2HieNet":
    """Build the model config.json describes and load model.safetensors into it, strictly; eval mode.

    The model gets `.checkpoint_config` (CheckpointConfig) and `.checkpoint_source` (CheckpointSource).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; a checkpoint is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        _refuse_pickles(folder)
    config = read_config(folder)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({err}); download or save it again") from err
    try:
        model = _build_for_loading(config)
    except ValueError as err:
        raise CheckpointError(f"{folder / CONFIG_NAME}: cannot build the model it describes: {err}") from err
    expected = model.state_dict()
    check_state_dict(expected, state, str(weights))
    # Keep the model's dtypes (a float16 file loads into float32 parameters, as a copy would).
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    if device is not None:
        model.to(device)
    model.checkpoint_config = config
    model.checkpoint_source = CheckpointSource(folder=folder.resolve(), sha256=file_sha256(weights))
    return model

