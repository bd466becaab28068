"""What a long command says while it works: stage lines on stderr, a bar on a terminal.

Why: ``convocausal run`` spends tens of seconds to minutes in extraction and the questions, and
a silent command looks hung. Every stage ends with one line naming what it did, with counts and
its elapsed time, so a log file (cron, CI) shows where the time went; on a terminal a bar that
redraws in place shows the stage while it runs. Output goes to stderr so stdout stays the
command's result (the table, or JSON a script parses), and the command decides when to be quiet
(``--json`` without ``--progress``, ``--quiet``).

No Dagster here: the runner (``pipelines/runner.py``) drives a :class:`Progress` it is given, and
the bar's counts come from a ``poll`` callable the runner supplies (e.g. the day parts written so
far), read by one small ticker thread only while a bar is shown.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TextIO

PREFIX = "convocausal: "
BAR_WIDTH = 24
TICK_SECONDS = 0.25


def elapsed(seconds: float) -> str:
    """``4.2 s``, ``1 min 05 s``: short enough for a stage line, exact enough to compare runs."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s"


class Stage:
    """One running stage: its count so far, its total, and the summary its last line will carry."""

    def __init__(self, name: str, total: int | None, unit: str, poll: Callable[[], int] | None):
        self.name, self.total, self.unit, self.poll = name, total, unit, poll
        self.done = 0
        self.summary = ""
        self.started = time.perf_counter()

    def update(self, done: int) -> None:
        self.done = done

    def seconds(self) -> float:
        return time.perf_counter() - self.started


class Progress:
    """Stage lines (``enabled``) and, when ``bar`` (default: the stream is a terminal), a live bar.

    ``warn`` lines are findings, not progress: they are printed unless ``warnings`` is False
    (``--quiet``), also when stage lines are off (``--json``), since they say what the result
    is missing.
    """

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, bar: bool | None = None,
                 warnings: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = enabled and (is_tty if bar is None else bar)
        self.warnings = warnings
        self._lock = threading.Lock()
        self._drawn = False

    @classmethod
    def off(cls) -> Progress:
        """Nothing at all: library callers (tests, benchmarks) that did not ask for output."""
        return cls(enabled=False, warnings=False)

    # ------------------------------------------------------------------ lines
    def line(self, text: str) -> None:
        if self.enabled:
            self._write(PREFIX + text)

    def warn(self, text: str) -> None:
        if self.warnings:
            self._write(f"{PREFIX}warning: {text}")

    def _write(self, text: str) -> None:
        with self._lock:
            self._clear()
            print(text, file=self.stream, flush=True)

    # ------------------------------------------------------------------ stages
    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "",
              poll: Callable[[], int] | None = None) -> Iterator[Stage]:
        """Run one stage; on success print ``name: summary (elapsed)``.

        Set ``stage.summary`` inside the block. On an exception the bar is cleared and nothing
        is printed: the error line that follows is the stage's last word.
        """
        st = Stage(name, total, unit, poll)
        stop = threading.Event()
        ticker = None
        if self.bar:
            ticker = threading.Thread(target=self._tick, args=(st, stop), daemon=True, name="convocausal-progress")
            ticker.start()
        try:
            yield st
        except BaseException:
            self._stop(stop, ticker)
            with self._lock:
                self._clear()
            raise
        self._stop(stop, ticker)
        if st.total is not None and not st.done:
            st.done = st.total
        summary = f": {st.summary}" if st.summary else ""
        self.line(f"{st.name}{summary} ({elapsed(st.seconds())})")

    def _stop(self, stop: threading.Event, ticker: threading.Thread | None) -> None:
        stop.set()
        if ticker is not None:
            ticker.join()

    def _tick(self, st: Stage, stop: threading.Event) -> None:
        while True:
            if st.poll is not None:
                with suppress(Exception):  # a count that cannot be read leaves the bar where it was
                    st.done = max(st.done, int(st.poll()))
            with self._lock:
                self._draw(st)
            if stop.wait(TICK_SECONDS):
                return

    def _draw(self, st: Stage) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        if st.total:
            frac = min(st.done / st.total, 1.0)
            filled = round(frac * BAR_WIDTH)
            bar = "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + f"] {st.done}/{st.total} {st.unit}".rstrip()
        else:
            bar = "…"
        text = f"{PREFIX}{st.name} {bar}  {elapsed(st.seconds())}"
        self.stream.write("\r" + text[: max(width - 1, 10)] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
