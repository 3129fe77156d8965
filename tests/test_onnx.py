"""ONNX export (named I/O, dynamic batch, checker, parity) and the torch-free ONNX Runtime backend."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inference_helpers import adc_affine, adc_array, make_checkpoint, write_nifti

from age2hie_hub.errors import CheckpointError
from age2hie_hub.inference import Predictor
from age2hie_hub.onnx.providers import openvino_available, openvino_cpu_device

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint with model.onnx beside its weights, exported once for the module."""
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import export_onnx

    folder = make_checkpoint(tmp_path_factory.mktemp("onnx") / "outcome")
    report = export_onnx(from_pretrained(folder, device="cpu"), folder / "model.onnx")
    return folder, report


@pytest.mark.slow
@pytest.mark.numerics
def test_export_names_inputs_and_outputs_with_a_dynamic_batch(exported):
    import onnx

    folder, report = exported
    # Parity is checked on every CPU provider that may run the file here.
    checked = report.provider.split(", ")
    assert report.ok and report.opset == 18 and checked[0] == "CPUExecutionProvider"
    assert checked[1:] == (["OpenVINOExecutionProvider"] if openvino_available() else [])
    assert report.max_abs_diff["probability"] <= 1e-4
    proto = onnx.load(str(folder / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["volume"]
    assert [o.name for o in proto.graph.output] == ["probability"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 24, 24, 16]
    assert {op.domain: op.version for op in proto.opset_import}[""] == 18
    assert not list(folder.glob(".model.onnx.*"))  # no temp file left


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("provider", ["CPUExecutionProvider", "OpenVINOExecutionProvider"])
def test_onnx_backend_matches_torch(exported, tmp_path, provider):
    openvino = provider == "OpenVINOExecutionProvider"
    if openvino and not openvino_available():
        pytest.skip(f"OpenVINO execution provider unavailable: {openvino_cpu_device()[1]}")
    folder, _ = exported
    scans = [write_nifti(tmp_path / f"s{i}.nii.gz", adc_array(seed=i), adc_affine()) for i in range(3)]
    ort = Predictor.from_pretrained(folder, backend="onnx", device="cpu", openvino=openvino)
    pt = Predictor.from_pretrained(folder, backend="torch", device="cpu")
    got = ort.predict_many(scans, batch_size=3, progress=False)
    want = pt.predict_many(scans, batch_size=3, progress=False)
    assert np.allclose([p.probability for p in got], [p.probability for p in want], atol=1e-4)
    p = got[0]
    assert (p.backend, p.device) == ("onnx", provider)
    assert p.model_file == "model.onnx"
    assert p.model_file_sha256 == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert p.synthetic_model and p.label in ("favourable", "adverse")


@pytest.mark.slow
def test_onnx_backend_runs_with_torch_unavailable(exported, tmp_path):
    folder, _ = exported
    scan = write_nifti(tmp_path / "scan.nii.gz", adc_array(), adc_affine())
    # torch made unimportable: any import of it on the ONNX path fails loudly with the importer's traceback.
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from age2hie_hub.inference import Predictor
        p = Predictor.from_pretrained({str(folder)!r}, backend="onnx", device="cpu").predict({str(scan)!r})
        assert 0 < p.probability < 1 and p.backend == "onnx", p
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]


def test_onnx_backend_without_an_export_says_how_to_make_one(tmp_path):
    folder = make_checkpoint(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="age2hie-export onnx --model"):
        Predictor.from_pretrained(folder, backend="onnx")


def test_export_refuses_old_opsets_and_writes_nothing(tmp_path):
    from age2hie_hub.hub import from_pretrained
    from age2hie_hub.onnx.export import export_onnx

    folder = make_checkpoint(tmp_path / "m")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(from_pretrained(folder), tmp_path / "out.onnx", opset=13)
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".out.onnx*"))


def test_onnx_session_is_a_deprecated_name_of_the_onnx_backend():
    import warnings

    import age2hie_hub.onnx
    from age2hie_hub.onnx import runtime

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current name warns about nothing
        assert age2hie_hub.onnx.OnnxBackend is runtime.OnnxBackend
    for module in (age2hie_hub.onnx, runtime):
        with pytest.warns(DeprecationWarning, match="OnnxSession is now OnnxBackend"):
            assert module.OnnxSession is runtime.OnnxBackend
    with pytest.raises(AttributeError):
        runtime.OnnxSessions  # noqa: B018 - only the one old name is kept


def test_cpu_session_uses_one_intra_op_thread_per_usable_core(monkeypatch):
    # The one CPU session setting that measurably pays (docs/inference.md): an intra-op pool sized to the
    # cores this process may use (container affinity, not the host's count), no inter-op pool.
    import onnxruntime

    from age2hie_hub.hub.resolve import resolve_checkpoint
    from age2hie_hub.onnx import providers, runtime

    path = resolve_checkpoint("age2hie").folder / "model.onnx"
    monkeypatch.setattr(providers.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    session = runtime.OnnxBackend(path, device="cpu", openvino=False)
    options = session.session.get_session_options()
    assert session.threads == options.intra_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Its threads stop spinning when a run ends: the next scan's preprocessing needs the cores.
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert runtime.OnnxBackend(path, device="cpu", threads=3).session.get_session_options().intra_op_num_threads == 3
    # OpenVINO gets the same thread count, and float32 (its default may compute in bf16 on CPUs that have it).
    config = json.loads(providers.openvino_options(3)["load_config"])["CPU"]
    assert config == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "3"}


