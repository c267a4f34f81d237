"""Progress a reader can follow: bars and stage lines on the terminal, never on a page.

Long work reports through :func:`bar` (a tqdm bar with the time left) and
:func:`stage` (one line: what starts, what finished and how long it took).
Both write to the file named by ``$FLOWBOUND_PROGRESS`` when it is set: the
book build sets it for every chapter's kernel and copies the file to the
terminal as it grows (:class:`Relay`), so the reader sees each experiment
while it runs and the executed notebooks stay clean. Without it (a script, an
interactive session) they write to stderr.

Used in: the model zoo (training), the experiments (every computed result),
stAdv and the per-digit certificate, and the book build (``flowbound book``,
``flowbound figure``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

__all__ = ["ENV", "Relay", "bar", "finished", "stage", "stream", "timed_stage"]

#: The environment variable naming the file progress goes to.
ENV = "FLOWBOUND_PROGRESS"

_files: dict[str, IO[str]] = {}


def stream() -> IO[str]:
    """Where progress goes: the file ``$FLOWBOUND_PROGRESS`` (appended to), else stderr."""
    path = os.environ.get(ENV)
    if not path:
        return sys.stderr
    handle = _files.get(path)
    if handle is None or handle.closed:
        handle = _files[path] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    return handle


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    disable: bool = False,
    unit: str = "it",
) -> tqdm:
    """A tqdm bar on :func:`stream` (elapsed time, rate and time left), gone when done."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        unit=unit,
        leave=False,
        file=stream(),
        ncols=100,
        mininterval=0.5,
    )


def stage(message: str) -> None:
    """One line on :func:`stream`."""
    print(f"  - {message}", file=stream(), flush=True)


def finished(message: str, seconds: float, detail: str = "") -> None:
    """The line that closes ``message``: its seconds, and ``detail`` when given."""
    stage(f"{message}: done in {seconds:.1f} s" + (f", {detail}" if detail else ""))


@contextmanager
def timed_stage(message: str) -> Iterator[None]:
    """``stage(message)``, then the same line with the seconds it took."""
    stage(f"{message} ...")
    start = time.perf_counter()
    yield
    finished(message, time.perf_counter() - start)


class Relay:
    """Copy what a kernel writes to a progress file onto a terminal as it grows.

    ``with Relay(path):`` sets ``$FLOWBOUND_PROGRESS`` to ``path`` (the kernels
    started inside inherit it), and a thread copies new text to ``out``
    (stderr) every ``interval`` seconds (nothing with ``show=False``: the
    progress is dropped); on exit the rest is copied, the variable restored
    and the file removed.
    """

    def __init__(
        self,
        path: str | Path,
        out: IO[str] | None = None,
        *,
        show: bool = True,
        interval: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.out = out if out is not None else sys.stderr
        self.show = show
        self.interval = interval
        self._stop = threading.Event()
        self._offset = 0
        self._previous: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _copy(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self._offset)
                text = handle.read()
                self._offset = handle.tell()
        except FileNotFoundError:
            return
        if text and self.show:
            self.out.write(text)
            self.out.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._copy()

    def __enter__(self) -> Relay:
        self.path.write_text("")
        self._previous = os.environ.get(ENV)
        os.environ[ENV] = str(self.path)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._copy()
        if self._previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous
        handle = _files.pop(str(self.path), None)
        if handle is not None:
            handle.close()
        self.path.unlink(missing_ok=True)
