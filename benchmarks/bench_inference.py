"""Inference speed: per-stage times, forward share of the machine's peak float32 rate, cold CLI, predict_many.

    python benchmarks/bench_inference.py [--model NAME_OR_FOLDER] [--device cpu|cuda] [--repeats N]
    python benchmarks/bench_inference.py --ort-options    # ONNX Runtime CPU providers, session options, exporters

Without --model a stand-in checkpoint is built with the training default architecture (resnet3d_10,
width 0.25, 2 mm, 64x64x48) and random weights: speed does not depend on the weights. Every backend/batch
configuration runs in a fresh process so that its peak memory (max RSS) is its own. Times are the minimum
over repeats (the least-disturbed run: on a shared machine the median mostly measures the neighbours);
the median is printed too. The load average at start and end is printed: read the table with it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BONBID_SHAPE = (192, 192, 40)  # a BCH-like case: 0.8 x 0.8 mm in-plane, 2.5 mm slices
BONBID_SPACING = (0.8, 0.8, 2.5)
PIPELINES = (("thread", 1), ("thread", 2), ("process", 2))  # predict_many background readers compared
STAND_IN = {"arch": "resnet3d_10", "arch_args": {"in_channels": 1, "width": 0.25}, "head": "outcome"}


def timed(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- set-up -----------------------------------------------------------------------------------------------
def make_inputs(folder: Path, n_scans: int) -> dict[str, str]:
    """BONBID-sized ADC scans (.mha, 1e-6 mm^2/s integers) and one 4-volume DWI (.nii.gz + .bval/.bvec)."""
    import nibabel as nib

    from age2hie_hub.io import Volume, write_volume

    affine = np.diag([*BONBID_SPACING, 1.0])
    affine[:3, 3] = -np.array(BONBID_SHAPE) * np.array(BONBID_SPACING) / 2
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in BONBID_SHAPE], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    # a ~105 x 105 x 85 mm neonatal brain with a CSF rim, inside the 154 x 154 x 100 mm field of view
    adc = np.where(r < 0.62, 1.3e-3, 0.0) + np.where((r >= 0.62) & (r < 0.68), 3.0e-3, 0.0)
    rng = np.random.default_rng(0)
    scans = []
    for i in range(n_scans):
        noisy = adc * (1 + 0.05 * rng.standard_normal(adc.shape))
        path = folder / f"case{i:02d}-ADC_ss.mha"
        write_volume(Volume(np.round(noisy * 1e6).astype(np.float32), affine), path)
        scans.append(str(path))
    s0 = np.where(adc > 0, 1000.0, 0.0)
    bvals = [0, 1000, 1000, 1000]
    dwi = np.stack([s0] + [s0 * np.exp(-1000 * adc) for _ in range(3)], -1).astype(np.float32)
    nib.save(nib.Nifti1Image(np.round(dwi).astype(np.int16), affine), str(folder / "dwi.nii.gz"))
    (folder / "dwi.bval").write_text(" ".join(map(str, bvals)) + "\n")
    (folder / "dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    return {"scans": scans, "dwi": str(folder / "dwi.nii.gz")}


def make_stand_in(folder: Path) -> str:
    import torch

    from age2hie_hub.hub import CheckpointConfig, save_pretrained
    from age2hie_hub.models import ModelConfig, build_model
    from age2hie_hub.preprocess import PreprocessConfig

    torch.manual_seed(0)
    model_config = ModelConfig.from_dict(STAND_IN)
    config = CheckpointConfig(
        model=model_config, preprocess=PreprocessConfig(intensity="adc_fixed", clip=(0.0, 4.0)),
        provenance={"synthetic": True, "training_data": "none: random weights for benchmarking"},
    )
    return str(save_pretrained(build_model(model_config).eval(), folder / "stand-in", config))


def ensure_onnx(model: str) -> None:
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.hub.resolve import resolve_checkpoint
    from age2hie_hub.onnx.export import export_onnx

    folder = resolve_checkpoint(model).folder
    if not (folder / "model.onnx").is_file():
        export_onnx(from_pretrained(model, device="cpu"), folder / "model.onnx")


# -- measurements (each in its own process) ---------------------------------------------------------------
def mlas_matmul_probe(threads: int):
    """A callable timing one 4096^2 float32 MatMul in ONNX Runtime (MLAS): the ceiling of its im2col + GEMM convs."""
    import onnx
    import onnxruntime as ort

    n = 4096
    spec = [onnx.helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, [n, n]) for k in "ABC"]
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["A", "B"], ["C"])], "mm", spec[:2], spec[2:])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {k: rng.standard_normal((n, n), dtype=np.float32) for k in "AB"}

    def mm() -> float:
        start = time.perf_counter()
        session.run(None, feed)
        return 2 * n**3 / (time.perf_counter() - start) / 1e9

    mm()
    return mm


def matmul_probe(device: str):
    """A callable timing one 4096^2 float32 matmul (torch/MKL): the machine's peak rate reference."""
    import torch

    n = 4096
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def mm() -> float:
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        return 2 * n**3 / (time.perf_counter() - start) / 1e9

    mm()
    return mm


