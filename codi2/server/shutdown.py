"""Graceful shutdown on SIGTERM/SIGINT: drain, then answer what is left with 503.

1. The signal: stop admitting (new requests get 503 ``shutting_down``; uvicorn closes the
   listening socket), while every request already admitted goes on: decoding, queueing and
   generating as usual.
2. ``shutdown_grace`` seconds later whatever has not finished is stopped: running and queued
   generations end with a 503 JSON answer, media decoding is cancelled (ffmpeg killed).
   No accepted request is left without an answer.
3. uvicorn waits for those answers to go out, runs the app's shutdown, and ``run_server``
   prints that the server stopped and returns 0 (the signal is not re-raised).

A second Ctrl-C forces an immediate exit.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

#: seconds uvicorn waits, beyond the grace period, for the 503 answers to be written
_SEND_MARGIN = 10.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with codi2's two-phase shutdown and exit status 0 on a signal."""

    def __init__(self, config: uvicorn.Config, app: Any, *, quiet: bool = False):
        super().__init__(config)
        self.engine, self.app = app.state.engine, app
        self.quiet = quiet
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self._drain(sig)
        else:  # a second signal: stop what runs now (uvicorn exits without waiting)
            self.stop_in_flight()
        super().handle_exit(sig, frame)

    def _drain(self, sig: int) -> None:
        grace = self.engine.settings.shutdown_grace
        if self.engine.state in ("ready", "loading"):
            self.engine.state = "draining"  # admission refuses with 503; admitted work goes on
        if not self.quiet:
            print(f"codi2: {signal.Signals(sig).name}: no new requests; {self.engine.admitted} in flight get "
                  f"up to {grace:g} s to finish (Ctrl-C again to force)", file=sys.stderr, flush=True)  # fmt: skip
        self._timer = threading.Timer(grace, self.stop_in_flight)
        self._timer.daemon = True
        self._timer.start()

    def stop_in_flight(self) -> None:
        """Answer every admitted request that has not finished with 503: generations stop
        (the engine cancels them), media decoding is cancelled."""
        self.engine.close()
        for cancelled in list(getattr(self.app.state, "decoding", ())):
            cancelled.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version re-raises the signal after shutting down, so the process
        # died by SIGTERM (status -15) before it could say it stopped; codi2 exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            if self._timer is not None:
                self._timer.cancel()


def graceful_timeout(settings: Any) -> float:
    """uvicorn's ``timeout_graceful_shutdown``: the grace period plus time to send the 503s."""
    return float(settings.shutdown_grace) + _SEND_MARGIN


__all__ = ["DrainingServer", "graceful_timeout"]
