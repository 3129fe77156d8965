"""Parameters, build time and forward latency of every registered architecture; prints a table.

    python benchmarks/bench_models.py                       # HIE-sized input 1x1x128x128x64, CPU
    python benchmarks/bench_models.py --shape 1 1 160 192 160 --device cuda --repeat 20

Latency is the median of --repeat forward passes under torch.inference_mode after one warm-up pass.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from age2hie_hub.models import ModelConfig, build_model, list_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=5, default=[1, 1, 128, 128, 64], metavar=("N", "C", "X", "Y", "Z"))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--archs", nargs="*", default=list_models())
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(*args.shape, device=args.device)
    print(f"input {tuple(args.shape)}, width {args.width}, device {args.device}, threads {torch.get_num_threads()}")
    print(f"{'arch':<16}{'params (M)':>12}{'build (s)':>11}{'forward (ms)':>14}{'features':>10}")
    for arch in args.archs:
        start = time.perf_counter()
        model = build_model(ModelConfig(arch, {"width": args.width, "in_channels": args.shape[1]})).eval()
        model.to(args.device)
        build = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters()) / 1e6
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(args.repeat):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        latency = 1000 * statistics.median(times)
        print(f"{arch:<16}{params:>12.2f}{build:>11.2f}{latency:>14.1f}{model.num_features:>10}")


if __name__ == "__main__":
    main()
