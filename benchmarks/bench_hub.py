"""Checkpoint and Hub timings: save_pretrained, load_checkpoint, push_to_hub and from_pretrained.

Runs the real huggingface_hub client against tests/hub_server.py on 127.0.0.1 (no internet), with
full-width models, and prints a table. Usage: python benchmarks/bench_hub.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import logging  # noqa: E402

import torch  # noqa: E402
from hub_server import HubServer  # noqa: E402

MODELS = [
    ("resnet3d_18", {}, "outcome"),
    ("resnet3d_10", {}, "outcome"),
    ("sfcn", {}, "age_softbin"),
    ("slice_resnet18", {}, "outcome"),
]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("age2hie_hub").setLevel(logging.ERROR)  # default-config warnings on every save
    with tempfile.TemporaryDirectory() as tmp, HubServer(max_regular_bytes=1 << 30) as hub:
        os.environ.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(Path(tmp) / "hf_home"))
        os.environ.pop("HF_HUB_OFFLINE", None)
        from age2hie_hub.hub import from_pretrained, load_checkpoint, push_to_hub, save_pretrained
        from age2hie_hub.models import ModelConfig, build_model

        rows = []
        for arch, arch_args, head in MODELS:
            model = build_model(ModelConfig(arch, arch_args, head)).eval()
            n_params = sum(p.numel() for p in model.parameters())
            folder = Path(tmp) / arch
            t_save, _ = timed(lambda: save_pretrained(model, folder), args.repeats)
            size_mb = (folder / "model.safetensors").stat().st_size / 1e6
            t_load, _ = timed(lambda: load_checkpoint(folder), args.repeats)
            repo = f"bench/{arch}"
            t_push, info = timed(lambda: push_to_hub(folder, repo, token=hub.token), 1)
            cache = Path(tmp) / f"cache-{arch}"
            t_first, _ = timed(lambda: from_pretrained(repo, revision=info.oid, cache_dir=cache), 1)
            t_cached, _ = timed(lambda: from_pretrained(repo, revision=info.oid, cache_dir=cache), args.repeats)
            t_offline, _ = timed(
                lambda: from_pretrained(repo, revision=info.oid, cache_dir=cache, local_files_only=True), args.repeats
            )
            rows.append((arch, n_params / 1e6, size_mb, t_save, t_load, t_push, t_first, t_cached, t_offline))

    header = ("model", "params M", "file MB", "save s", "load s", "push s", "download+load s", "cached s", "offline s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} "
          "(push and first download: 1 run); local test Hub server on 127.0.0.1")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(f"{row[0]} | {row[1]:.2f} | {row[2]:.1f} | " + " | ".join(f"{v:.2f}" for v in row[3:]))


if __name__ == "__main__":
    main()
