"""This package against the pipeline a user would build with MONAI, on the same model files, in one run.

    python benchmarks/bench_vs_monai.py [--n-t1 20] [--n-adc 68] [--repeats 3] [--synthetic] [--data DIR]
                                        [--antialias {saved,on,off}]

MONAI is an optional benchmark dependency, never one of the package; install it beside the pinned torch with

    python -m pip install -c constraints.txt monai==1.6.1

(constraints.txt pins torch and numpy, so nothing else moves; check with `python -m pip check`). Without
MONAI the script says so and exits with code 2.

The MONAI pipeline: LoadImaged -> EnsureChannelFirstd -> Orientationd("RAS") -> Spacingd(the model's spacing,
bilinear) -> CropForegroundd(> the model's foreground threshold) -> ResizeWithPadOrCropd(the model's shape)
-> NormalizeIntensityd(nonzero=True) -> the same network: the checkpoint's weights in eager torch, or the same
ONNX Runtime session ours runs (so the ONNX rows compare everything but the runtime). MONAI reads MetaImage
only through the `itk` package; here LoadImaged gets a small SimpleITK reader instead (the library this package
reads MetaImage with), so both sides pay the same I/O. NIfTI goes through MONAI's own nibabel reader.

Rows (ratio = MONAI time / our time; above 1 we are faster):
- warm predict: one scan from its path to the model's output, after warm-up, per scan; min over repeats,
  median over scans; ours and MONAI's interleaved scan by scan so both see the same neighbours, taking turns
  at going first (so each side's best time need not follow the other side's call: torch's OpenMP threads spin
  for a while after MONAI's transforms, holding a core; ours do not spin). Every row alternates the same way.
- ADC crop + normalise (first --n-crop scans): from the volume in RAS (ours: at its own resolution; MONAI: after Spacingd), the
  foreground box, the crop to the model's box and the intensity normalisation (ours: the mask, the box and the
  output grid, then the z-score on the resampled box; resampling is in neither).
- ADC preprocess in memory: everything after reading (reorient, resample, crop, normalise); ours as predict()
  runs it for a scan read from a file (on `_threads.scan_threads(SCAN_THREADS)`, with `assume_finite`: the
  reader has made the voxels finite), MONAI's on torch's threads.
- throughput: every ADC scan, predict_many(batch_size=8) against a MONAI DataLoader (batch 8, 2 workers).
- cold CLI: a fresh process predicting one ADC scan (`age2hie-predict SCAN --backend ...`) against a fresh
  process that imports MONAI, builds the transforms and the network and predicts the same scan.

Scans: real ones from ../shared/data when present (IXI T1 `ixi_t1/*/anat/*_T1w.nii.gz`, BONBID-HIE ADC
`bonbid2023/1ADC_ss/*.mha`), else (or with --synthetic) synthetic ones written to a temporary folder.
Models: the package's bundled `brain-age` (T1) and `age2hie` (ADC) checkpoints, read from the package. With
--antialias on/off the ADC model runs from a temporary copy whose config.json sets `preprocess.antialias` so
(same weight files): a bundled config.json written before the field existed reads as off, and "on" is how the
age2hie model rebuilt with today's defaults (configs/bundle_age2hie.yaml) preprocesses, since that key is
the only difference between the two configs. The T1 rows always use the bundled brain-age config.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import logging
import shutil
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MONAI_INSTALL = "python -m pip install -c constraints.txt monai==1.6.1  (from the repository root)"
T1_MODEL, ADC_MODEL = "brain-age", "age2hie"


# -- scans ---------------------------------------------------------------------------------------------------
def find_scans(data: Path, synthetic: bool, n_t1: int, n_adc: int, tmp: Path) -> tuple[list[str], list[str], str]:
    t1 = sorted(str(p) for p in (data / "ixi_t1").glob("*/anat/*_T1w.nii.gz")) if not synthetic else []
    adc = sorted(str(p) for p in (data / "bonbid2023" / "1ADC_ss").glob("*.mha")) if not synthetic else []
    if t1 and adc:
        return t1[:n_t1], adc[:n_adc], f"real: IXI T1 and BONBID-HIE ADC from {data}"
    from age2hie_hub.synth import make_brain_age_cohort, make_hie_cohort

    t1_root = make_brain_age_cohort(tmp / "t1", n=n_t1, seed=1, workers=1).root
    adc_root = make_hie_cohort(tmp / "hie", n=n_adc, seed=2, workers=1).root
    t1 = sorted(str(p) for p in t1_root.rglob("*_T1w.nii.gz"))
    adc = sorted(str(p) for p in adc_root.rglob("*ADC*.mha")) or sorted(str(p) for p in adc_root.rglob("*adc*.nii.gz"))
    return t1[:n_t1], adc[:n_adc], "SYNTHETIC (no real scans found, or --synthetic): age2hie_hub.synth cohorts"


# -- the MONAI pipeline ----------------------------------------------------------------------------------------
def simpleitk_reader():
    """A MONAI ImageReader on SimpleITK for .mha/.mhd/.nrrd (MONAI's own needs the `itk` package)."""
    import SimpleITK as sitk
    from monai.data import ImageReader

    flip = np.diag([-1.0, -1.0, 1.0])  # ITK's LPS -> RAS

    class SimpleITKReader(ImageReader):
        def verify_suffix(self, filename) -> bool:
            names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
            return all(str(n).lower().endswith((".mha", ".mhd", ".nrrd", ".nhdr")) for n in names)

        def read(self, data, **kwargs):
            (name,) = [data] if isinstance(data, (str, os.PathLike)) else list(data)
            return sitk.ReadImage(str(name))

        def get_data(self, img):
            array = sitk.GetArrayFromImage(img).T  # (x, y, z), as MONAI's ITKReader returns it
            affine = np.eye(4)
            direction = np.asarray(img.GetDirection()).reshape(3, 3)
            affine[:3, :3] = flip @ direction @ np.diag(img.GetSpacing())
            affine[:3, 3] = flip @ np.asarray(img.GetOrigin())
            meta = {"affine": affine, "original_affine": affine.copy(), "spatial_shape": np.asarray(array.shape),
                    "original_channel_dim": float("nan"), "space": "RAS"}
            return array, meta

    return SimpleITKReader()


def reader_for(path: str):
    """MONAI's nibabel reader for NIfTI; the SimpleITK one for MetaImage/NRRD."""
    return "NibabelReader" if path.lower().endswith((".nii", ".nii.gz")) else simpleitk_reader()


def monai_steps(pre, reader):
    """(load, geometry, crop_normalise) MONAI dict transforms for a PreprocessConfig (1 channel, z-score)."""
    from monai.transforms import (
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ResizeWithPadOrCropd,
        Spacingd,
    )

    if pre.channels != 1 or pre.intensity != "zscore":
        raise SystemExit(f"the MONAI pipeline here covers 1-channel z-score models; this one is {pre.channels} "
                         f"channel(s), intensity {pre.intensity!r}")
    threshold = float(pre.foreground_threshold)
    load = [LoadImaged("image", reader=reader, image_only=True), EnsureChannelFirstd("image")]
    geometry = [Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=tuple(pre.spacing), mode="bilinear")]
    crop = [CropForegroundd("image", source_key="image", select_fn=lambda x: x > threshold)] if pre.crop != "fov" else []
    crop += [ResizeWithPadOrCropd("image", spatial_size=tuple(pre.shape)), NormalizeIntensityd("image", nonzero=True)]
    return load, geometry, crop