def model_gflop(model: str) -> float:
    """Forward FLOPs per scan (convolutions and linear layers; 2 per multiply-add)."""
    import torch

    from age2hie_hub.hub import from_pretrained

    net = from_pretrained(model, device="cpu")
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv3d | torch.nn.Conv2d):
            k = int(np.prod(mod.kernel_size))
            total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, torch.nn.Linear):
            total[0] += 2 * out.numel() * mod.in_features

    for m in net.modules():
        m.register_forward_hook(hook)
    pre = net.checkpoint_config.preprocess
    with torch.inference_mode():
        net(torch.zeros(1, pre.channels, *pre.shape))
    return total[0] / 1e9


def stages(model: str, inputs: dict, repeats: int) -> dict[str, float]:
    """Read, ADC, preprocess for one BONBID-sized scan (torch-free code paths)."""
    from age2hie_hub.dwi import compute_adc
    from age2hie_hub.hub.checkpoint import read_config
    from age2hie_hub.hub.resolve import resolve_checkpoint
    from age2hie_hub.inference.inputs import prepare
    from age2hie_hub.io import read_volume

    config = read_config(resolve_checkpoint(model).folder)
    scan = inputs["scans"][0]
    volume = read_volume(scan)
    dwi = read_volume(inputs["dwi"])
    out = {}
    out["read"] = timed(lambda: read_volume(scan), repeats)
    out["adc"] = timed(lambda: compute_adc(dwi), repeats)
    out["preprocess"] = timed(lambda: prepare(volume, None, config), repeats)
    return out


