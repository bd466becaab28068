"""extract.overlap: the prefetching of chunks and the background part writes keep order, bound memory
and raise every error where the sequential loop raised it."""

from __future__ import annotations

import threading
import time

import pytest

from extract.overlap import InBackground, prefetched


class Boom(RuntimeError):
    pass


def _source(n: int, log: dict, fail_at: int | None = None):
    try:
        for i in range(n):
            log.setdefault("started", []).append(i)
            log.setdefault("threads", set()).add(threading.current_thread().name)
            if i == fail_at:
                raise Boom(f"item {i}")
            yield i
    finally:
        log["closed"] = True


def _workers(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetched_yields_every_item_in_order_from_another_thread():
    log: dict = {}
    assert list(prefetched(_source(50, log), name="t-order")) == list(range(50))
    assert log["threads"] == {"t-order"}
    assert log["closed"]
    assert not _workers("t-order")


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_prefetched_never_runs_more_than_ahead_items_before_the_caller(ahead):
    log: dict = {}
    seen = []
    for i in prefetched(_source(12, log), ahead=ahead, name="t-ahead"):
        time.sleep(0.01)  # give the producer every chance to run ahead
        started = len(log["started"])
        seen.append(started - (i + 1))
        assert started <= i + 1 + ahead
    assert max(seen) == ahead  # it does run ahead: the overlap is real, and bounded
    assert not _workers("t-ahead")


def test_prefetched_raises_an_items_error_after_the_items_before_it():
    log: dict = {}
    got = []
    with pytest.raises(Boom, match="item 3"):
        got.extend(prefetched(_source(10, log, fail_at=3), name="t-err"))
    assert got == [0, 1, 2]
    assert log["closed"]
    assert not _workers("t-err")


def test_prefetched_closed_early_stops_and_closes_the_source():
    log: dict = {}
    for i in prefetched(_source(1000, log), name="t-close"):
        if i == 2:
            break
    assert log["closed"]
    assert len(log["started"]) <= 4  # items 0..2 taken, at most one more begun
    assert not _workers("t-close")


def test_prefetched_error_in_the_caller_stops_the_producer():
    log: dict = {}
    with pytest.raises(Boom):
        for _ in prefetched(_source(1000, log), name="t-caller"):
            raise Boom("caller")
    assert log["closed"]
    assert not _workers("t-caller")


def test_prefetched_rejects_no_lookahead():
    with pytest.raises(ValueError, match="ahead"):
        list(prefetched(iter([1]), ahead=0))


def test_in_background_runs_calls_in_order_on_one_other_thread():
    done, threads = [], set()

    def call(i):
        time.sleep(0.002 * (i % 3))
        threads.add(threading.current_thread().name)
        done.append(i)

    with InBackground(pending=3, name="t-bg") as bg:
        for i in range(30):
            bg.submit(call, i)
    assert done == list(range(30))
    assert len(threads) == 1 and threading.main_thread().name not in threads


def test_in_background_bounds_the_unfinished_calls():
    release = threading.Event()
    running = []

    def call(i):
        running.append(i)
        release.wait(5)

    bg = InBackground(pending=2, name="t-bound")
    bg.submit(call, 0)
    bg.submit(call, 1)
    blocked = threading.Thread(target=bg.submit, args=(call, 2))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # the third waits for the first to finish
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    with bg:
        pass
    assert running == [0, 1, 2]


def test_in_background_raises_a_failed_call_at_the_next_submit():
    def fail():
        raise Boom("write failed")

    bg = InBackground(name="t-fail")
    bg.submit(fail)
    time.sleep(0.05)
    with pytest.raises(Boom, match="write failed"):
        bg.submit(lambda: None)
    bg.__exit__(Boom, None, None)


def test_in_background_raises_a_failed_call_when_the_block_ends():
    def fail():
        time.sleep(0.05)
        raise Boom("last write failed")

    with pytest.raises(Boom, match="last write failed"), InBackground(name="t-end") as bg:
        bg.submit(fail)


def test_in_background_left_by_an_error_cancels_the_calls_not_started():
    started = []
    gate = threading.Event()

    def call(i):
        started.append(i)
        gate.wait(5)

    with pytest.raises(Boom, match="caller"), InBackground(pending=5, name="t-cancel") as bg:
        for i in range(4):
            bg.submit(call, i)
        time.sleep(0.05)
        threading.Timer(0.2, gate.set).start()  # the running call ends after the block has cancelled the rest
        raise Boom("caller")
    assert started == [0]  # the running call finished; the three waiting never ran
