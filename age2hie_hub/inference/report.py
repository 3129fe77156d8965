"""Visual report of a batch of predictions: one PNG per scan and one self-contained HTML index.

Each PNG shows, through the centre of the crop box: three orthogonal slices of the scan as read (reoriented
to RAS, true aspect from its spacing) with the model's crop box drawn; the same slices of the model's input
after preprocessing; an occlusion saliency overlay on them (`inference.saliency`); the prediction with its
interval (or a line saying the model records none); every warning. `index.html` lists each scan with its
prediction, warnings and PNG (relative links, inline CSS, no scripts), failed scans with their error.

matplotlib is an optional dependency (the `report` extra); call `require_matplotlib()` before starting
work that ends in a report. Every file is written atomically; the index is written last.
"""
from __future__ import annotations

import html
import logging
import os
import re
import textwrap
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from age2hie_hub._atomic import atomic_path, write_text_atomic
from age2hie_hub.errors import Age2HieError
from age2hie_hub.inference.inputs import describe, to_volume
from age2hie_hub.inference.prediction import Prediction
from age2hie_hub.io.volume import Volume

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from age2hie_hub.inference.inputs import PreparedInput
    from age2hie_hub.inference.predictor import Predictor
    from age2hie_hub.inference.saliency import Occlusion

log = logging.getLogger(__name__)

INDEX_NAME = "index.html"
INSTALL_HINT = "pip install 'age2hie-hub[report]'"
NO_INTERVAL = "no interval recorded for this model"
# Every PNG has this size (pixels): FIG_INCHES * DPI, never trimmed to its content.
FIG_INCHES = (12.0, 15.0)
DPI = 100
PNG_SIZE = (int(FIG_INCHES[0] * DPI), int(FIG_INCHES[1] * DPI))
MAX_WARNING_LINES = 8
# Slice views: (name, axis normal to the slice, horizontal axis, vertical axis), axes of the RAS voxel grid.
VIEWS = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))
_LOW, _HIGH = "LPI", "RAS"  # the letters at the low / high end of each RAS axis
BOX_COLOUR = "#ffd000"


class ReportError(Age2HieError):
    """A report cannot be written (matplotlib missing, output folder unusable)."""