def forward_run(model: str, backend: str, batch: int, device: str, inputs: dict, repeats: int,
                openvino: bool | None = None) -> dict:
    """Forward and end-to-end times for one backend at one batch size, in this (fresh) process."""
    from age2hie_hub.inference import Predictor
    from age2hie_hub.inference.predictor import default_workers

    predictor = Predictor.from_pretrained(model, backend=backend, device=device, openvino=openvino)
    prepared = predictor.prepare(inputs["scans"][0])
    x = np.stack([prepared.array] * batch)
    predictor.backend.run(x)  # warm-up (and, for torch on CPU, the frozen graph's build on the 2nd call)
    predictor.backend.run(x)
    predictor.backend.run(x)
    # The peak is probed between forward runs, in this process: on a shared machine both then see the
    # same neighbours, and the best of each is the least disturbed.
    probe = matmul_probe(device)
    on_mlas = predictor.backend.device == "CPUExecutionProvider"
    mlas = mlas_matmul_probe(os.cpu_count() or 1) if on_mlas else None
    peaks, mlas_peaks, forwards = [], [], []
    for _ in range(repeats):
        peaks.append(probe())
        if mlas is not None:
            mlas_peaks.append(mlas())
        # One untimed forward first: a probe's 200 MB evicts the caches and its thread pool may still spin
        # (ONNX Runtime's and MKL's pools are separate), which would charge the probe to the forward.
        predictor.backend.run(x)
        forwards.append(timed(lambda: predictor.backend.run(x), 1)[0])
    fwd = (min(forwards), statistics.median(forwards))
    result = {"forward": [t / batch for t in fwd], "device": predictor.backend.device, "peak": max(peaks),
              "mlas_peak": max(mlas_peaks, default=None)}
    if batch == 1:
        result["total"] = timed(lambda: predictor.predict(inputs["scans"][0]), repeats)
    else:
        result["pipeline"] = {}
        for executor, workers in PIPELINES:
            predictor.predict_many(inputs["scans"], batch_size=batch, workers=workers, executor=executor, progress=False)
            st = predictor.last_stats
            result["pipeline"][f"{executor}x{workers}"] = {
                "per_scan": st.wall_s / st.scans, "busy": st.forward_busy, "steady": st.steady_busy,
                "startup": st.startup_s,
            }
        best = min(result["pipeline"].values(), key=lambda r: r["per_scan"])
        result["total"] = (best["per_scan"], best["per_scan"])
        result["busy"] = result["pipeline"].get(f"threadx{default_workers()}", best)["busy"]  # the default set-up
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def ort_options(folder: Path, rounds: int) -> None:
    """ONNX Runtime CPU forward under session options and exporters, interleaved so neighbours hit all alike."""
    import onnxruntime as ort

    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import export_onnx
    from age2hie_hub.onnx.providers import openvino_available, openvino_cpu_device, physical_cores

    model = from_pretrained(str(folder), device="cpu")
    for exporter in ("dynamo", "torchscript"):
        export_onnx(model, folder / f"{exporter}.onnx", exporter=exporter)
    cores, level = physical_cores(), ort.GraphOptimizationLevel
    configs = {  # name: (file, threads, SessionOptions attributes, session config entries, OpenVINO config or None)
        "ORT CPU: ENABLE_ALL, threads=cores": ("dynamo", cores, {}, {}, None),
        "ORT CPU: ENABLE_EXTENDED (no NCHWc)": ("dynamo", cores, {"graph_optimization_level": level.ORT_ENABLE_EXTENDED}, {}, None),
        "ORT CPU: ENABLE_BASIC (no Conv+Relu)": ("dynamo", cores, {"graph_optimization_level": level.ORT_ENABLE_BASIC}, {}, None),
        "ORT CPU: enable_mem_pattern=False": ("dynamo", cores, {"enable_mem_pattern": False}, {}, None),
        "ORT CPU: enable_cpu_mem_arena=False": ("dynamo", cores, {"enable_cpu_mem_arena": False}, {}, None),
        "ORT CPU: set_denormal_as_zero": ("dynamo", cores, {}, {"session.set_denormal_as_zero": "1"}, None),
        "ORT CPU: allow_spinning=0": ("dynamo", cores, {}, {"session.intra_op.allow_spinning": "0"}, None),
        "ORT CPU: inter_op=2, ORT_PARALLEL": ("dynamo", cores, {"inter_op_num_threads": 2,
                                                               "execution_mode": ort.ExecutionMode.ORT_PARALLEL}, {}, None),
        "ORT CPU: intra_op_num_threads=1": ("dynamo", 1, {}, {}, None),
        "ORT CPU: torchscript exporter": ("torchscript", cores, {}, {}, None),
    }
    if openvino_available():
        f32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(cores)}
        configs.update({
            "OpenVINO: f32, threads=cores (shipped)": ("dynamo", cores, {}, {}, f32),
            "OpenVINO: f32, 1 thread": ("dynamo", 1, {}, {}, {**f32, "INFERENCE_NUM_THREADS": "1"}),
            "OpenVINO: f32, THROUGHPUT hint": ("dynamo", cores, {}, {}, {**f32, "PERFORMANCE_HINT": "THROUGHPUT"}),
            "OpenVINO: f32, torchscript exporter": ("torchscript", cores, {}, {}, f32),
            "OpenVINO: its default precision": ("dynamo", cores, {}, {}, {"INFERENCE_NUM_THREADS": str(cores)}),
        })
    batches = (1, 8, 16)
    sessions = {}
    for name, (file, threads, attrs, entries, openvino) in configs.items():
        options = ort.SessionOptions()
        options.graph_optimization_level = level.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        for key, value in attrs.items():
            setattr(options, key, value)
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        providers = ["CPUExecutionProvider"]
        if openvino is not None:
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            options.add_provider_for_devices([openvino_cpu_device()[0]], {"load_config": json.dumps({"CPU": openvino})})
            providers = None
        sessions[name] = ort.InferenceSession(str(folder / f"{file}.onnx"), options, providers=providers)
    shape = model.checkpoint_config.preprocess.shape
    xs = {b: np.random.default_rng(0).standard_normal((b, 1, *shape), dtype=np.float32) for b in batches}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in sessions for b in batches}
    outputs = {}
    for name, session in sessions.items():  # warm-up, and each configuration's output for the precision column
        for b in batches:
            outputs[name] = session.run(None, {"volume": xs[b]})[0]
    reference = outputs[next(iter(sessions))]
    for _ in range(rounds):
        for name, session in sessions.items():
            for b in batches:
                times[name, b].append(timed(lambda: session.run(None, {"volume": xs[b]}), 2)[0] / b)
    gflop = model_gflop(str(folder))
    mkl, mlas = matmul_probe("cpu"), mlas_matmul_probe(cores)
    mkl_peak, mlas_peak = max(mkl() for _ in range(7)), max(mlas() for _ in range(7))
    print(f"{gflop:.2f} GFLOP per scan; peak 4096^2 matmul: torch/MKL {mkl_peak:.0f}, ORT/MLAS {mlas_peak:.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("ms per scan, min (median) over rounds; GFLOP/s and % of the MKL peak at the best batch")
    print("|diff|: max difference in probability from the first row (batch 16); 'ORT CPU' = ONNX Runtime's own kernels")
    print(f"{'configuration':<40} " + " ".join(f"{'batch ' + str(b):>13}" for b in batches)
          + "  GFLOP/s  % peak   |diff|")
    for name in sessions:
        cells = [f"{min(times[name, b]) * 1e3:5.1f} ({statistics.median(times[name, b]) * 1e3:5.1f})" for b in batches]
        best = min(min(times[name, b]) for b in batches)
        diff = float(np.abs(outputs[name] - reference).max())
        print(f"{name:<40} " + " ".join(cells) + f"  {gflop / best:7.1f}  {100 * gflop / best / mkl_peak:5.0f}%  {diff:7.1e}")
    conv_probe(cores)


def conv_probe(threads: int) -> None:
    """One ONNX Conv, 3D against 2D on the same data as slices: MLAS has blocked (NCHWc) kernels for 2D only."""
    import onnx
    import onnxruntime as ort

    def rate(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> float:
        rng = np.random.default_rng(0)
        weight = onnx.numpy_helper.from_array(0.01 * rng.standard_normal(w_shape, dtype=np.float32), "W")
        node = onnx.helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1] * (2 * (len(w_shape) - 2)))
        graph = onnx.helper.make_graph(
            [node], "conv", [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, list(x_shape))],
            [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], initializer=[weight])
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=9)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = rng.standard_normal(x_shape, dtype=np.float32)
        session.run(None, {"X": x})
        flop = 2 * np.prod(x_shape) * w_shape[0] * np.prod(w_shape[2:])  # stride 1, same padding
        return flop / timed(lambda: session.run(None, {"X": x}), 7)[0] / 1e9

    n, d, h, w = 8, 48, 32, 32  # the stand-in's first stage at batch 8
    for c in (16, 32):
        r3 = rate((n, c, d, h, w), (c, c, 3, 3, 3))
        r2 = rate((n * d, c, h, w), (c, c, 3, 3))
        print(f"one Conv {c}->{c} on {n}x{d}x{h}x{w}: 3x3x3 (im2col + GEMM) {r3:.0f} GFLOP/s; "
              f"3x3 2D on the same data as {n * d} slices (NCHWc) {r2:.0f} GFLOP/s")


