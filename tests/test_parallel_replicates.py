"""Bootstrap and refuter replicates on threads give the sequential loop's numbers (methods/parallel.py)."""

from __future__ import annotations

import threading

import pytest

from methods.parallel import CHUNK, ENV_THREADS, map_replicates, replicate_threads
from tests.test_psm import COVARIATES, T, Y, simulate


def test_results_come_back_in_input_order_and_inputs_are_drawn_in_the_callers_thread():
    drawn_in = []

    def inputs():
        for i in range(100):
            drawn_in.append(threading.current_thread().name)
            yield i

    assert map_replicates(lambda x: x * x, inputs(), threads=3) == [i * i for i in range(100)]
    assert set(drawn_in) == {threading.current_thread().name}


def test_inputs_are_drawn_at_most_a_window_ahead_of_the_results():
    done, ahead, lock = [0], [], threading.Lock()

    def inputs():
        for i in range(200):
            with lock:
                ahead.append(i - done[0])
            yield i

    def fn(x):
        with lock:
            done[0] += 1
        return -x

    assert map_replicates(fn, inputs(), threads=2) == [-i for i in range(200)]
    assert max(ahead) <= CHUNK * 2


def test_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV_THREADS, "3")
    assert replicate_threads() == 3
    monkeypatch.setenv(ENV_THREADS, "0")
    assert replicate_threads() == 1
    monkeypatch.setenv(ENV_THREADS, "two")
    with pytest.raises(ValueError, match="CONVOCAUSAL_THREADS='two' is not a whole number"):
        replicate_threads()


def test_matching_on_threads_equals_matching_in_one_thread(monkeypatch):
    from methods.psm import estimate_psm

    df = simulate(4000, seed=5)
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv(ENV_THREADS, threads)
        results[threads] = estimate_psm(df, T, Y, COVARIATES, n_bootstrap=40, n_refute_sims=10, seed=2)
    a, b = results["1"], results["2"]
    assert (a.estimate, a.std_error, a.ci_low, a.ci_high) == (b.estimate, b.std_error, b.ci_low, b.ci_high)
    assert a.extras["bootstrap_percentile_ci"] == b.extras["bootstrap_percentile_ci"]
    assert [(r.refuter, r.new_effect, r.passed) for r in a.refutations] == [
        (r.refuter, r.new_effect, r.passed) for r in b.refutations]
