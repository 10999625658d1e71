"""The model behind the server: one generation thread, admission control, deadlines.

- One model, one worker thread: generations run one at a time, off the event loop, in the
  order they were admitted. The event loop keeps answering /health, media and refusals.
- Admission: at most ``max_queue`` requests are in flight (being decoded, waiting or
  generating); the next one is refused at once with 429 before its body is read.
- Deadlines: a request that passes ``request_timeout`` gets 504. If it is still queued it never
  runs; if it is generating, the generation stops at the next token (through the ``progress``
  hook of :func:`codi2.core.generation.generate`), freeing the worker for the others.
- Errors stay in their request: an exception in one job becomes that request's error response.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from codi2.server.settings import ServerSettings
from codi2.server.stores import MediaStore, SessionStore

log = logging.getLogger("codi2.server")


class ServerError(Exception):
    """An error with an HTTP status and a machine-readable type (becomes the JSON error body)."""

    def __init__(self, status: int, type: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type, message, headers or {}


class Cancelled(Exception):
    """Raised inside a generation whose request passed its deadline or whose server stops."""


class Job:
    """One request's work for the generation thread, with a flag that stops it early."""

    def __init__(self, work: Callable[[Callable[..., None]], Any], deadline: float):
        self.work, self.deadline = work, deadline
        self.cancelled = threading.Event()

    def check(self, *_: Any) -> None:
        """The ``progress`` hook: stop if cancelled or past the deadline."""
        if self.cancelled.is_set() or time.monotonic() > self.deadline:
            raise Cancelled()

    def __call__(self) -> Any:
        self.check()  # waited too long in the queue: do not start
        return self.work(self.check)


class Engine:
    """Holds the model and everything shared between requests."""

    def __init__(self, settings: ServerSettings, model: Any = None, loader: Callable[[], Any] | None = None):
        if (model is None) == (loader is None):
            raise ValueError("give exactly one of model and loader")
        self.settings = settings
        self.model = model
        self._loader = loader
        self.state = "ready" if model is not None else "loading"
        self.load_error: str | None = None
        self.admitted = 0  # requests in flight; only touched on the event loop
        self.refused = 0
        self.served = 0
        self.sessions = SessionStore(settings.max_sessions, settings.session_ttl,
                                     settings.session_media_bytes, settings.max_session_messages)  # fmt: skip
        self.media = MediaStore(settings.media_store_bytes, settings.media_ttl)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codi2-generate")
        self._jobs: set[Job] = set()

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading the model in the background when a loader was given."""
        if self._loader is not None and self.state == "loading":
            threading.Thread(target=self._load, name="codi2-load", daemon=True).start()

    def _load(self) -> None:
        try:
            model = self._loader()
        except Exception as exc:  # reported by /health and every request; the server stays up
            log.exception("model failed to load")
            self.load_error, self.state = f"{type(exc).__name__}: {exc}", "failed"
            return
        self.model = model
        if self.state == "loading":
            self.state = "ready"

    def close(self) -> None:
        """Refuse new work, stop running and queued generations."""
        self.state = "closing"
        for job in list(self._jobs):
            job.cancelled.set()
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- admission ------------------------------------------------------------------------

    def check_ready(self) -> None:
        if self.state == "ready":
            return
        if self.state in ("closing", "draining"):
            raise ServerError(503, "shutting_down", "the server is shutting down")
        if self.state == "failed":
            raise ServerError(503, "model_failed", f"the model failed to load: {self.load_error}")
        raise ServerError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "5"})

    def admit(self) -> None:
        """Count a request in, or refuse it (429 queue full, 503 not ready)."""
        self.check_ready()
        if self.admitted >= self.settings.max_queue:
            self.refused += 1
            raise ServerError(
                429, "queue_full",
                f"the server is busy: {self.admitted} requests in flight (limit {self.settings.max_queue}); retry later",
                {"Retry-After": "1"},
            )  # fmt: skip
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    # --- running --------------------------------------------------------------------------

    async def run(self, work: Callable[[Callable[..., None]], Any], started: float) -> Any:
        """Run ``work(check)`` on the generation thread; ``check`` is its progress hook.

        Raises ServerError 504 past the deadline and 503 when the server stops meanwhile.
        """
        if self.state != "draining":  # admitted before a shutdown began: still runs
            self.check_ready()
        deadline = started + self.settings.request_timeout
        job = Job(work, deadline)
        self._jobs.add(job)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._worker, job)
        except RuntimeError:  # the worker was shut down
            self._jobs.discard(job)
            raise ServerError(503, "shutting_down", "the server is shutting down") from None
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, Cancelled):
            job.cancelled.set()
            if self.state == "closing":
                raise ServerError(503, "shutting_down", "the server is shutting down") from None
            raise ServerError(
                504, "timeout", f"the request took longer than this server's {self.settings.request_timeout:g} s limit"
            ) from None
        except asyncio.CancelledError:
            job.cancelled.set()
            if self.state == "closing":
                raise ServerError(503, "shutting_down", "the server is shutting down") from None
            raise
        finally:
            self._jobs.discard(job)


__all__ = ["Cancelled", "Engine", "Job", "ServerError"]