def require_matplotlib() -> None:
    """Raise ReportError naming the extra to install when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise ReportError(
            f"the visual report needs matplotlib, which is not installed ({exc}); install the report extra: "
            f"{INSTALL_HINT}"
        ) from None


def check_report_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The report folder, refused early when it cannot be one (an existing file)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a folder; give a folder for the report")
    return out


# -- text -------------------------------------------------------------------------------------------------
def prediction_text(p: Prediction) -> str:
    """The prediction in words, e.g. 'adverse: P(adverse 2-year outcome) = 0.836 (threshold 0.50)'."""
    if p.task == "hie_outcome" and p.probability is not None:
        return f"{p.label}: P(adverse 2-year outcome) = {p.probability:.3f} (threshold {p.threshold:.2f})"
    if p.task == "brain_age" and p.age is not None:
        sd = f" ± {p.age_sd:.1f}" if p.age_sd is not None else ""
        return f"brain age {p.age:.1f}{sd} {p.age_unit or ''}".rstrip()
    if p.probabilities is not None:
        return f"{p.label} (p = {max(p.probabilities):.3f})"
    return f"value {p.score:.4g}" if p.score is not None else "no prediction"


def _level(value: Any) -> str:
    level = float(value)
    return f"{level * 100 if level <= 1 else level:g} %"


def _bounds(value: Any) -> tuple[float, float] | None:
    if isinstance(value, dict):
        lo = next((value[k] for k in ("low", "lower", "lo") if k in value), None)
        hi = next((value[k] for k in ("high", "upper", "hi") if k in value), None)
        return (float(lo), float(hi)) if lo is not None and hi is not None else None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


def interval_text(p: Prediction) -> str:
    """The uncertainty a Prediction carries, in words; NO_INTERVAL when it carries none.

    Reads whichever of these fields exist (a Prediction without them predicts as before): an interval
    (`interval`, `age_interval` or `prediction_interval`: (low, high) or {"low", "high"[, "level"]}) with
    `interval_level`; a calibrated probability (`calibrated_probability`); a conformal prediction set
    (`prediction_set`, with `set_level`). Extend `_INTERVAL_PARTS` for new kinds.
    """
    parts = [text for part in _INTERVAL_PARTS if (text := part(p))]
    return "; ".join(parts) if parts else NO_INTERVAL


def _interval_part(p: Prediction) -> str | None:
    raw = next((v for k in ("interval", "age_interval", "prediction_interval")
                if (v := getattr(p, k, None)) is not None), None)
    bounds = _bounds(raw)
    if bounds is None:
        return None
    level = getattr(p, "interval_level", None)
    if level is None and isinstance(raw, dict):
        level = raw.get("level")
    unit = f" {p.age_unit}" if p.task == "brain_age" and p.age_unit else ""
    name = f"{_level(level)} interval" if level is not None else "interval"
    return f"{name} {bounds[0]:.1f} - {bounds[1]:.1f}{unit}"


def _calibrated_part(p: Prediction) -> str | None:
    value = getattr(p, "calibrated_probability", None)
    return f"calibrated P = {float(value):.3f}" if value is not None else None


def _set_part(p: Prediction) -> str | None:
    labels = getattr(p, "prediction_set", None)
    if labels is None:
        return None
    level = getattr(p, "set_level", None)
    name = f"{_level(level)} prediction set" if level is not None else "prediction set"
    return f"{name} {{{', '.join(str(x) for x in labels)}}}"


_INTERVAL_PARTS = [_interval_part, _calibrated_part, _set_part]


def report_warnings(p: Prediction) -> list[str]:
    """Every warning of a prediction, plus the input checks that may only be flags or notes so far."""
    warnings = list(p.warnings)
    text = " ".join(warnings).lower()
    if p.unit_guessed and "unit" not in text:
        warnings.append(f"ADC unit not declared in the file: guessed from the values ({p.input_unit})")
    return warnings


# -- geometry ---------------------------------------------------------------------------------------------
def box_voxel_bounds(
    volume_affine: np.ndarray, box_affine: np.ndarray, box_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The model's crop box (a grid `box_affine`, `box_shape`, outer voxel edges included) in the continuous
    voxel coordinates of a volume (`volume_affine`): (low, high) corners per axis. Voxel i covers i +- 0.5.

    For an oblique volume this is the bounding box of the crop box's corners.
    """
    n = np.asarray(box_shape[:3], dtype=np.float64)
    edges = [(-0.5, n[a] - 0.5) for a in range(3)]
    corners = np.array(np.meshgrid(*edges, indexing="ij")).reshape(3, -1)
    world = np.asarray(box_affine, np.float64)[:3, :3] @ corners + np.asarray(box_affine, np.float64)[:3, 3:4]
    inv = np.linalg.inv(np.asarray(volume_affine, np.float64))
    voxels = inv[:3, :3] @ world + inv[:3, 3:4]
    return voxels.min(axis=1), voxels.max(axis=1)


