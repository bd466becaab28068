"""Replicates of a resampling loop on the machine's cores, in input order.

Why threads: a bootstrap or refuter replicate of propensity matching is a handful of numpy calls
on cell tables (a Newton solve, ``expit``, sorting), which release the GIL, so two threads keep two
cores busy without pickling the tables to other processes. Why the draws stay outside: the random
inputs of every replicate are drawn in the caller's loop, in the order they always were, and only
the deterministic refits run concurrently — the results are the same numbers, in the same order,
as the sequential loop (tests/test_parallel_replicates.py).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENV_THREADS = "CONVOCAUSAL_THREADS"  # replicate threads; 1 runs them in the caller's thread
CHUNK = 16  # replicates drawn ahead per thread: bounds the draws held in memory at once


def replicate_threads() -> int:
    """Threads for replicates: ``CONVOCAUSAL_THREADS`` if set (≥ 1), else the usable cores (at most 8)."""
    raw = os.environ.get(ENV_THREADS, "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ValueError(f"{ENV_THREADS}={raw!r} is not a whole number of threads") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def map_replicates(fn: Callable[[T], R], inputs: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in inputs]``, with up to ``threads`` calls at a time.

    ``inputs`` is consumed lazily, ``CHUNK`` × threads items ahead, so a generator that draws
    each replicate's random input runs in its own order, in the caller's thread."""
    n = replicate_threads() if threads is None else max(1, threads)
    it: Iterator[T] = iter(inputs)
    if n == 1:
        return [fn(x) for x in it]
    out: list[R] = []
    # a sliding window, not chunks: the next input is drawn while the threads work on the earlier
    # ones (chunk by chunk, the threads sat idle while the caller drew each chunk's inputs)
    window: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="replicate") as pool:
        for x in it:
            window.append(pool.submit(fn, x))
            if len(window) >= CHUNK * n:
                out.append(window.popleft().result())
        out.extend(f.result() for f in window)
    return out