@pytest.mark.parametrize("has_openvino", [True, False], ids=["openvino", "no-openvino-device"])
def test_providers_fall_back_to_cpu_and_refuse_missing_cuda(monkeypatch, has_openvino):
    # Both OpenVINO states and both CUDA states on any machine: the provider module's own seams are replaced.
    import onnxruntime

    from age2hie_hub.onnx import providers

    why_not = "the OpenVINO plugin found no CPU device"
    state = (object(), "") if has_openvino else (None, why_not)
    monkeypatch.setattr(providers, "openvino_cpu_device", lambda: state)
    monkeypatch.setattr(providers, "_SAID", set())
    cpu = ["OpenVINOExecutionProvider", "CPUExecutionProvider"] if has_openvino else ["CPUExecutionProvider"]
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: gpu)
    monkeypatch.setattr(providers, "cuda_device_count", lambda: 0)  # onnxruntime-gpu on a machine without a GPU
    assert providers.choose_providers("cpu") == cpu
    assert providers.choose_providers("cpu", openvino=False) == ["CPUExecutionProvider"]
    assert providers.choose_providers("auto") == cpu
    with pytest.raises(ValueError, match="no usable CUDA provider"):
        providers.choose_providers("cuda")
    with pytest.raises(ValueError, match="cannot be combined with device='cuda'"):
        providers.choose_providers("cuda", openvino=True)
    if has_openvino:
        assert providers.choose_providers("auto", openvino=True) == cpu
    else:  # only asking for OpenVINO makes its absence an error
        with pytest.raises(ValueError, match=f"openvino=True was requested but {why_not}"):
            providers.choose_providers("auto", openvino=True)
    monkeypatch.setattr(providers, "cuda_device_count", lambda: 1)
    assert providers.choose_providers("auto") == gpu
    assert providers.choose_providers("cuda") == gpu
    assert providers.choose_providers("cpu") == cpu
    if has_openvino:
        assert providers.choose_providers("auto", openvino=True) == cpu  # asked for OpenVINO: the CPU it is
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers.choose_providers("auto") == cpu  # a GPU but CPU-only onnxruntime


def test_cpu_fallback_says_why_once_per_process(monkeypatch, caplog):
    import logging

    from age2hie_hub.onnx import providers

    monkeypatch.setattr(providers, "openvino_cpu_device", lambda: (None, "the OpenVINO plugin found no CPU device"))
    monkeypatch.setattr(providers, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(providers, "_SAID", set())
    with caplog.at_level(logging.DEBUG, logger="age2hie_hub.onnx.providers"):
        for _ in range(3):
            assert providers.choose_providers("auto") == ["CPUExecutionProvider"]
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["INFO", "DEBUG", "DEBUG"]  # one line for the user, never a warning
    assert said[0][1] == ("OpenVINO execution provider not used (the OpenVINO plugin found no CPU device); "
                          "running on ONNX Runtime's CPU provider")


@pytest.mark.slow
def test_export_cli_prints_the_parity_check(tmp_path, capsys):
    from age2hie_hub.cli.export import main

    folder = make_checkpoint(tmp_path / "cli", head="age_softbin")
    out = tmp_path / "exported.onnx"
    assert main(["onnx", "--model", str(folder), "-o", str(out), "--exporter", "torchscript"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "outputs age, age_sd" in text and "max abs diff age" in text
    assert out.is_file()
    # Default output: model.onnx inside a local checkpoint folder, picked up by the ONNX backend.
    assert main(["onnx", "--model", str(folder), "-q"]) == 0
    p = Predictor.from_pretrained(folder, backend="onnx").predict((adc_array(), adc_affine()))
    assert p.task == "brain_age" and p.age_unit == "weeks"


@pytest.mark.slow
def test_onnx_from_other_weights_is_refused(exported, tmp_path):
    import shutil

    folder, _ = exported
    other = make_checkpoint(tmp_path / "other", seed=1)
    shutil.copy(folder / "model.onnx", other / "model.onnx")  # a stale export beside new weights
    with pytest.raises(CheckpointError, match="exported from other weights"):
        Predictor.from_pretrained(other, backend="onnx")


@pytest.mark.slow
@pytest.mark.numerics
def test_hub_checkpoint_with_onnx_runs_both_backends_and_pins_the_commit(exported, tmp_path, monkeypatch):
    """push_to_hub a folder holding model.onnx to the local Hub test server, then load it by name."""
    from hub_server import HubServer

    from age2hie_hub.hub import push_to_hub

    folder, _ = exported
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        commit = push_to_hub(folder, "lab/age2hie-tiny", token=hub.token).oid
        scan = (adc_array(), adc_affine())
        via_onnx = Predictor.from_pretrained("hf-hub:lab/age2hie-tiny", backend="onnx").predict(scan)
        via_torch = Predictor.from_pretrained("hf-hub:lab/age2hie-tiny", device="cpu").predict(scan)
        # auto: one trip to the Hub (one snapshot's model info) finds the weights and the export, and runs ONNX
        before = len(hub.requests)
        auto = Predictor.from_pretrained("hf-hub:lab/age2hie-tiny", backend="auto")
        infos = [p for m, p in hub.requests[before:] if m == "GET" and p.startswith("/api/models/lab/age2hie-tiny")]
        assert len(infos) == 1 and auto.backend.backend == "onnx"
    for p in (via_onnx, via_torch):
        assert (p.model, p.repo_id, p.revision) == ("hf-hub:lab/age2hie-tiny", "lab/age2hie-tiny", commit)
    assert (via_onnx.model_file, via_torch.model_file) == ("model.onnx", "model.safetensors")
    assert via_onnx.model_file_sha256 == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert via_onnx.probability == pytest.approx(via_torch.probability, abs=1e-4)
