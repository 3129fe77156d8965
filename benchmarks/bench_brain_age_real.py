"""The bundled brain-age model on real whole-head T1 (IXI): per-scan time and peak memory of age2hie-predict
(cold CLI, and predict_many throughput), and the training throughput of its recipe, each next to the float32
matmul peak measured in the same run. Prints tables (not a test).

    python benchmarks/bench_brain_age_real.py [--data ../shared/data] [--n 16] [--runs 3]

Needs the shared data folder (``../shared/data`` beside the checkout, or ``--data``); exits cleanly without it.
Every measurement that reports a peak memory runs in its own process (max RSS is per process):

- cold CLI: ``python -m age2hie_hub SCAN --model brain-age --backend B -q`` on one real scan (import, hash
  check of the bundled folder, model load, read, preprocessing, forward), wall time and the child's max RSS;
- predict_many: ``Predictor.predict_many`` over ``--n`` real scans in one warm process (read and preprocess in
  background threads, batches of 4), seconds per scan, the forward's share of the wall time and max RSS;
- training: the recipe's network (configs/bundle_brain_age.yaml: architecture, grid, batch, augmentation, one
  thread) on ``--n`` scans preprocessed as training does; volumes/s and the achieved GFLOP/s
  (3 x forward FLOPs per volume: forward + backward) as a share of the one-thread matmul peak.

The peak is a 4096^2 float32 torch matmul (MKL), probed several times in the same process as the measurement
it is compared with, best probe kept; on a shared machine read the tables with the load average printed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import matmul_probe, model_gflop, peak_rss_mb  # noqa: E402  (the same probes, one copy)

REPO = Path(__file__).resolve().parents[1]
MODEL = os.environ.get("BENCH_BRAIN_AGE_MODEL", "brain-age")  # --model sets it for the worker processes too


def real_scans(data: Path, n: int) -> list[tuple[str, float]]:
    root = data / "ixi_t1"
    with open(root / "participants.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["age"] not in ("", "n/a")]
    out = []
    for r in rows[:n]:
        pid = r["participant_id"]
        out.append((str(root / pid / "anat" / f"{pid}_T1w.nii.gz"), float(r["age"])))
    return out


def peak(threads: int, probes: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    probe = matmul_probe("cpu")
    return max(probe() for _ in range(probes))


def cold_cli(scan: str, backend: str, runs: int) -> dict:
    """Wall time and max RSS of fresh `age2hie-predict` processes (os.wait4 gives each child's own rusage;
    its max RSS counts the pages it was forked with, so call this before the parent loads torch)."""
    times, rss = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "age2hie_hub", scan, "--model", MODEL, "--backend", backend,
                                 "-q", "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        if status != 0:
            raise RuntimeError(f"age2hie-predict failed: {proc.stderr.read().decode()[-2000:]}")
        rss.append(usage.ru_maxrss / 1024)
    return {"min_s": min(times), "median_s": float(np.median(times)), "max_rss_mb": max(rss)}


def worker_many(scans: list[str], backend: str) -> dict:
    from age2hie_hub.inference import Predictor

    predictor = Predictor.from_pretrained(MODEL, backend=backend, device="cpu")
    predictor.predict(scans[0])  # warm-up: the first call builds what later calls reuse
    start = time.perf_counter()
    preds = predictor.predict_many(scans, batch_size=4, progress=False)
    wall = time.perf_counter() - start
    st = predictor.last_stats
    return {"per_scan_s": wall / len(scans), "busy": st.forward_busy, "ages": [p.age for p in preds],
            "peak": peak(os.cpu_count() or 1), "max_rss_mb": peak_rss_mb()}


def worker_train(scans: list[str], ages: list[float], epochs: int) -> dict:
    import torch

    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.preprocess.config import PreprocessConfig
    from age2hie_hub.train.augment import AugmentConfig
    from age2hie_hub.train.cache import PreprocessCache
    from age2hie_hub.train.config import PretrainConfig, load_config
    from age2hie_hub.train.data import ArrayDataset
    from age2hie_hub.train.loop import fit
    from age2hie_hub.train.objective import Objective

    cfg = load_config(REPO / "configs" / "bundle_brain_age.yaml", PretrainConfig)
    torch.set_num_threads(cfg.loop.threads or 1)
    with tempfile.TemporaryDirectory() as tmp:
        cache = PreprocessCache(tmp, PreprocessConfig.from_dict(cfg.preprocess))
        files = cache.warm([[s] for s in scans], workers=0)
        mc = ModelConfig.from_dict({**cfg.model, "head_args": {"offset": float(np.mean(ages)), "scale": 15.0}})
        torch.manual_seed(0)
        model = build_model(mc)
        loop = type(cfg.loop)(**{**cfg.loop.to_dict(), "epochs": epochs, "progress": False})
        res = fit(model, Objective("age_regression"), ArrayDataset(files, np.asarray(ages), AugmentConfig(**cfg.augment.to_dict())),
                  None, loop, seed=0)
    last = res.history[-1]
    return {"volumes_per_s": len(scans) / last["seconds"], "s_per_step": last["seconds"] / last["steps"],
            "data_wait": last["data_wait_share"], "peak_1thread": peak(cfg.loop.threads or 1),
            "threads": cfg.loop.threads or 1, "batch": cfg.loop.batch_size, "max_rss_mb": peak_rss_mb()}


def spawn(what: str, args: argparse.Namespace, payload: dict) -> dict:
    run = subprocess.run([sys.executable, __file__, "--worker", what, "--payload", json.dumps(payload)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--model", default=MODEL, help="bundled name or checkpoint folder (default brain-age)")
    p.add_argument("--n", type=int, default=16, help="real scans for predict_many and training")
    p.add_argument("--runs", type=int, default=3, help="cold CLI runs per backend")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (the last is reported)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--payload", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.model != MODEL:  # re-run with the model in the environment, so spawned workers see it too
        os.environ["BENCH_BRAIN_AGE_MODEL"] = args.model
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])
    if args.worker:
        payload = json.loads(args.payload)
        if args.worker == "train":
            out = worker_train(payload["scans"], payload["ages"], payload["epochs"])
        elif args.worker == "gflop":
            out = {"gflop": model_gflop(MODEL)}
        else:
            out = worker_many(payload["scans"], args.worker.split(":")[1])
        print(json.dumps(out))
        return
    if not (args.data / "ixi_t1" / "participants.tsv").is_file():
        print(f"# bench_brain_age_real: no IXI data at {args.data / 'ixi_t1'}; pass --data. Nothing measured.")
        return
    pairs = real_scans(args.data, args.n)
    scans, ages = [s for s, _ in pairs], [a for _, a in pairs]
    load0 = os.getloadavg()
    # Cold CLI first, while this process is small: a child's max RSS includes what it was forked from.
    cold = {backend: cold_cli(scans[0], backend, args.runs) for backend in ("onnx", "torch")}
    import torch

    gflop = spawn("gflop", args, {})["gflop"]
    peak_all = peak(os.cpu_count() or 1)
    print(f"# bench_brain_age_real: {len(scans)} real IXI T1 scans (120x120x90 at 2 mm, uint8 NIfTI), model {MODEL}, "
          f"torch {torch.__version__}, {os.cpu_count()} cores; load average at start {load0[0]:.1f}")
    print(f"forward: {gflop:.3f} GFLOP per scan; matmul peak (4096^2 float32, torch/MKL): {peak_all:.0f} GFLOP/s "
          f"with {os.cpu_count()} threads")
    print()
    print(f"{'age2hie-predict':<34} {'s/scan':>8} {'median':>8} {'max RSS':>9} {'fwd GFLOP/s':>12} {'% peak':>7}")
    for backend, c in cold.items():
        print(f"{'cold CLI, ' + backend:<34} {c['min_s']:8.2f} {c['median_s']:8.2f} {c['max_rss_mb']:7.0f}MB "
              f"{'':>12} {'':>7}")
    for backend in ("onnx", "torch"):
        m = spawn(f"many:{backend}", args, {"scans": scans})
        rate = gflop / m["per_scan_s"]
        print(f"{'predict_many x' + str(len(scans)) + ', ' + backend:<34} {m['per_scan_s']:8.3f} {'':>8} "
              f"{m['max_rss_mb']:7.0f}MB {rate:12.2f} {100 * rate / m['peak']:6.1f}%   (forward busy "
              f"{100 * m['busy']:.0f} % of the wall; peak in that process {m['peak']:.0f})")
    t = spawn("train", args, {"scans": scans, "ages": ages, "epochs": args.epochs})
    train_rate = 3 * gflop * t["volumes_per_s"]
    print()
    print(f"{'training (recipe of bundle_brain_age)':<40} {'vol/s':>7} {'s/step':>7} {'data wait':>9} "
          f"{'GFLOP/s':>8} {'% 1-thread peak':>15} {'max RSS':>8}")
    print(f"{'threads ' + str(t['threads']) + ', batch ' + str(t['batch']) + ', augmentation':<40} "
          f"{t['volumes_per_s']:7.2f} {t['s_per_step']:7.2f} {100 * t['data_wait']:8.1f}% {train_rate:8.2f} "
          f"{100 * train_rate / t['peak_1thread']:14.1f}% {t['max_rss_mb']:6.0f}MB   (1-thread peak {t['peak_1thread']:.0f})")
    load1 = os.getloadavg()
    print(f"\nload average at end {load1[0]:.1f} (shared machine: other jobs ran during the measurement)")


if __name__ == "__main__":
    main()