class MonaiPipeline:
    def __init__(self, name: str, backend, scan: str) -> None:
        import torch
        from monai.transforms import Compose

        from age2hie_hub.hub import load_checkpoint, read_config
        from age2hie_hub.hub.resolve import resolve_checkpoint

        folder = resolve_checkpoint(name).folder
        self.config = read_config(folder)
        load, geometry, crop = monai_steps(self.config.preprocess, reader_for(scan))
        self.transform = Compose(load + geometry + crop)
        self.load, self.geometry, self.crop = Compose(load), Compose(geometry), Compose(crop)
        self.net = load_checkpoint(folder).eval()
        self.onnx = backend  # our ONNX Runtime backend object, for the ONNX rows
        self.torch = torch

    def forward(self, batch: np.ndarray | object, onnx: bool) -> dict[str, np.ndarray]:
        if onnx:
            return self.onnx.run(np.asarray(batch, dtype=np.float32))
        with self.torch.inference_mode():
            out = self.net.predict_outputs(self.net(self.torch.as_tensor(batch)))
        return {k: v.numpy() for k, v in out.items()}

    def predict(self, path: str, onnx: bool) -> dict[str, np.ndarray]:
        image = self.transform({"image": path})["image"]
        return self.forward(image.as_tensor()[None], onnx)