def slice_rect(low: np.ndarray, high: np.ndarray, view: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a voxel-space box in the pixel coordinates of a view's slice image
    (x along the view's horizontal axis, y up its vertical axis; pixel centres at integers)."""
    _, _, u, v = _view(view)
    return float(low[u]), float(low[v]), float(high[u]), float(high[v])


def slice_index(volume_affine: np.ndarray, shape: Sequence[int], world: np.ndarray) -> tuple[int, int, int]:
    """The voxel of a volume nearest to a world point (mm), clipped into the volume."""
    inv = np.linalg.inv(np.asarray(volume_affine, np.float64))
    ijk = inv[:3, :3] @ np.asarray(world, np.float64) + inv[:3, 3]
    return tuple(int(np.clip(round(float(c)), 0, n - 1)) for c, n in zip(ijk, shape[:3]))  # type: ignore[return-value]


def box_centre(box_affine: np.ndarray, box_shape: Sequence[int]) -> np.ndarray:
    """World position (mm) of the centre of a grid."""
    centre = (np.asarray(box_shape[:3], np.float64) - 1.0) / 2.0
    return (np.asarray(box_affine, np.float64) @ np.append(centre, 1.0))[:3]


def take_slice(data: np.ndarray, view: str, index: Sequence[int]) -> np.ndarray:
    """The 2D slice of a view through voxel `index`, as an image array (rows = vertical axis, upwards)."""
    _, normal, u, v = _view(view)
    plane = np.take(data, int(index[normal]), axis=normal)  # remaining axes keep their order
    axes = [a for a in range(3) if a != normal]
    return plane.T if axes.index(u) == 0 else plane  # (v, u)


def panel_limits(shape_uv: tuple[int, int], rect: tuple[float, float, float, float] | None
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y limits that show the whole slice and the whole crop box."""
    nu, nv = shape_uv
    xs, ys = [-0.5, nu - 0.5], [-0.5, nv - 0.5]
    if rect is not None:
        xs += [rect[0], rect[2]]
        ys += [rect[1], rect[3]]
    return (min(xs), max(xs)), (min(ys), max(ys))


def _view(view: str) -> tuple[str, int, int, int]:
    for item in VIEWS:
        if item[0] == view:
            return item
    raise ValueError(f"view must be one of {[v[0] for v in VIEWS]}, got {view!r}")


# -- figure -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanView:
    """What one scan's PNG shows."""

    name: str
    volume: Volume  # the scan as read (channel 0; first volume of a 4D series), reoriented to RAS
    array: np.ndarray  # the model input (C, X, Y, Z)
    affine: np.ndarray  # its grid (Preprocessed.affine)
    prediction: Prediction
    occlusion: Occlusion | None = None
    volume_note: str = ""


def _window(data: np.ndarray) -> tuple[float, float]:
    values = data[np.isfinite(data) & (data != 0)]
    if values.size == 0:
        return 0.0, 1.0
    if values.size > 200_000:
        values = values[:: values.size // 200_000]
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _edge_letters(ax: Any, u: int, v: int) -> None:
    style = dict(transform=ax.transAxes, color="white", fontsize=9, fontweight="bold")
    ax.text(0.01, 0.5, _LOW[u], ha="left", va="center", **style)
    ax.text(0.99, 0.5, _HIGH[u], ha="right", va="center", **style)
    ax.text(0.5, 0.01, _LOW[v], ha="center", va="bottom", **style)
    ax.text(0.5, 0.99, _HIGH[v], ha="center", va="top", **style)


def _overlay_rgba(values: np.ndarray, norm: Any, cmap: Any) -> np.ndarray:
    """Colour by signed value, opacity by magnitude: small changes leave the anatomy visible."""
    rgba = cmap(norm(values))
    strength = np.clip(np.abs(values) / max(abs(norm.vmax), 1e-12), 0.0, 1.0)
    rgba[..., 3] = 0.85 * np.sqrt(strength)
    return rgba


def render_figure(scan: ScanView) -> "Figure":
    """The report figure of one scan (matplotlib Figure, no pyplot state). The crop box rectangles carry
    gid 'crop-box'."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    p = scan.prediction
    fig = Figure(figsize=FIG_INCHES, dpi=DPI, facecolor="white")
    vol = scan.volume
    box_shape = scan.array.shape[1:]
    centre = box_centre(scan.affine, box_shape)
    in_index = slice_index(vol.affine, vol.spatial_shape, centre)
    low, high = box_voxel_bounds(vol.affine, scan.affine, box_shape)
    model_index = tuple(int(round((n - 1) / 2)) for n in box_shape)
    in_spacing = vol.spacing
    model_spacing = tuple(float(s) for s in np.linalg.norm(scan.affine[:3, :3], axis=0))
    in_window, model_window = _window(vol.data), _window(scan.array[0])

    width_in, height_in = FIG_INCHES

    def box(left: float, top: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Axes rectangle from inches measured from the figure's top-left corner."""
        return left / width_in, 1.0 - (top + h) / height_in, w / width_in, h / height_in

    def text(left: float, top: float, s: str, **kw: Any) -> None:
        fig.text(left / width_in, 1.0 - top / height_in, s, va="top", **kw)

    # Header: what was predicted, by which model, with which uncertainty.
    text(0.4, 0.25, scan.name, fontsize=15, fontweight="bold")
    text(0.4, 0.62, prediction_text(p), fontsize=13)
    text(0.4, 0.92, interval_text(p), fontsize=11, color="0.25")
    ran = f"{p.model_file or 'weights'} {(p.model_file_sha256 or '?')[:12]}"
    model = f"model {p.model} ({p.backend} on {p.device}, {ran})"
    if p.synthetic_model:
        model += " - trained on synthetic data only: a demonstration, not a clinical prediction"
    text(0.4, 1.17, model, fontsize=9, color="0.35")

    shape_txt = "x".join(str(s) for s in vol.spatial_shape)
    labels = (
        f"scan as read, RAS ({shape_txt} voxels of {'x'.join(f'{s:.2g}' for s in in_spacing)} mm"
        f"{', ' + scan.volume_note if scan.volume_note else ''}); yellow: the model's crop box",
        f"model input after preprocessing ({'x'.join(str(s) for s in box_shape)} voxels of "
        f"{'x'.join(f'{s:.2g}' for s in model_spacing)} mm, channel 0 of {scan.array.shape[0]})",
        "occlusion saliency on the model input" + (
            f": {scan.occlusion.what}(whole input) - {scan.occlusion.what}(patch of "
            f"{'x'.join(str(s) for s in scan.occlusion.patch)} voxels blanked)" if scan.occlusion else " (not computed)"
        ),
    )
    sal = scan.occlusion.map if scan.occlusion is not None else None
    sal_lim = float(np.abs(sal).max()) if sal is not None and np.abs(sal).max() > 0 else 1.0
    sal_norm = Normalize(-sal_lim, sal_lim)
    cmap = colormaps["RdBu_r"]
    for row in range(3):
        top = 1.45 + row * 3.75
        text(0.4, top, labels[row], fontsize=10)
        for col, (view, normal, u, v) in enumerate(VIEWS):
            ax = fig.add_axes(box(0.4 + col * 3.8, top + 0.3, 3.6, 3.35))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("0.35")  # beyond the scan's field of view
            if row == 0:
                image = take_slice(vol.data, view, in_index)
                aspect = in_spacing[v] / in_spacing[u]
                ax.imshow(image, cmap="gray", origin="lower", vmin=in_window[0], vmax=in_window[1],
                          aspect=aspect, interpolation="nearest")
                rect = slice_rect(low, high, view)
                ax.add_patch(Rectangle((rect[0], rect[1]), rect[2] - rect[0], rect[3] - rect[1], fill=False,
                                       edgecolor=BOX_COLOUR, linewidth=1.6, gid="crop-box"))
                xlim, ylim = panel_limits((image.shape[1], image.shape[0]), rect)
                ax.set_xlim(*xlim)
                ax.set_ylim(*ylim)
                where = f"{view}, voxel {'ijk'[normal]}={in_index[normal]}"
            else:
                image = take_slice(scan.array[0], view, model_index)
                aspect = model_spacing[v] / model_spacing[u]
                ax.imshow(image, cmap="gray", origin="lower", vmin=model_window[0], vmax=model_window[1],
                          aspect=aspect, interpolation="nearest")
                if row == 2 and sal is not None:
                    ax.imshow(_overlay_rgba(take_slice(sal, view, model_index), sal_norm, cmap), origin="lower",
                              aspect=aspect, interpolation="nearest")
                where = f"{view}, {'ijk'[normal]}={model_index[normal]}"
            ax.text(0.02, 0.03, where, transform=ax.transAxes, color="white", fontsize=8, ha="left", va="bottom")
            _edge_letters(ax, u, v)
    if scan.occlusion is not None:
        cax = fig.add_axes(box(4.2, 12.75, 3.6, 0.12))
        bar = fig.colorbar(ScalarMappable(sal_norm, cmap), cax=cax, orientation="horizontal")
        bar.ax.xaxis.set_major_locator(MaxNLocator(5))
        bar.ax.tick_params(labelsize=8)
        unit = f" ({p.age_unit})" if p.task == "brain_age" and p.age_unit else ""
        bar.set_label(f"change of {scan.occlusion.what}{unit} (red: the region raises it)", fontsize=8)

    warnings = report_warnings(p)
    lines = [f"warnings ({len(warnings)}):" if warnings else "warnings: none"]
    for w in warnings:
        lines += textwrap.wrap(w, 130, initial_indent="- ", subsequent_indent="  ")
    if len(lines) > MAX_WARNING_LINES:
        lines = lines[: MAX_WARNING_LINES - 1] + ["... more in index.html"]
    text(0.4, 13.5, "\n".join(lines), fontsize=9, family="monospace", color="#a03000" if warnings else "0.3")
    return fig


def save_png(fig: "Figure", path: Path) -> Path:
    """Write a figure as a PNG of exactly PNG_SIZE pixels, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


# -- batch ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportRow:
    """One scan in the index: its prediction and PNG, or the error that stopped it."""

    name: str
    source: str
    prediction: Prediction | None = None
    png: str | None = None  # file name inside the report folder
    error: str | None = None


def _png_name(index: int, name: str) -> str:
    stem = re.sub(r"(\.nii\.gz|\.nii|\.mha|\.mhd|\.nrrd|\.nhdr|\.zip|\.gz)$", "", name, flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "scan"
    return f"{index + 1:03d}_{stem[:80]}.png"


def _display_volume(volume: Volume) -> tuple[Volume, str]:
    from age2hie_hub.preprocess import reorient_to_ras

    note = ""
    if volume.data.ndim == 4:
        note = f"volume 1 of {volume.data.shape[3]}"
        volume = Volume(volume.data[..., 0], volume.affine, volume.metadata)
    return reorient_to_ras(volume), note


def scan_view(
    predictor: Predictor, x: Any, second_channel: Any = None, prediction: Prediction | None = None,
    *, prepared: PreparedInput | None = None, saliency: bool = True, blocks: int = 8,
) -> ScanView:
    """Read one scan for display; preprocess it as the predictor does unless `prepared` (the item it was
    predicted from) is given; predict it unless `prediction` is given; compute its occlusion saliency with
    the predictor's backend."""
    from age2hie_hub.inference.saliency import occlusion_map, score_function

    volume = to_volume(x, "input")
    item = prepared if prepared is not None and prepared.affine is not None else predictor.prepare(volume, second_channel)
    if prediction is None:
        prediction = predictor._predict_prepared([item])[0]  # noqa: SLF001  (same package)
    occlusion = None
    if saliency:
        run = predictor.backend.run
        outputs = run(item.array[None])
        score, what = score_function(predictor.config.task, outputs)
        occlusion = occlusion_map(run, item.array, score, what=what, blocks=blocks)
    shown, note = _display_volume(volume)
    source = describe(x)
    return ScanView(name=Path(source).name or source, volume=shown, array=item.array, affine=item.affine,
                    prediction=prediction, occlusion=occlusion, volume_note=note)


def write_report(
    predictor: Predictor,
    inputs: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    second_channels: Sequence[Any] | None = None,
    predictions: Sequence[Prediction | BaseException | str | None] | None = None,
    prepared: Sequence[PreparedInput | None] | None = None,
    saliency: bool = True,
    blocks: int = 8,
    progress: bool = False,
) -> Path:
    """Write one PNG per input and `index.html` into `out_dir`; return the index's path.

    `predictions` (one per input, e.g. from `Predictor.predict_many(..., errors="return")`) are shown as given;
    an exception or message in their place is listed as that scan's error; None (or no `predictions`)
    predicts the scan here. `prepared` (one per input or None, e.g. collected with `iter_predictions`'s
    `on_prepared`) are the model inputs the predictions were made from; without them each scan is
    preprocessed again. A scan whose report cannot be drawn is listed with the reason; the index is
    written last, and every file through a temporary name and a rename.
    """
    require_matplotlib()
    out = check_report_dir(out_dir)
    items = list(inputs)
    seconds = list(second_channels) if second_channels is not None else [None] * len(items)
    given = list(predictions) if predictions is not None else [None] * len(items)
    kept = list(prepared) if prepared is not None else [None] * len(items)
    if not len(items) == len(seconds) == len(given) == len(kept):
        raise ValueError(f"{len(items)} inputs, {len(seconds)} second channels, {len(given)} predictions and "
                         f"{len(kept)} prepared inputs; give one of each per input")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[ReportRow] = []
    bar = _bar(len(items), progress)
    for i, (x, second, result, item) in enumerate(zip(items, seconds, given, kept)):
        source = describe(x)
        name = Path(source).name or source
        if isinstance(result, (BaseException, str)):
            rows.append(ReportRow(name, source, error=str(result)))
            bar.update(1)
            continue
        try:
            view = scan_view(predictor, x, second, result, prepared=item, saliency=saliency, blocks=blocks)
            png = _png_name(i, name)
            fig = render_figure(view)
            save_png(fig, out / png)
            rows.append(ReportRow(name, source, prediction=view.prediction, png=png))
        except (Age2HieError, OSError, ValueError, TypeError) as exc:
            log.warning("%s: no report drawn: %s", source, exc)
            rows.append(ReportRow(name, source, prediction=result, error=f"report not drawn: {exc}"))
        bar.update(1)
    bar.close()
    return write_index(rows, out, model=_model_line(predictor))


def _bar(total: int, enabled: bool) -> Any:
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="scan", desc="report")

    class _NoBar:
        def update(self, n: int = 1) -> None:
            return None

        def close(self) -> None:
            return None

    return _NoBar()


def _model_line(predictor: Predictor) -> str:
    info = predictor.model_info
    text = f"model {info.name}" + (f" ({info.repo_id}@{info.revision})" if info.repo_id else "")
    text += f", {predictor.backend.backend} backend, task {predictor.config.task}"
    if info.synthetic:
        text += ". Trained on synthetic data only: its outputs are demonstrations, not clinical predictions"
    return text


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
tr.failed td { background: #fff0f0; }
.warn { color: #a03000; }
.error { color: #b00000; font-weight: bold; }
.muted { color: #666; font-size: 0.9em; }
img { width: 420px; height: auto; border: 1px solid #ddd; }
code { word-break: break-all; }
"""


def write_index(rows: Sequence[ReportRow], out_dir: Path, *, model: str = "") -> Path:
    """Write `out_dir/index.html` for the rows (every text escaped; links only to the rows' PNGs)."""
    esc = html.escape
    failed = sum(r.error is not None and r.png is None for r in rows)
    body = []
    for n, row in enumerate(rows, 1):
        cells = [str(n), f"<code>{esc(row.name)}</code><br><span class=\"muted\">{esc(row.source)}</span>"]
        if row.prediction is not None:
            cells.append(f"{esc(prediction_text(row.prediction))}<br>"
                         f"<span class=\"muted\">{esc(interval_text(row.prediction))}</span>")
            warnings = report_warnings(row.prediction)
            cells.append("<ul>" + "".join(f"<li class=\"warn\">{esc(w)}</li>" for w in warnings) + "</ul>"
                         if warnings else "<span class=\"muted\">none</span>")
        else:
            cells += ["", ""]
        if row.png is not None:
            link = esc(urllib.parse.quote(row.png), quote=True)
            cells.append(f"<a href=\"{link}\"><img src=\"{link}\" alt=\"report of {esc(row.name, quote=True)}\"></a>")
        else:
            cells.append("")
        if row.error is not None:
            cells[-1] += f"<p class=\"error\">{esc(row.error)}</p>"
        cls = " class=\"failed\"" if row.error is not None and row.png is None else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>age2hie-hub report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>age2hie-hub report</h1>
<p>{esc(model)}</p>
<p class="muted">{len(rows)} scan(s), {failed} failed; written {esc(stamp)}. Each picture: the scan as read with the
model's crop box, the model's input after preprocessing, and an occlusion saliency map (how much the prediction
changes when a block of the input is blanked out).</p>
<table>
<thead><tr><th>#</th><th>scan</th><th>prediction</th><th>warnings</th><th>report</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</body>
</html>
"""
    return write_text_atomic(Path(out_dir) / INDEX_NAME, page)