def cold_cli(model: str, scan: str, backend: str, runs: int, flags: list[str]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "age2hie_hub", scan, "--model", model, "--backend", backend, "-q", "--device", "cpu",
             *flags], check=True, capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times


def worker(args: argparse.Namespace) -> None:
    inputs = json.loads(args.inputs)
    if args.worker == "peak":
        out = {"model_gflop": model_gflop(args.model)}
    elif args.worker == "stages":
        out = stages(args.model, inputs, args.repeats)
    else:
        backend, batch, cpu = args.worker.split(":")  # cpu: "openvino", "ort-cpu" or "" (the default choice)
        openvino = {"openvino": True, "ort-cpu": False}.get(cpu)
        out = forward_run(args.model, backend, int(batch), args.device, inputs, args.repeats, openvino)
    print(json.dumps(out))


def spawn(args: argparse.Namespace, what: str, inputs: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", what, "--model", args.model, "--device", args.device,
           "--repeats", str(args.repeats), "--inputs", json.dumps(inputs)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint to measure (default: a random-weight stand-in)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scans", type=int, default=32, help="scans for the predict_many run")
    p.add_argument("--ort-options", action="store_true", help="compare ONNX Runtime CPU session options")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    if args.ort_options:
        with tempfile.TemporaryDirectory(prefix="bench-ort-") as tmp:
            return ort_options(Path(make_stand_in(Path(tmp))), rounds=max(3, args.repeats))

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp_path = Path(tmp)
        load0 = os.getloadavg()
        inputs = make_inputs(tmp_path, args.scans)
        args.model = args.model or make_stand_in(tmp_path)
        ensure_onnx(args.model)
        peak = spawn(args, "peak", inputs)
        stage = spawn(args, "stages", inputs)
        from age2hie_hub.onnx.providers import openvino_available

        # On CPU the ONNX backend is measured on both of its providers: OpenVINO (when installed) and ORT's own.
        rows = ["torch", "onnx"] if args.device == "cuda" else \
            ["torch", *(["onnx:openvino"] if openvino_available() else []), "onnx:ort-cpu"]
        runs = {(row, n): spawn(args, "{}:{}:{}".format(row.partition(":")[0], n, row.partition(":")[2]), inputs)
                for row in rows for n in (1, 8)}
        flags = {"onnx": [], "onnx --no-openvino": ["--no-openvino"], "torch": []}
        if not openvino_available():
            del flags["onnx --no-openvino"]
        cold = {b: cold_cli(args.model, inputs["scans"][0], b.split()[0], 3, flags[b]) for b in flags}
        load1 = os.getloadavg()

    ms = lambda t: f"{t * 1000:7.0f}"  # noqa: E731
    gf = peak["model_gflop"]
    peak_rate = max(r["peak"] for r in runs.values())
    print(f"model {args.model}: {gf:.2f} GFLOP per scan; input BONBID-sized ADC {BONBID_SHAPE} at {BONBID_SPACING} mm")
    print(f"peak float32 rate (4096^2 matmul, torch/MKL, {os.cpu_count()} cores), best probe: {peak_rate:.1f} GFLOP/s; "
          "'% peak' uses the probe taken between that row's forward runs")
    print(f"load average at start {load0[0]:.1f}, at end {load1[0]:.1f} ({os.cpu_count()} cores)\n")
    print("per-scan times in ms, min (median) over repeats")
    header = f"{'backend':<7} {'batch':>5} {'device':<25} {'read':>7} {'ADC':>7} {'prep':>7} {'forward':>15} " \
             f"{'total':>15} {'GFLOP/s':>8} {'% peak':>6} {'busy':>5} {'max RSS':>8}"
    print(header)
    print("-" * len(header))
    for (backend, batch), r in runs.items():
        backend = backend.split(":")[0]
        fwd_min, fwd_med = r["forward"]
        tot_min, tot_med = r["total"]
        rate = gf / fwd_min
        row_peak = r["peak"]
        busy = f"{r['busy'] * 100:4.0f}%" if "busy" in r else "    -"
        print(f"{backend:<7} {batch:>5} {r['device']:<25} {ms(stage['read'][0])} {ms(stage['adc'][0])} "
              f"{ms(stage['preprocess'][0])} {ms(fwd_min)} ({ms(fwd_med).strip():>5}) {ms(tot_min)} ({ms(tot_med).strip():>5}) "
              f"{rate:8.1f} {100 * rate / row_peak:5.0f}% {busy} {r['peak_rss_mb']:6.0f}MB  (peak {row_peak:.0f}"
              + (f"; MLAS matmul {r['mlas_peak']:.0f}, {100 * rate / r['mlas_peak']:.0f}% of it)" if r.get("mlas_peak") else ")"))
    print("\npredict_many pipeline (batch 8, %d scans): per-scan wall ms / forward busy / busy after the first batch"
          % args.scans)
    for (backend, batch), r in runs.items():
        for name, pr in r.get("pipeline", {}).items():
            label = f"{backend.split(':')[0]} {r['device'].replace('ExecutionProvider', '')}"
            print(f"  {label:<16} {name:<10} {pr['per_scan'] * 1000:6.0f} ms  {pr['busy'] * 100:4.0f}%  "
                  f"{pr['steady'] * 100:4.0f}%  (first batch ready after {pr['startup']:.2f} s)")
    print("\nread: read_volume of the .mha; ADC: compute_adc of a 4-volume DWI (not part of 'total' for ADC input);")
    print("prep: unit check + preprocess of a loaded volume; total: predict(path) at batch 1, predict_many of "
          f"{args.scans} scans per scan at batch 8 (best reader set-up); busy: forward share of predict_many's wall time "
          "(the default reader threads, one per core up to 4).")
    for backend, times in cold.items():
        print(f"cold `age2hie-predict --backend {backend}` on one scan: " + ", ".join(f"{t:.2f}" for t in times) + " s")


if __name__ == "__main__":
    main()