def output_value(out: dict[str, np.ndarray]) -> float:
    return float(np.ravel(out["probability"] if "probability" in out else out["age"])[0])


# -- measurements --------------------------------------------------------------------------------------------
def matmul_peak() -> float:
    """Best of three 4096^2 float32 torch.mm (GFLOP/s): the machine's rate in this run."""
    import torch

    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _turns(r: int) -> tuple[str, str]:
    """Which side runs first in repeat ``r``: they take turns (ours, MONAI), (MONAI, ours), ..., so that each side's
    best time is not always the one right after the other side's call. Torch's OpenMP threads spin for a while
    after MONAI's transforms and would hold a core during our next call; our threads do not spin."""
    return ("ours", "monai") if r % 2 == 0 else ("monai", "ours")


def warm_predict(name: str, backend: str, scans: list[str], repeats: int) -> tuple[float, float, list, list]:
    """(ours ms, MONAI ms, our outputs, MONAI outputs): per scan min over repeats, median over scans."""
    from age2hie_hub.inference import Predictor

    ours = Predictor.from_pretrained(name, backend=backend, device="cpu")
    monai = MonaiPipeline(name, ours.backend if backend == "onnx" else None, scans[0])
    onnx = backend == "onnx"
    for path in scans[:2]:  # warm-up (our torch backend builds its frozen graph on the second call of a shape)
        for _ in range(2):
            ours.predict(path)
            monai.predict(path, onnx)
    t_ours, t_monai, v_ours, v_monai = [], [], [], []
    for path in scans:
        a, b = [], []
        for r in range(repeats):
            for side in _turns(r):
                start = time.perf_counter()
                if side == "ours":
                    prediction = ours.predict(path)
                    a.append(time.perf_counter() - start)
                else:
                    out = monai.predict(path, onnx)
                    b.append(time.perf_counter() - start)
        t_ours.append(min(a))
        t_monai.append(min(b))
        v_ours.append(prediction.probability if prediction.probability is not None else prediction.age)
        v_monai.append(output_value(out))
    return 1e3 * statistics.median(t_ours), 1e3 * statistics.median(t_monai), v_ours, v_monai


