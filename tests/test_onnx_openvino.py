"""The OpenVINO execution provider on CPU: same numbers as ONNX Runtime's own kernels, chosen only when installed,
all-or-nothing per graph, and reported as the device that ran."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from age2hie_hub.errors import CheckpointError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

OPENVINO, CPU = "OpenVINOExecutionProvider", "CPUExecutionProvider"


@pytest.fixture(scope="module")
def openvino():
    from age2hie_hub.onnx.providers import openvino_cpu_device

    device, why_not = openvino_cpu_device()
    if device is None:
        pytest.skip(f"OpenVINO execution provider unavailable: {why_not}")
    return device


def bundled_onnx(name: str):
    from age2hie_hub.hub.resolve import resolve_checkpoint

    return resolve_checkpoint(name).folder / "model.onnx"


@pytest.mark.parametrize("name", ["age2hie", "brain-age"])
def test_openvino_gives_the_cpu_providers_numbers_in_float32(openvino, name):
    # OpenVINO's default on CPUs with bf16/fp16 units moved the bundled model's probability by 3.6e-3 (measured);
    # forced float32 it agrees to ~1e-7 with ONNX Runtime's own kernels.
    from age2hie_hub.onnx.runtime import OnnxBackend

    fast = OnnxBackend(bundled_onnx(name), device="cpu")
    plain = OnnxBackend(bundled_onnx(name), device="cpu", openvino=False)
    assert (fast.provider, plain.provider) == (OPENVINO, CPU)
    shape = fast.input_shape[1:]
    for batch in (1, 3):  # a second shape on the same session: the batch axis is dynamic
        x = np.random.default_rng(batch).normal(0.5, 0.5, (batch, *shape)).astype(np.float32)
        got, want = fast.run(x), plain.run(x)
        for key in want:
            assert got[key].shape == want[key].shape
            assert np.abs(got[key] - want[key]).max() <= 1e-5 * max(1.0, np.abs(want[key]).max()), key


def test_openvino_writes_nothing_beside_the_model_or_in_the_working_folder(openvino, tmp_path, monkeypatch):
    from age2hie_hub.onnx.runtime import OnnxBackend

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(bundled_onnx("age2hie").read_bytes())
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    session = OnnxBackend(folder / "model.onnx", device="cpu")
    session.run(np.zeros((2, *session.input_shape[1:]), np.float32))
    assert session.provider == OPENVINO
    assert [p.name for p in folder.iterdir()] == ["model.onnx"] and not list(work.iterdir())


def mixed_graph(path):
    """A graph with one node OpenVINO has no kernel for (an ai.onnx.ml Normalizer), so it cannot take it whole."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["volume"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Normalizer", ["flat"], ["probability"], domain="ai.onnx.ml", norm="MAX"),
    ]
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["batch", 1, 4, 4, 4])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, None)],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))
    return path


def test_a_graph_openvino_cannot_take_whole_runs_on_the_cpu_provider(openvino, tmp_path, caplog):
    from age2hie_hub.onnx.runtime import OnnxBackend

    path = mixed_graph(tmp_path / "mixed.onnx")
    with caplog.at_level(logging.WARNING, logger="age2hie_hub.onnx.runtime"):
        session = OnnxBackend(path, device="cpu")
    assert session.provider == CPU  # never reported as OpenVINO while part of the graph ran elsewhere
    assert "OpenVINOExecutionProvider" in caplog.text and "CPU provider instead" in caplog.text
    assert session.run(np.ones((2, 1, 4, 4, 4), np.float32))["probability"].ravel().tolist() == [1.0, 1.0]
    with pytest.raises(CheckpointError, match=r"mixed\.onnx: .*OpenVINOExecutionProvider"):
        OnnxBackend(path, device="cpu", openvino=True)


def test_cli_reports_the_provider_that_ran(openvino, capsys):
    from age2hie_hub.cli.predict import main

    devices = []
    for flag in ([], ["--no-openvino"], ["--openvino"]):
        assert main(["--example", "--json", "-q", *flag]) == 0
        line = json.loads(capsys.readouterr().out.splitlines()[0])
        devices.append((line["backend"], line["device"], round(line["probability"], 6)))
    assert [d[1] for d in devices] == [OPENVINO, CPU, OPENVINO]
    assert devices[0][2] == devices[1][2]  # the same probability either way


