"""One scan's work on a few threads (_threads), and glibc keeping scan-sized blocks (_memory): same values,
errors kept, no nesting."""
from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from age2hie_hub import _threads
from age2hie_hub._memory import glibc
from age2hie_hub._threads import allowed_threads, beside, run_all, scan_threads, split, usable_cores

two_cores = pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable cores")


def _noting_job():
    """(an Event set when the job starts, the job: it returns the thread it ran on)."""
    started = threading.Event()

    def job():
        started.set()
        return threading.get_ident()

    return started, job


def test_one_thread_unless_asked_and_never_nested():
    assert allowed_threads() == 1
    with scan_threads(64):
        assert allowed_threads() == usable_cores()  # never more than the cores
        with scan_threads(1):
            assert allowed_threads() == 1
        assert allowed_threads() == usable_cores()
        # Work that runs on the pool's threads has the default allowance: it does not spread again.
        started = threading.Event()

        def allowance():
            started.set()
            return allowed_threads()

        work = beside(allowance)
        assert started.wait(10)  # running (on the pool when there are 2 cores), not left for result() to do
        assert work.result() == 1
    assert allowed_threads() == 1


def test_beside_runs_now_on_one_thread_and_hands_back_errors():
    here = threading.get_ident()
    assert beside(threading.get_ident).result() == here
    failed = beside(int, "not a number")
    with pytest.raises(ValueError, match="not a number"):
        failed.result()


@two_cores
def test_beside_runs_on_another_thread_when_allowed():
    started, job = _noting_job()
    with scan_threads(2):
        work = beside(job)
        assert started.wait(10)  # started at once, on the pool
        assert work.result() != threading.get_ident()
        with pytest.raises(ValueError):
            beside(int, "x").result()


@two_cores
def test_work_at_cue_waits_for_the_cue_and_runs_at_result_without_one():
    from age2hie_hub._threads import cue

    started, job = _noting_job()
    with scan_threads(2):
        waiting = beside(job, at_cue=True)
        assert not started.wait(0.2)  # nothing cued it yet
        cue()
        assert started.wait(10)  # started by the cue, on the pool
        assert waiting.result() != threading.get_ident()
        started.clear()
        never_cued = beside(job, at_cue=True)
        assert not started.wait(0.2)
        assert never_cued.result() == threading.get_ident()  # no cue: run by result(), here
        cue()  # nothing left waiting: a no-op
        with pytest.raises(ValueError):
            beside(int, "x", at_cue=True).result()


@two_cores
def test_run_all_runs_side_by_side():
    """Both tasks wait for each other: this only finishes when they run at the same time."""
    barrier = threading.Barrier(2, timeout=10)

    def task(value):
        barrier.wait()
        return value

    with scan_threads(2):
        assert run_all([lambda: task("a"), lambda: task("b")]) == ["a", "b"]


def test_run_all_in_order_on_the_calling_thread_by_default():
    order = []
    assert run_all([lambda i=i: order.append(i) or i * i for i in range(4)]) == [0, 1, 4, 9]
    assert order == [0, 1, 2, 3]


@two_cores
def test_run_all_does_queued_tasks_itself_when_the_pool_is_busy():
    """With the pool's thread held by work put beside, the calling thread does every part instead of waiting."""
    release = threading.Event()
    with scan_threads(2):
        busy = [beside(release.wait, 10) for _ in range(usable_cores() - 1)]
        here = threading.get_ident()
        ran_on = run_all([threading.get_ident for _ in range(3)])
        release.set()
        [b.result() for b in busy]
    assert ran_on == [here] * 3


@pytest.mark.parametrize("threads", [1, 2])
def test_run_all_raises_the_first_error_once_no_task_runs(threads):
    finished = []

    def ok(i):
        finished.append(i)
        return i

    def bad(message):
        raise RuntimeError(message)

    with scan_threads(threads):
        with pytest.raises(RuntimeError, match="second"):
            run_all([lambda: ok(0), lambda: bad("second"), lambda: ok(2), lambda: bad("fourth")])
        assert sorted(finished) == ([0, 2] if allowed_threads() > 1 else [0])  # on one thread: stops there


def test_split_covers_the_range_in_pieces_of_at_least_least():
    assert split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split(10, 4, least=4) == [(0, 5), (5, 10)]
    assert split(3, 4, least=8) == [(0, 3)]  # too small to share out
    assert split(0, 2) == [(0, 0)]


@pytest.mark.parametrize("sigmas, mode", [((1.0, 1.0, 1.0), "reflect"), ((1.3, 0.0, 0.8), "nearest"),
                                          ((0.0, 2.0, 0.0), "nearest")])
def test_gaussian_on_threads_is_the_gaussian_on_one(sigmas, mode):
    from age2hie_hub.preprocess.resample import gaussian_smooth

    x = np.random.default_rng(3).random((70, 90, 41), dtype=np.float32)
    one = gaussian_smooth(x, sigmas, mode=mode)
    with scan_threads(4):
        assert np.array_equal(gaussian_smooth(x, sigmas, mode=mode), one)
    assert not np.array_equal(gaussian_smooth(x[::-1], sigmas, mode=mode)[::-1], x)  # it does smooth


_FAULTS = r"""
import resource, sys
import numpy as np
from age2hie_hub._memory import settle_allocator

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):  # scan-sized temporaries, written and freed
        a = np.ones(5 << 20, np.uint8); b = np.ones(3 << 20, np.uint8); del a, b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

first = faults()
assert settle_allocator() and settle_allocator()
print(first, faults())
"""


