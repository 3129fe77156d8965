"""Visual report (age2hie-predict --report): crop-box geometry, occlusion saliency, PNG size, HTML index,
and the clear error when matplotlib is missing."""
from __future__ import annotations

import dataclasses
import html
import json
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from age2hie_hub.inference.prediction import Prediction
from age2hie_hub.inference.report import (
    NO_INTERVAL, PNG_SIZE, VIEWS, ReportRow, ScanView, box_centre, box_voxel_bounds, interval_text, panel_limits,
    render_figure, report_warnings, save_png, slice_index, slice_rect, take_slice, write_index,
)
from age2hie_hub.inference.saliency import occlusion_map
from age2hie_hub.io import Volume
from age2hie_hub.preprocess import PreprocessConfig, preprocess, reorient_to_ras

pytest.importorskip("matplotlib")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _prediction(**kw) -> Prediction:
    base = dict(source="scan.nii.gz", task="hie_outcome", label="adverse", threshold=0.5, probability=0.8,
                model="test", warnings=("scan.nii.gz: unusual voxel size",))
    return Prediction(**{**base, **kw})


def _lps_scan(shape=(60, 80, 24), spacing=(1.2, 0.9, 3.0), centre=(40, 40, 12), radius_mm=12.0):
    """An LPS-stored scan with a bright ball off-centre, as DICOM-derived files come."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [30.0, 20.0, -35.0]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    r = np.sqrt((((idx - np.array(centre)[:, None, None, None]) * np.array(spacing)[:, None, None, None]) ** 2).sum(0))
    data = np.where(r < radius_mm, 1000.0, 0.0).astype(np.float32)
    return Volume(data, affine, {"source": "lps.nii.gz"})


def test_crop_box_maps_onto_the_preprocessed_grid_and_lies_inside_the_scan():
    scan = _lps_scan()
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), shape=(20, 20, 16), crop="foreground", intensity="none")
    pre = preprocess(scan, config)
    ras = reorient_to_ras(scan)
    low, high = box_voxel_bounds(ras.affine, pre.affine, pre.array.shape[1:])
    # The box edges, taken back to the world through the RAS scan's affine, are the Preprocessed grid's outer
    # voxel edges (voxel centres +- half a voxel).
    world_low = ras.affine[:3, :3] @ low + ras.affine[:3, 3]
    world_high = ras.affine[:3, :3] @ high + ras.affine[:3, 3]
    step = np.diag(pre.affine)[:3]
    np.testing.assert_allclose(world_low, pre.affine[:3, 3] - step / 2, atol=1e-6)
    np.testing.assert_allclose(world_high, pre.affine[:3, 3] + step * (np.array(config.shape) - 0.5), atol=1e-6)
    # 40 x 40 x 32 mm box around a 24 mm ball in a 72 x 72 x 72 mm scan: inside the image on every axis.
    shape = np.array(ras.spatial_shape)
    assert np.all(low >= -0.5) and np.all(high <= shape - 0.5), (low, high, shape)
    # ... and it holds the ball (the crop is centred on the foreground).
    ball = np.argwhere(ras.data > 0)
    assert np.all(ball.min(0) >= low) and np.all(ball.max(0) <= high)
    # Each view's rectangle is those bounds on its two in-plane axes; the slices go through the box centre.
    centre = slice_index(ras.affine, ras.spatial_shape, box_centre(pre.affine, config.shape))
    for view, normal, u, v in VIEWS:
        x0, y0, x1, y1 = slice_rect(low, high, view)
        assert (x0, y0, x1, y1) == (low[u], low[v], high[u], high[v])
        assert take_slice(ras.data, view, centre).shape == (shape[v], shape[u])
        assert low[normal] <= centre[normal] <= high[normal]


def test_a_box_larger_than_the_scan_is_drawn_whole():
    # A thin slab (6 slices of 3 mm) in a 60 mm tall box: the panel must extend beyond the image to show it.
    scan = Volume(np.ones((40, 40, 6), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), shape=(16, 16, 30), crop="center", intensity="none")
    pre = preprocess(scan, config)
    low, high = box_voxel_bounds(scan.affine, pre.affine, config.shape)
    rect = slice_rect(low, high, "coronal")
    assert rect[1] < -0.5 and rect[3] > 5.5  # beyond the image along S
    (xa, xb), (ya, yb) = panel_limits((40, 6), rect)
    assert xa <= rect[0] and xb >= rect[2] and ya <= rect[1] and yb >= rect[3]
    assert (xa, xb) == (-0.5, 39.5)  # the image's own width is still shown


def test_figure_draws_the_box_it_computes_and_the_png_has_its_fixed_size(tmp_path):
    scan = _lps_scan()
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), shape=(20, 20, 16), crop="foreground", intensity="zscore")
    pre = preprocess(scan, config)
    ras = reorient_to_ras(scan)
    occ = occlusion_map(lambda b: {"probability": b[:, 0, :10].mean(axis=(1, 2, 3))}, pre.array,
                        lambda out: out["probability"], what="P(adverse)", blocks=4)
    view = ScanView("lps.nii.gz", ras, pre.array, pre.affine, _prediction(), occ)
    fig = render_figure(view)
    boxes = [patch for ax in fig.axes for patch in ax.patches if patch.get_gid() == "crop-box"]
    assert len(boxes) == 3  # one per view of the scan as read
    low, high = box_voxel_bounds(ras.affine, pre.affine, config.shape)
    for patch, (name, *_) in zip(boxes, VIEWS):
        x0, y0, x1, y1 = slice_rect(low, high, name)
        assert patch.get_xy() == pytest.approx((x0, y0))
        assert (patch.get_width(), patch.get_height()) == pytest.approx((x1 - x0, y1 - y0))
        xlim, ylim = patch.axes.get_xlim(), patch.axes.get_ylim()
        assert xlim[0] <= x0 and x1 <= xlim[1] and ylim[0] <= y0 and y1 <= ylim[1]
    png = save_png(fig, tmp_path / "scan.png")
    assert _png_size(png) == PNG_SIZE
    assert [p.name for p in tmp_path.iterdir()] == ["scan.png"]  # no temporary file left beside it


# Regions on the 8 x 8 x 6 patch lattice of a 24 x 24 x 16 grid cut into 3 blocks per axis.
@pytest.mark.parametrize("region", [(slice(16, 24), slice(0, 8), slice(6, 12)), (slice(0, 8), slice(16, 24), slice(0, 6))])
def test_occlusion_is_highest_where_the_model_looks(region):
    """A model that reads only one block of its input: blanking that block, and nothing else, moves its output."""
    rng = np.random.default_rng(0)
    x = (1.0 + rng.random((1, 24, 24, 16))).astype(np.float32)
    calls = []

    def run(batch):
        calls.append(len(batch))
        return {"probability": 1 / (1 + np.exp(-batch[(slice(None), 0, *region)].mean(axis=(1, 2, 3))))}

    occ = occlusion_map(run, x, lambda out: out["probability"], blocks=3, batch_size=5)
    assert occ.patch == (8, 8, 6)
    peak = np.unravel_index(np.argmax(np.abs(occ.map)), occ.map.shape)
    assert all(s.start <= p < s.stop for p, s in zip(peak, region)), (peak, region)
    inside = np.zeros(x.shape[1:], bool)
    inside[region] = True
    assert occ.map[inside].min() > 0.01  # blanking what the model reads lowers its output
    np.testing.assert_array_equal(occ.map[~inside], 0.0)  # the rest does not matter to it
    assert occ.evaluated == 3 * 3 * 3 and set(calls) == {1, 5}  # whole input once, then full batches only


def test_occlusion_skips_background_patches():
    x = np.zeros((1, 16, 16, 16), np.float32)
    x[0, :4, :4, :4] = 1.0
    occ = occlusion_map(lambda b: {"v": b.sum(axis=(1, 2, 3, 4))}, x, lambda out: out["v"], blocks=4)
    assert occ.evaluated == 1
    assert occ.map[:4, :4, :4].min() == pytest.approx(64.0) and occ.map[4:].max() == 0.0


def test_interval_text_reads_whatever_interval_the_prediction_carries():
    assert interval_text(_prediction()) == NO_INTERVAL

    @dataclasses.dataclass(frozen=True)
    class WithInterval(Prediction):
        interval: tuple[float, float] | None = None
        interval_level: float | None = None

    p = WithInterval(source=None, task="brain_age", label=None, threshold=None, age=45.2, age_unit="years",
                     interval=(37.1, 53.3), interval_level=0.9)
    assert interval_text(p) == "90 % interval 37.1 - 53.3 years"


def test_report_warnings_are_the_predictions_warnings_plus_the_unit_flag():
    cut = "scan.nii.gz: foreground cut off by the output box: S: 2.0 mm beyond its superior edge"
    p = _prediction(unit_guessed=True, input_unit="1e-6mm2/s", warnings=("scan.nii.gz: unusual voxel size", cut),
                    notes=("reoriented LPS -> RAS",))
    warnings = report_warnings(p)
    assert warnings[:2] == ["scan.nii.gz: unusual voxel size", cut]
    assert any("guessed" in w for w in warnings)
    assert not any("reoriented" in w for w in warnings)  # notes say what preprocessing did; they are not warnings


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [value for name, value in attrs if name in ("src", "href")]


def test_index_escapes_names_and_errors(tmp_path):
    name = 'a<b>&"c".nii.gz'
    fig_rows = [
        ReportRow(name, f"/data/{name}", prediction=_prediction(source=name), png="001_a_b_c.png"),
        ReportRow("bad.nii.gz", "bad.nii.gz", error="bad.nii.gz: <script>alert(1)</script> & more"),
    ]
    (tmp_path / "001_a_b_c.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    index = write_index(fig_rows, tmp_path, model='model "x" <y>')
    text = index.read_text()
    assert "<script>" not in text and "a<b>" not in text and 'model "x" <y>' not in text
    assert "a&lt;b&gt;&amp;&quot;c&quot;.nii.gz" in text and "&lt;script&gt;" in text
    parser = _Links()
    parser.feed(text)
    assert "script" not in parser.tags and "link" not in parser.tags  # self-contained: no scripts, no stylesheets
    assert parser.links == ["001_a_b_c.png", "001_a_b_c.png"]


@pytest.mark.slow
def test_cli_report_on_the_example_scan(tmp_path, one_torch_thread, capsys):
    from age2hie_hub.cli.predict import main
    from age2hie_hub.inference import example_scan

    odd = tmp_path / 'in' / 'we<ird & "name".nii.gz'
    odd.parent.mkdir()
    shutil.copy(example_scan(), odd)
    out = tmp_path / "report"
    code = main([str(odd), str(tmp_path / "missing.nii.gz"), "--backend", "torch", "--report", str(out), "--json"])
    assert code == 1  # one scan failed
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "error"] or [r["status"] for r in rows] == ["error", "ok"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["001_we_ird_name.png", "index.html"]
    assert _png_size(out / "001_we_ird_name.png") == PNG_SIZE
    parser = _Links()
    text = (out / "index.html").read_text()
    parser.feed(text)
    assert parser.links and all((out / link).is_file() for link in parser.links)
    assert "we&lt;ird &amp; &quot;name&quot;.nii.gz" in text
    assert "missing.nii.gz" in text and 'class="failed"' in text
    # The index shows the uncertainty the prediction carries (the bundled model records a prediction set).
    ok = next(r for r in rows if r["status"] == "ok")
    fields = {f.name for f in dataclasses.fields(Prediction)}
    shown = interval_text(Prediction(**{k: v for k, v in ok.items() if k in fields}))
    assert html.escape(shown, quote=True) in text


def test_missing_matplotlib_is_one_line_exit_1_before_any_prediction(tmp_path):
    out, results = tmp_path / "report", tmp_path / "results.csv"
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if it were not installed\n"
        "from age2hie_hub.cli.predict import main\n"
        f"sys.exit(main(['--example', '--report', {str(out)!r}, '--output', {str(results)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""  # no prediction ran
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "age2hie-hub[report]" in lines[0], proc.stderr
    assert not out.exists() and not results.exists()