def test_without_the_plugin_auto_uses_cpu_and_require_says_how_to_install():
    # A fresh process where the plugin package cannot be imported (as on macOS or an install without the extra).
    code = textwrap.dedent("""
        import sys
        sys.modules["onnxruntime_ep_openvino"] = None
        from age2hie_hub.inference import Predictor
        from age2hie_hub.inference.examples import example_scan
        p = Predictor.from_pretrained("age2hie", backend="onnx", device="cpu").predict(example_scan())
        assert p.device == "CPUExecutionProvider", p.device
        try:
            Predictor.from_pretrained("age2hie", backend="onnx", openvino=True)
        except ValueError as exc:
            print(exc)
        else:
            raise SystemExit("openvino=True without the plugin did not fail")
        from age2hie_hub.cli.predict import main
        raise SystemExit(10 + main(["--example", "--openvino", "-q"]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert run.returncode == 11, run.stderr[-3000:]  # the CLI's exit 1, after the API's error was printed
    assert "openvino=True was requested but onnxruntime-ep-openvino is not installed" in run.stdout
    assert "pip install 'age2hie-hub[openvino]'" in run.stdout
    assert "onnxruntime-ep-openvino is not installed" in run.stderr


def test_plugin_without_a_cpu_device_falls_back_calmly_with_one_line_saying_why():
    # The plugin imports and registers but finds no CPU device (seen on an AMD EPYC without AVX-512), simulated in
    # a fresh process on any machine (tests/no_openvino.py). auto, backend="onnx" and a batch run use ONNX
    # Runtime's CPU provider, say why once at INFO and never warn; only openvino=True is an error.
    code = textwrap.dedent(f"""
        import json, logging, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import no_openvino
        no_openvino.simulate("no-device")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("age2hie_hub").addHandler(handler)
        logging.getLogger("age2hie_hub").setLevel(logging.DEBUG)
        from age2hie_hub.inference import Predictor
        from age2hie_hub.inference.examples import example_scan
        scans = [example_scan()] * 5
        got = Predictor.from_pretrained("age2hie", backend="onnx").predict_many(scans, batch_size=2, progress=False)
        again = Predictor.from_pretrained("age2hie", backend="onnx", device="cpu").predict(example_scan())
        try:
            Predictor.from_pretrained("age2hie", backend="onnx", openvino=True)
        except ValueError as exc:
            refused = str(exc)
        else:
            refused = None
        said = [(r.levelname, r.getMessage()) for r in records if "OpenVINO" in r.getMessage()]
        print(json.dumps({{"devices": sorted({{p.device for p in got + [again]}}), "refused": refused,
                          "said": said, "warned": [r.getMessage() for r in records if r.levelno >= logging.WARNING]}}))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    why = "the OpenVINO plugin found no CPU device"
    assert out["devices"] == [CPU]
    assert out["refused"] == f"openvino=True was requested but {why}"
    assert out["warned"] == []
    assert [level for level, _ in out["said"]] == ["INFO", "DEBUG"]  # once, though 6 scans and 2 sessions
    assert why in out["said"][0][1] and "ONNX Runtime's CPU provider" in out["said"][0][1]


def test_cli_without_an_openvino_device_is_quiet_by_default_and_says_why_with_v():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import no_openvino
        no_openvino.simulate("no-device")
        from age2hie_hub.cli.predict import main
        codes = [main(["--example", "-v"]), main(["--example", "--backend", "auto", "--json"]),
                 main(["--example", "--openvino"])]
        raise SystemExit(sum(c * 10 ** i for i, c in enumerate(codes)))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert run.returncode == 100, run.stderr[-3000:]  # 0, 0, then 1 for --openvino only
    row = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("{")))
    assert (row["backend"], row["device"], row["status"]) == ("onnx", CPU, "ok")
    err = run.stderr.splitlines()
    assert not [line for line in err if line.startswith(("WARNING", "ERROR", "Traceback"))], run.stderr
    assert [line for line in err if "OpenVINO" in line] == [
        "INFO: OpenVINO execution provider not used (the OpenVINO plugin found no CPU device); "
        "running on ONNX Runtime's CPU provider",  # -v only
        "age2hie-predict: error: openvino=True was requested but the OpenVINO plugin found no CPU device",
    ]


def test_two_channel_model_in_challenge_mode_answers_as_torch_does(openvino, tmp_path, capsys):
    # The BONBID-HIE container path (ADC + Z-ADC .mha) on OpenVINO gives the torch backend's probability.
    from inference_helpers import adc_affine, adc_array, make_checkpoint, write_mha

    from age2hie_hub.cli.predict import main
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import export_onnx

    two = make_checkpoint(tmp_path / "two", channels=2)
    export_onnx(from_pretrained(two, device="cpu"), two / "model.onnx")
    inp = tmp_path / "input"
    (inp / "images/skull-stripped-adc-brain-mri").mkdir(parents=True)
    (inp / "images/z-score-adc").mkdir(parents=True)
    write_mha(inp / "images/skull-stripped-adc-brain-mri/case-ADC_ss.mha", adc_array(), adc_affine())
    z = np.random.default_rng(2).standard_normal((40, 48, 20)).astype(np.float32)
    write_mha(inp / "images/z-score-adc/Zmap_case.mha", z, adc_affine())
    answers, probabilities = [], []
    for backend in ("torch", "onnx"):
        out = tmp_path / f"out-{backend}"
        assert main(["--grand-challenge", str(inp), str(out), "--model", str(two), "--backend", backend]) == 0
        answers.append(json.loads((out / "2-year-neurocognitive-outcome.json").read_text()))
        printed = capsys.readouterr().out
        probabilities.append(float(printed.split("P(adverse outcome) = ")[1].split()[0]))
    assert answers[0] == answers[1] and abs(probabilities[0] - probabilities[1]) <= 1e-3
