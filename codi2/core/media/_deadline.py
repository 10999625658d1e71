"""Time bounds for decoding: each item gets ``MediaLimits.max_decode_seconds`` of wall time,
and a caller (a server request) may set a sooner deadline and a cancel flag for everything
decoded inside :func:`decode_deadline`. Pillow loops check the clock between frames; an ffmpeg
process is killed by a watchdog thread the moment either runs out.
"""

from __future__ import annotations

import contextlib
import contextvars
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from codi2.errors import MediaTimeoutError


@dataclass(frozen=True)
class _Stop:
    deadline: float | None
    cancelled: threading.Event | None


_STOP: contextvars.ContextVar[_Stop | None] = contextvars.ContextVar(
    "codi2_decode_stop", default=None
)


@contextlib.contextmanager
def decode_deadline(
    deadline: float | None = None, cancelled: threading.Event | None = None
) -> Iterator[None]:
    """Media decoded inside this block (and in threads started with its context, as
    ``asyncio.to_thread`` does) stop with :class:`~codi2.errors.MediaTimeoutError` once
    ``time.monotonic()`` passes ``deadline`` or ``cancelled`` is set."""
    token = _STOP.set(_Stop(deadline, cancelled))
    try:
        yield
    finally:
        _STOP.reset(token)


class DecodeClock:
    """One item's decoding budget: ``max_decode_seconds`` from now, or the caller's deadline
    when that comes sooner."""

    def __init__(self, seconds: float, item: str):
        stop = _STOP.get()
        self.item, self.seconds = item, seconds
        self.deadline = time.monotonic() + seconds
        self.cancelled = stop.cancelled if stop else None
        self.external = bool(stop and stop.deadline is not None and stop.deadline < self.deadline)
        if self.external:
            self.deadline = stop.deadline  # type: ignore[union-attr]

    def expired(self) -> str | None:
        """Why decoding must stop now, or None."""
        if self.cancelled is not None and self.cancelled.is_set():
            return "the request was cancelled (the client went away)"
        if time.monotonic() > self.deadline:
            if self.external:
                return "the request's deadline passed"
            return f"decoding took longer than {self.seconds:g} s (max_decode_seconds)"
        return None

    def check(self) -> None:
        reason = self.expired()
        if reason:
            raise MediaTimeoutError(
                f"decoding stopped: {reason}", item=self.item, external=self.external
            )

    @contextlib.contextmanager
    def watch(self, proc: subprocess.Popen) -> Iterator[None]:
        """Kill ``proc`` when the budget runs out; on leaving, raise if that happened."""
        fired: list[str] = []
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(0.05):
                reason = self.expired()
                if reason:
                    fired.append(reason)
                    proc.kill()
                    return

        thread = threading.Thread(target=watchdog, name="codi2-decode-watchdog", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
        if fired:
            raise MediaTimeoutError(
                f"decoding stopped: {fired[0]}", item=self.item, external=self.external
            )
