"""Training throughput per architecture at the default input size, and the share of step time spent waiting
on data (goal: < 10 % once the preprocessing cache is warm).

Cached arrays are written as the training cache writes them (float16 .npy); the loader reads them lazily in
worker processes and augments them, exactly as in training. Prints a table; nothing is timed in tests.

    python benchmarks/bench_train.py                       # every architecture, default input size
    python benchmarks/bench_train.py --archs resnet3d_18 --n 64 --workers 2 --threads 1
"""
from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from age2hie_hub.models import ModelConfig, build_model, list_models
from age2hie_hub.preprocess.config import PreprocessConfig
from age2hie_hub.train.augment import AugmentConfig
from age2hie_hub.train.data import ArrayDataset
from age2hie_hub.train.loop import LoopConfig, fit
from age2hie_hub.train.objective import Objective


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="*", default=list_models())
    p.add_argument("--shape", nargs=3, type=int, default=list(PreprocessConfig().shape), help="input grid (default: PreprocessConfig's)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1 = the published networks)")
    p.add_argument("--n", type=int, default=16, help="cached volumes per epoch")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="the first epoch is warm-up; the last is reported")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args()

    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.n):
            f = Path(tmp) / f"{i}.npy"
            np.save(f, rng.normal(0, 1, (1, *shape)).astype(np.float16))
            files.append(f)
        ages = rng.uniform(20, 80, args.n)
        aug = AugmentConfig(enabled=not args.no_augment)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"# bench_train: input {shape}, width {args.width}, {args.n} volumes/epoch, batch {args.batch_size}, "
              f"{args.workers} workers, threads {args.threads or torch.get_num_threads()}, device {device}, "
              f"augment {aug.enabled}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
        print(f"{'arch':<16} {'params (M)':>10} {'volumes/s':>10} {'s/step':>8} {'data wait':>10}")
        for arch in args.archs:
            arch_args = {"width": args.width}
            torch.manual_seed(0)
            model = build_model(ModelConfig(arch, arch_args, "age_regression", {"offset": 50.0, "scale": 15.0}))
            cfg = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
                             threads=args.threads, progress=False, schedule="constant")
            res = fit(model, Objective("age_regression"), ArrayDataset(files, ages, aug), None, cfg, seed=0)
            last = res.history[-1]
            params = sum(q.numel() for q in model.parameters()) / 1e6
            print(f"{arch:<16} {params:>10.2f} {args.n / last['seconds']:>10.2f} "
                  f"{last['seconds'] / last['steps']:>8.2f} {100 * last['data_wait_share']:>9.1f}%", flush=True)
            del model, res


if __name__ == "__main__":
    main()
