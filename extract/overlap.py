"""Overlapping a run's stages on a second core: the next chunk read while this one is extracted, and
the parts written while the next is.

Why: extraction's loop is a chain of polars and DuckDB calls, each parallel inside but with serial
stretches between (Python glue, single-threaded kernels, file I/O), so over a 1M-conversation loop
the process kept 1.3 of 2 cores busy. Reading and validating chunk k+1 needs nothing from chunk k's
signals, and writing chunk k's parts nothing from chunk k+1, so the three can run at once; polars
and DuckDB release the GIL inside their calls, so threads suffice and nothing is copied between
processes. Results keep their order and errors surface where the sequential loop raised them: an
item's error when that item is asked for, a write's error before the run ends.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = "item", "end", "error"


def prefetched(items: Iterable[T], ahead: int = 1, name: str = "prefetch") -> Iterator[T]:
    """``items`` in their order, each produced on a worker thread while the caller works on the one before.

    At most ``ahead`` items are produced before the caller has taken them (memory: one chunk per step of
    ``ahead`` beyond the one in hand). An exception raised producing an item is raised here, when that
    item is asked for, after every item before it. Closing this generator early (``break``, an error in
    the caller) stops the producer after the item it is on and closes ``items``."""
    if ahead < 1:
        raise ValueError(f"prefetched: ahead must be at least 1, got {ahead}")
    out: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(ahead)
    stop = threading.Event()

    def produce() -> None:
        it = iter(items)
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    out.put((_END, None))
                    return
                out.put((_ITEM, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            out.put((_ERROR, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            kind, value = out.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            slots.release()  # the caller holds this item now: the producer may start the next
            yield value
    finally:
        stop.set()
        slots.release()  # wake a producer waiting for a slot, so it sees ``stop``
        worker.join()


class InBackground:
    """Calls run one at a time on one worker thread, in the order given; at most ``pending`` unfinished.

    For the part writes of a run: the caller goes on with the next chunk while this one's parts are
    written. ``submit`` first raises the error of any call that has failed (the run stops about where
    the sequential loop would have); leaving the ``with`` block waits for every call and raises the
    first error. A block left by an error of its own cancels the calls not yet started and waits for
    the running one, so no write is left in flight."""

    def __init__(self, pending: int = 2, name: str = "background") -> None:
        if pending < 1:
            raise ValueError(f"InBackground: pending must be at least 1, got {pending}")
        self._pending = pending
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._futures: deque[Future] = deque()

    def submit(self, fn: Callable[..., object], *args, **kwargs) -> None:
        self._raise_failed()
        while len(self._futures) >= self._pending:
            self._futures.popleft().result()
        self._futures.append(self._pool.submit(fn, *args, **kwargs))

    def wait(self) -> None:
        """Every call submitted so far finished; the first error among them raised."""
        while self._futures:
            self._futures.popleft().result()

    def _raise_failed(self) -> None:
        if any(f.done() and f.exception() is not None for f in self._futures):
            self.wait()  # raises the first error, in submission order

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:
                for f in self._futures:
                    f.cancel()
        finally:
            self._pool.shutdown(wait=True)