def crop_rows(scans: list[str], repeats: int, model: str = ADC_MODEL) -> tuple[tuple[float, float], tuple[float, float]]:
    """((ours, MONAI) ms for crop + normalise, (ours, MONAI) ms for the whole preprocessing in memory)."""
    from age2hie_hub._threads import scan_threads
    from age2hie_hub.dwi import adc_to_mm2s
    from age2hie_hub.hub import read_config
    from age2hie_hub.inference.predictor import SCAN_THREADS
    from age2hie_hub.hub.resolve import resolve_checkpoint
    from age2hie_hub.io import read_volume
    from age2hie_hub.preprocess import preprocess, reorient_to_ras
    from age2hie_hub.preprocess.crop import foreground_bounds, fov_center, output_grid
    from age2hie_hub.preprocess.intensity import normalize
    from age2hie_hub.preprocess.pipeline import _foreground

    config = read_config(resolve_checkpoint(model).folder)
    pre = config.preprocess
    load, geometry, crop = (
        __import__("monai.transforms", fromlist=["Compose"]).Compose(s)
        for s in monai_steps(pre, reader_for(scans[0]))
    )
    level = pre.foreground_threshold

    def prepare_in_memory(volume, pre):
        # As Predictor.predict/prepare run it for a scan read from a file: on its threads, the volume known finite.
        with scan_threads(SCAN_THREADS):
            return preprocess(volume, pre, assume_finite=True)

    def ours_crop_normalise(ras, resampled) -> None:
        mask, _ = _foreground(ras.data, pre, [])  # the pipeline's own step (threshold or Otsu, in memory order)
        fg = foreground_bounds(mask, ras.affine)
        center = (fg[0] + fg[1]) / 2.0 if fg is not None else fov_center(ras.affine, ras.spatial_shape)
        output_grid(ras.affine, ras.spatial_shape, pre.spacing, pre.shape, center)
        array = resampled.copy()
        normalize(array, array[0] > level, pre)

    times = {k: [] for k in ("ours_crop", "monai_crop", "ours_pre", "monai_pre")}
    for path in scans:
        volume = adc_to_mm2s(read_volume(path))[0]
        ras = reorient_to_ras(volume)
        resampled = preprocess(volume, pre).array  # z-scored; the normalisation's cost does not depend on values
        loaded = load({"image": path})
        spaced = geometry(dict(loaded))
        best = {k: np.inf for k in times}
        calls = {
            "ours": (("ours_crop", lambda: ours_crop_normalise(ras, resampled)),
                     ("ours_pre", lambda: prepare_in_memory(volume, pre))),
            "monai": (("monai_crop", lambda: crop(dict(spaced))),
                      ("monai_pre", lambda: crop(geometry(dict(loaded))))),
        }
        for r in range(repeats):
            for side in _turns(r):
                for key, fn in calls[side]:
                    start = time.perf_counter()
                    fn()
                    best[key] = min(best[key], time.perf_counter() - start)
        for key in times:
            times[key].append(best[key])
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return (med["ours_crop"], med["monai_crop"]), (med["ours_pre"], med["monai_pre"])


def throughput(scans: list[str], rounds: int, model: str = ADC_MODEL) -> tuple[float, float, list, list, str]:
    """(ours scans/s, MONAI scans/s, outputs, outputs, where our time went): best of `rounds` passes over every
    scan, torch backend; ours and MONAI's alternate pass by pass, taking turns at going first."""
    import torch
    from monai.data import DataLoader, Dataset

    from age2hie_hub.inference import Predictor

    ours = Predictor.from_pretrained(model, backend="torch", device="cpu")
    monai = MonaiPipeline(model, None, scans[0])
    data = [{"image": s} for s in scans]
    best_ours = best_monai = 0.0
    v_ours: list = []
    v_monai: list = []
    where = ""
    for r in range(rounds):
        for side in _turns(r):
            if side == "ours":
                start = time.perf_counter()
                predictions = ours.predict_many(scans, batch_size=8, progress=False)
                rate = len(scans) / (time.perf_counter() - start)
                if rate > best_ours:
                    st = ours.last_stats
                    where = (f"{st.wall_s:.2f} s: forward {st.forward_s:.2f} s on {st.forward_threads or 'default'} "
                             f"torch thread(s), waiting for preprocessing {st.wait_s:.2f} s (first batch ready at "
                             f"{st.startup_s:.2f} s)")
                best_ours = max(best_ours, rate)
                v_ours = [p.probability for p in predictions]
                continue
            start = time.perf_counter()
            loader = DataLoader(Dataset(data, monai.transform), batch_size=8, num_workers=2)
            values = []
            with torch.inference_mode():
                for batch in loader:
                    out = monai.net.predict_outputs(monai.net(batch["image"].as_tensor()))
                    values += out["probability"].tolist()
            best_monai = max(best_monai, len(scans) / (time.perf_counter() - start))
            v_monai = values
    return best_ours, best_monai, v_ours, v_monai, where


