"""Occlusion saliency: how much the model's main number changes when one block of its input is blanked out.

Backend-agnostic on purpose (numpy in, numpy out, through the same `Backend.run` the Predictor uses), so it
works for the torch and the ONNX Runtime backends alike and imports no torch. It is coarse by design: the
input grid is cut into about `blocks` x `blocks` x `blocks` non-overlapping patches, each patch is set to the
background value (0, what preprocessing leaves outside the brain and the field of view) in one copy of the
input, and the copies run in batches. Patches that are background already cannot change the output and are
skipped, so a skull-stripped brain in its crop box costs a few hundred forward passes of the small model grid.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# {output name: array (N, ...)} for a batch (N, C, X, Y, Z), as Backend.run returns it.
RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# Backend outputs of a batch -> one score per item (N,).
ScoreFn = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Occlusion:
    """The result of `occlusion_map`.

    map:      float32 (X, Y, Z) on the model's input grid: score(whole input) - score(input with the patch
              around that voxel blanked); positive where the region pushes the score up.
    patch:    patch size in voxels along X, Y, Z.
    score:    the score of the whole input (what the map's differences are taken from).
    what:     what the score is, for captions (e.g. "P(adverse)").
    evaluated: number of patches that ran through the model (background patches are skipped).
    """

    map: np.ndarray
    patch: tuple[int, int, int]
    score: float
    what: str
    evaluated: int


def score_function(task: str, outputs: dict[str, np.ndarray]) -> tuple[ScoreFn, str]:
    """The main number of a task as a function of backend outputs, and its caption.

    `outputs` are those of the whole input; for classification they fix which class is followed (the predicted one).
    """
    def column(key: str) -> ScoreFn:
        return lambda out: np.asarray(out[key], dtype=np.float64).reshape(len(out[key]), -1)[:, 0]

    if task == "classification" or (task not in ("hie_outcome", "brain_age") and "probabilities" in outputs):
        k = int(np.argmax(np.asarray(outputs["probabilities"]).reshape(-1)))
        return (lambda out: np.asarray(out["probabilities"], dtype=np.float64)[:, k]), f"P(class {k})"
    if task == "hie_outcome" or "probability" in outputs:
        return column("probability"), "P(adverse)"
    if task == "brain_age" or "age" in outputs:
        return column("age"), "brain age"
    key = "value" if "value" in outputs else next(iter(outputs))
    return column(key), key


def patch_size(shape: tuple[int, ...], blocks: int) -> tuple[int, int, int]:
    """Patch edge (voxels) per axis so that about `blocks` patches cover each axis."""
    return tuple(max(1, math.ceil(n / blocks)) for n in shape[:3])  # type: ignore[return-value]


def occlusion_map(
    run: RunFn,
    array: np.ndarray,
    score: ScoreFn,
    *,
    what: str = "score",
    blocks: int = 8,
    baseline: float = 0.0,
    batch_size: int = 16,
) -> Occlusion:
    """Occlusion saliency of one model input `array` (C, X, Y, Z).

    Each patch (about 1/`blocks` of each axis) is set to `baseline` in every channel; the map holds, over each
    patch's voxels, score(array) - score(occluded array). Patches whose every value already equals `baseline`
    are skipped (their difference is exactly 0).
    """
    if array.ndim != 4:
        raise ValueError(f"occlusion_map needs one input (C, X, Y, Z), got shape {array.shape}")
    if batch_size < 1 or blocks < 1:
        raise ValueError("occlusion_map: batch_size and blocks must be >= 1")
    array = np.ascontiguousarray(array, dtype=np.float32)
    spatial = array.shape[1:]
    patch = patch_size(spatial, blocks)
    full = float(score(run(array[None]))[0])
    slices = [
        (slice(i, i + patch[0]), slice(j, j + patch[1]), slice(k, k + patch[2]))
        for i in range(0, spatial[0], patch[0])
        for j in range(0, spatial[1], patch[1])
        for k in range(0, spatial[2], patch[2])
    ]
    todo = [s for s in slices if np.any(array[(slice(None), *s)] != baseline)]
    out = np.zeros(spatial, dtype=np.float32)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        # Always a full batch (the spare copies are unoccluded): a new batch shape would make the torch
        # backend trace a new graph and OpenVINO compile a new one, which costs more than the spare passes.
        batch = np.repeat(array[None], batch_size, axis=0)
        for n, s in enumerate(chunk):
            batch[(n, slice(None), *s)] = baseline
        scores = score(run(batch))
        for n, s in enumerate(chunk):
            out[s] = full - float(scores[n])
    return Occlusion(map=out, patch=patch, score=full, what=what, evaluated=len(todo))
