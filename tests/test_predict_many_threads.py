"""predict_many runs the torch forward on the cores its reader workers leave, and gives the threads back."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from inference_helpers import adc_affine, adc_array, make_checkpoint, write_nifti

import age2hie_hub.onnx.providers as providers
from age2hie_hub.inference import Prediction, Predictor
from age2hie_hub.inference.predictor import forward_threads

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor.from_pretrained(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "outcome"), device="cpu")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    return [write_nifti(folder / f"s{i}.nii.gz", adc_array(seed=i), adc_affine()) for i in range(3)]


@pytest.fixture
def threads_seen(predictor, monkeypatch):
    """torch's intra-op thread count at each forward of ``predictor``."""
    seen: list[int] = []
    run = predictor.backend.run

    def spy(batch):
        seen.append(torch.get_num_threads())
        return run(batch)

    monkeypatch.setattr(predictor.backend, "run", spy)
    return seen


@pytest.fixture
def two_threads(torch_threads):
    torch_threads(2)


def test_on_two_cores_with_two_readers_the_forward_runs_on_one_thread(predictor, scans, threads_seen,
                                                                     two_threads, monkeypatch):
    monkeypatch.setattr(providers, "physical_cores", lambda: 2)
    results = predictor.predict_many(scans, batch_size=2, workers=2, progress=False)
    assert threads_seen == [1, 1] and predictor.last_stats.forward_threads == 1
    assert torch.get_num_threads() == 2  # given back
    # Same predictions as one scan at a time with both threads.
    singles = [predictor.predict(s).probability for s in scans]
    assert np.allclose([r.probability for r in results], singles, atol=1e-5)
    assert threads_seen[2:] == [2, 2, 2]


def test_spare_cores_are_kept_and_the_count_is_never_raised(predictor, scans, threads_seen, two_threads,
                                                           monkeypatch):
    monkeypatch.setattr(providers, "physical_cores", lambda: 8)
    predictor.predict_many(scans, batch_size=4, workers=2, progress=False)
    assert threads_seen == [2]  # 8 cores - 2 readers = 6, but only 2 were set
    assert predictor.last_stats.forward_threads == 2


def test_threads_are_given_back_after_a_failure_and_an_abandoned_iteration(predictor, scans, two_threads,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setattr(providers, "physical_cores", lambda: 2)
    with pytest.raises(Exception, match="missing.nii.gz"):
        predictor.predict_many([scans[0], tmp_path / "missing.nii.gz"], workers=2, progress=False)
    assert torch.get_num_threads() == 2
    results = predictor.iter_predictions(scans, batch_size=1, workers=2, progress=False)
    index, first = next(results)
    assert isinstance(first, Prediction) and torch.get_num_threads() == 1  # inside the run
    results.close()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("backend", [SimpleNamespace(backend="onnx", device="cpu"),
                                     SimpleNamespace(backend="torch", device="cuda:0")])
def test_other_backends_and_devices_are_left_alone(backend, two_threads, monkeypatch):
    monkeypatch.setattr(providers, "physical_cores", lambda: 2)
    with forward_threads(backend, 2) as threads:
        assert threads == 0 and torch.get_num_threads() == 2
    # Negative control: the torch CPU backend under the same conditions is limited.
    with forward_threads(SimpleNamespace(backend="torch", device="cpu"), 2) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