_MONAI_COLD = r"""
import sys
import numpy as np
sys.path.insert(0, {bench!r})
from bench_vs_monai import monai_steps, reader_for
from monai.transforms import Compose
from age2hie_hub.hub import read_config
from age2hie_hub.hub.resolve import resolve_checkpoint

folder = resolve_checkpoint({model!r}).folder
config = read_config(folder)
load, geometry, crop = monai_steps(config.preprocess, reader_for({scan!r}))
x = Compose(load + geometry + crop)({{"image": {scan!r}}})["image"].as_tensor()[None]
if {backend!r} == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {{session.get_inputs()[0].name: x.numpy()}})
else:
    import torch
    from safetensors.torch import load_file
    from age2hie_hub.models import build_model
    net = build_model(config.model).eval()
    net.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    with torch.inference_mode():
        out = net.predict_outputs(net(x))
print(out)
"""


def cold(scan: str, backend: str, runs: int, model: str = ADC_MODEL) -> tuple[float, float]:
    """(ours s, MONAI s): min over runs of a fresh process predicting one scan, interleaved."""
    ours_cmd = [sys.executable, "-m", "age2hie_hub", scan, "--model", model, "--backend", backend, "-q",
                "--device", "cpu"]
    monai_cmd = [sys.executable, "-c", _MONAI_COLD.format(bench=str(Path(__file__).parent), model=model,
                                                           scan=scan, backend=backend)]
    a, b = [], []
    for _ in range(runs):
        for cmd, times in ((ours_cmd, a), (monai_cmd, b)):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
            times.append(time.perf_counter() - start)
    return min(a), min(b)


def model_copies(names: tuple[str, ...], antialias: bool, tmp: Path) -> tuple[str, ...]:
    """Folders holding copies of the bundled models whose config.json sets preprocess.antialias (weights,
    ONNX and card copied as they are; SHA256SUMS left out, since the config no longer matches it)."""
    from age2hie_hub.hub.resolve import resolve_checkpoint

    folders = []
    for name in names:
        source, folder = resolve_checkpoint(name).folder, tmp / f"{name}-antialias-{'on' if antialias else 'off'}"
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("SHA256SUMS"))
        config = json.loads((folder / "config.json").read_text())
        config["preprocess"]["antialias"] = antialias
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        folders.append(str(folder))
    return tuple(folders)