@pytest.mark.skipif(not glibc(), reason="the allocator rule is glibc's")
def test_scan_sized_blocks_stop_faulting_after_settle_allocator():
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True).stdout
    before, after = map(int, out.split())
    assert before > 1000  # fresh pages for every block: 5 x 8 MiB
    assert after < before / 10


@pytest.fixture(scope="module")
def brain_age_config():
    from age2hie_hub.hub import read_config
    from age2hie_hub.hub.resolve import resolve_checkpoint

    config = read_config(resolve_checkpoint("brain-age").folder)  # bundled with the package
    assert config.input_qc and config.preprocess.crop == "brain"  # QC beside an Otsu/brain crop preprocessing
    return config


def _head(seed: int):
    from age2hie_hub.io import Volume

    rng = np.random.default_rng(seed)
    g = np.indices((90, 120, 120), dtype=np.float32)
    inside = ((g[0] - 40) / 34) ** 2 + ((g[1] - 60) / 48) ** 2 + ((g[2] - 62) / 40) ** 2 < 1
    data = np.where(inside, 90 + 20 * rng.standard_normal(inside.shape), 2 * rng.random(inside.shape))
    affine = np.array([[0, 0, 2.0, -120], [2.0, 0, 0, -130], [0, 2.0, 0, -80], [0, 0, 0, 1]])
    return Volume(np.asfortranarray(data.astype(np.float32)), affine, {"source": f"head{seed}.nii.gz"})


def _same_prepared_on_threads(scan, config) -> None:
    from age2hie_hub.inference.inputs import prepare

    one = prepare(scan, None, config)
    with scan_threads(2):
        spread = prepare(scan, None, config)
    assert np.array_equal(spread.array, one.array)
    assert spread.warnings == one.warnings and spread.notes == one.notes


def test_prepare_on_threads_is_prepare_on_one(brain_age_config):
    _same_prepared_on_threads(_head(1), brain_age_config)


def test_prepare_on_threads_is_prepare_on_one_real_t1(brain_age_config, shared_data):
    scans = sorted((shared_data / "ixi_t1").glob("sub-*/anat/*_T1w.nii.gz"))[:2]
    if not scans:
        pytest.skip(f"no IXI T1 under {shared_data / 'ixi_t1'}")
    for scan in scans:
        _same_prepared_on_threads(scan, brain_age_config)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_qc_error_comes_first_as_on_one_thread(brain_age_config, monkeypatch, threads):
    import age2hie_hub.inference.qc as qc
    import age2hie_hub.preprocess as preprocess

    def qc_broke(*args):
        raise RuntimeError("qc broke")

    def preprocess_broke(*args, **kwargs):
        raise ValueError("preprocess broke")

    from age2hie_hub.inference.inputs import prepare

    monkeypatch.setattr(qc, "qc_warnings", qc_broke)
    monkeypatch.setattr(preprocess, "preprocess", preprocess_broke)
    with scan_threads(threads), pytest.raises(RuntimeError, match="qc broke"):
        prepare(_head(2), None, brain_age_config)


@two_cores
def test_work_beside_that_no_thread_has_started_is_done_by_its_caller():
    """Behind other callers' work on a busy pool, result() does the work itself instead of waiting."""
    release = threading.Event()
    with scan_threads(2):
        busy = [beside(release.wait, 10) for _ in range(usable_cores() - 1)]
        queued = beside(threading.get_ident)
        assert queued.result() == threading.get_ident()
        release.set()
        assert all(b.result() for b in busy)


@pytest.mark.parametrize("oblique", [False, True])
def test_masked_resampling_on_threads_is_the_one_on_one(oblique):
    """A skull-stripped map (exact zeros outside) anti-aliased by normalised convolution: the values' and the
    mask's smoothings and products run side by side, with the same result."""
    from age2hie_hub.preprocess.resample import resample_array

    rng = np.random.default_rng(8)
    g = np.indices((96, 96, 30), dtype=np.float32)
    brain = ((g[0] - 48) / 40) ** 2 + ((g[1] - 47) / 36) ** 2 + ((g[2] - 15) / 13) ** 2 < 1
    data = np.where(brain, 1.2e-3 + 2e-4 * rng.standard_normal(brain.shape), 0).astype(np.float32)
    source = np.diag([0.9, 0.9, 2.2, 1.0])
    if oblique:
        c, s = np.cos(0.2), np.sin(0.2)
        source[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ source[:3, :3]
    target = np.diag([3.5, 3.5, 3.5, 1.0])
    target[:3, 3] = [10, 10, 5]
    one = resample_array(data, source, target, (20, 20, 14), antialias=True, zero_background=True)
    with scan_threads(2):
        assert np.array_equal(resample_array(data, source, target, (20, 20, 14), antialias=True,
                                             zero_background=True), one)
    assert np.count_nonzero(one) > 100 and np.count_nonzero(one == 0) > 100  # brain and background both


@two_cores
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_starts_a_pool_of_its_own():
    """The parent's pool threads do not exist in a forked child; its work must still run there (on threads)."""
    import os

    with scan_threads(2):
        beside(int, "1").result()  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when work put beside runs on a pool thread of its own
        started, job = _noting_job()
        with scan_threads(2):
            work = beside(job)
            ok = started.wait(10) and work.result() != threading.get_ident()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