def agreement(ours: list, monai: list, threshold: float | None) -> str:
    a, b = np.asarray(ours, dtype=float), np.asarray(monai, dtype=float)
    text = f"max |diff| {np.max(np.abs(a - b)):.3g}, mean |diff| {np.mean(np.abs(a - b)):.3g}"
    if threshold is not None:
        flips = int(np.sum((a >= threshold) != (b >= threshold)))
        text += f", label flips {flips} of {a.size}"
    return text


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("AGE2HIE_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--synthetic", action="store_true", help="use synthetic scans even when real ones exist")
    parser.add_argument("--n-t1", type=int, default=20, help="T1 scans for the warm T1 rows (default 20)")
    parser.add_argument("--n-adc", type=int, default=68, help="ADC scans (default 68: every BONBID-HIE case)")
    parser.add_argument("--n-crop", type=int, default=20, help="ADC scans for the preprocessing rows (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per scan / cold run (min is kept)")
    parser.add_argument("--antialias", choices=("saved", "on", "off"), default="saved",
                        help="our ADC preprocessing's anti-aliasing: as the bundled config.json says (default), "
                             "or forced on/off on a copy of the model (MONAI's Spacingd has none either way)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # per-scan notes (e.g. a foreground cut off by the box) are not the subject
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI's deprecation notices
    try:
        import monai
    except ImportError:
        print(f"MONAI is not installed; it is an optional benchmark dependency: {MONAI_INSTALL}", file=sys.stderr)
        raise SystemExit(2)
    import torch

    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.resolve import resolve_checkpoint

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t1_model, adc_model = T1_MODEL, ADC_MODEL
        if args.antialias != "saved":
            (adc_model,) = model_copies((ADC_MODEL,), args.antialias == "on", Path(tmp))
        adc_threshold = read_config(resolve_checkpoint(adc_model).folder).threshold
        antialias = {label: read_config(resolve_checkpoint(m).folder).preprocess.antialias
                     for label, m in (("T1", t1_model), ("ADC", adc_model))}
        t1, adc, source = find_scans(args.data, args.synthetic, args.n_t1, args.n_adc, Path(tmp))
        print(f"# age2hie-hub vs MONAI {monai.__version__} (torch {torch.__version__}), "
              f"{datetime.date.today()}, {cpu_name()}, {os.cpu_count()} CPUs, "
              f"load average at start {load_start[0]:.1f}")
        print(f"scans: {source}; {len(t1)} T1, {len(adc)} ADC; models {T1_MODEL!r} (T1), {ADC_MODEL!r} (ADC); "
              f"our anti-aliasing: " + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in antialias.items())
              + ("" if args.antialias == "saved" else f" (ADC: --antialias {args.antialias}, on a copy of the model)"))
        peak = [matmul_peak()]
        rows, notes = [], []
        for label, name, scans, threshold in (("T1", t1_model, t1, None), ("ADC", adc_model, adc, adc_threshold)):
            cells = []
            for backend in ("onnx", "torch"):
                ours_ms, monai_ms, vo, vm = warm_predict(name, backend, scans, args.repeats)
                cells.append((ours_ms, monai_ms))
                notes.append(f"warm predict {label} {backend}: {agreement(vo, vm, threshold)}")
            rows.append((f"warm predict, {label}, ONNX / torch", cells, "ms"))
        crop_normalise, whole = crop_rows(adc[: args.n_crop], args.repeats, adc_model)
        rows.append(("ADC crop + normalise", [crop_normalise], "ms"))
        rows.append(("ADC preprocess in memory (orient, resample, crop, normalise)", [whole], "ms"))
        ours_s, monai_s, vo, vm, where = throughput(adc, max(1, args.repeats - 1), adc_model)
        rows.append(("throughput, ADC, torch, batch 8 vs DataLoader 2 workers", [(1 / ours_s, 1 / monai_s)], "rate"))
        notes.append(f"throughput ADC torch: {agreement(vo, vm, adc_threshold)}")
        notes.append(f"throughput ADC torch, our best pass: {where}")
        peak.append(matmul_peak())
        for backend in ("onnx", "torch"):
            rows.append((f"cold CLI, one ADC scan, --backend {backend}",
                         [cold(adc[0], backend, args.repeats, adc_model)], "s"))
        peak.append(matmul_peak())

    print(f"torch.mm 4096^2 float32 peak in this run: {max(peak):.0f} GFLOP/s (probes {', '.join(f'{p:.0f}' for p in peak)})")
    print()
    print("| case | ours | MONAI | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for case, cells, unit in rows:
        def fmt(v: float) -> str:
            return {"ms": f"{v:.1f}", "s": f"{v:.2f}", "rate": f"{1 / v:.1f}"}[unit]

        suffix = {"ms": " ms", "s": " s", "rate": " scans/s"}[unit]
        ours_txt = " / ".join(fmt(o) for o, _ in cells) + suffix
        monai_txt = " / ".join(fmt(m) for _, m in cells) + suffix
        r = [m / o for o, m in cells]
        ratios += r
        print(f"| {case} | {ours_txt} | {monai_txt} | {' / '.join(f'{x:.2f}x' for x in r)} |")
    print()
    print("agreement of the two pipelines' outputs (probability for ADC, years for T1), and where our throughput time went:")
    for note in notes:
        print(f"  {note}")
    load_end = os.getloadavg()
    below = sum(r < 1.0 for r in ratios)
    print(textwrap.dedent(f"""
        goals: every ratio >= 1.5x ({sum(r >= 1.5 for r in ratios)} of {len(ratios)} met), none below 1.0x ({below} below)
        load average at end {load_end[0]:.1f} (on a shared machine, read the table with it)"""))


if __name__ == "__main__":
    main()
