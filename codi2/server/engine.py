"""The model behind the server: one generation thread, request batching, admission, deadlines.

- One model, one worker thread: generations run off the event loop, in the order they were
  admitted. The event loop keeps answering /health, media and refusals.
- Batching: requests that arrive within ``batch_window`` seconds of the first one waiting (or
  that waited while a batch ran), up to ``max_batch`` and with the same sampling and rendering
  options (seeds and ``max_tokens`` may differ), are generated together by one ``model.generate_batch`` call. Each keeps
  its own deadline and cancellation (the batch's ``should_stop`` takes it out alone), its own
  stream and its own errors: a request whose input is bad fails before the batch starts, and
  if the batch itself fails each request is retried alone (unless it already streamed), so
  one bad item fails only its own request. Each request is answered as soon as its row is
  complete (``on_done``), not when the batch ends. ``max_batch=1``, or a model object without its
  own ``generate_batch`` (a wrapper), runs one request at a time as before.
- Admission: at most ``max_queue`` requests are in flight (being decoded, waiting or
  generating); the next one is refused at once with 429 before its body is read.
- Deadlines: a request that passes ``request_timeout`` gets 504. If it is still queued it never
  runs; if it is generating, the generation stops at the next token (through the ``progress``
  hook of :func:`codi2.core.generation.generate`), freeing the worker for the others.
- Errors stay in their request: an exception in one job becomes that request's error response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
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
        self.future: Future = Future()  # its answer, when it runs in a batch
        self.error: BaseException | None = None  # what stopped it inside a batch

    def stopped(self) -> bool:
        return self.error is not None or self.cancelled.is_set() or time.monotonic() > self.deadline

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
        self._waiting: list[tuple[float, Job]] = []  # batchable jobs not started, with their arrival
        self._arrived = threading.Condition()
        self.batches = 0  # generate_batch calls made, and the requests they answered
        self.batched = 0
        self.largest_batch = 0

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
        with self._arrived:
            waiting, self._waiting = self._waiting, []
            self._arrived.notify_all()
        for _, job in waiting:  # their batch will never run
            _settle(job.future, error=Cancelled())

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
            if self._batchable(work):
                future = asyncio.wrap_future(self._enqueue(job))
            else:
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

    # --- batching -------------------------------------------------------------------------

    def _batchable(self, work: Any) -> bool:
        # the model's class must batch itself: a wrapper that overrides generate (and passes
        # other attributes through) is served one request at a time, through its generate
        return (self.settings.max_batch > 1 and hasattr(work, "prepare")
                and callable(getattr(type(self.model), "generate_batch", None)))  # fmt: skip

    def _enqueue(self, job: Job) -> Future:
        with self._arrived:
            self._waiting.append((time.monotonic(), job))
            try:
                self._worker.submit(self._next_batch)  # one turn per job; a turn finding none left returns
            except RuntimeError:
                self._waiting.pop()
                raise
            self._arrived.notify_all()
        return job.future

    def _next_batch(self) -> None:
        """On the generation thread: wait out the window (unless the batch is full), then run
        the first waiting job with the waiting jobs that share its options."""
        limit = self.settings.max_batch
        with self._arrived:
            if not self._waiting:
                return
            end = self._waiting[0][0] + self.settings.batch_window
            self._arrived.wait_for(lambda: len(self._waiting) >= limit or not self._waiting, max(0.0, end - time.monotonic()))
            if not self._waiting:  # the server closed meanwhile
                return
            key = _options_key(self._waiting[0][1].work)
            jobs = [job for _, job in self._waiting if _options_key(job.work) == key][:limit]
            self._waiting = [(t, job) for t, job in self._waiting if job not in jobs]
        try:
            self._generate_together(jobs)
        except BaseException as exc:  # a bug here must not leave requests waiting for their deadline
            log.exception("a batch failed outside the model")
            for job in jobs:
                _settle(job.future, error=exc)

    def _generate_together(self, jobs: list[Job]) -> None:
        ready, conversations = [], []
        for job in jobs:  # a job that waited too long or whose input is bad fails alone, here
            try:
                job.check()
                conversations.append(job.work.prepare(job.check))
                ready.append(job)
            except BaseException as exc:  # noqa: BLE001 — it is this request's answer
                _settle(job.future, error=exc)
        if not ready:
            return
        self.batches += 1
        self.batched += len(ready)
        self.largest_batch = max(self.largest_batch, len(ready))

        def progress(event: str, index: int, answer: Any) -> None:
            job = ready[index]
            if job.error is None:
                try:
                    job.work.progress(event, answer)
                except Exception as exc:  # noqa: BLE001 — its deadline, disconnect or a broken stream
                    job.error = exc

        answered: set[int] = set()

        def done(index: int, answer: Any) -> None:  # answer each request as soon as its row is complete
            answered.add(index)
            self._answer(ready[index], answer)

        work = ready[0].work
        try:
            answers = self.model.generate_batch(
                conversations, seeds=[job.work.seed for job in ready], max_batch=len(ready), progress=progress,
                max_new_tokens_per_item=[job.work.max_new_tokens for job in ready],
                should_stop=lambda index: ready[index].stopped(), on_done=done,
                defer_media=not any(job.work.streams for job in ready),
                **work.options,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 — not one request's fault that we can tell: retry each alone
            log.warning("a batch of %d failed (%s: %s); answering its requests one at a time", len(ready), type(exc).__name__, exc)
            for index, job in enumerate(ready):
                if index in answered:
                    continue
                if job.error is not None or job.work.streamed:
                    _settle(job.future, error=job.error or exc)
                    continue
                try:
                    _settle(job.future, job())
                except BaseException as exc2:  # noqa: BLE001
                    _settle(job.future, error=exc2)
            return
        for index, (job, answer) in enumerate(zip(ready, answers)):
            if index not in answered:  # a model whose generate_batch does not call on_done
                self._answer(job, answer)

    @staticmethod
    def _answer(job: Job, answer: Any) -> None:
        if job.error is not None or answer.finish_reason == "cancelled":
            _settle(job.future, error=job.error or Cancelled())
            return
        try:
            _settle(job.future, job.work.finish(answer))
        except BaseException as exc:  # noqa: BLE001 — it is this request's answer
            _settle(job.future, error=exc)


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Give a batched job its answer, unless its request stopped waiting (the future is cancelled)."""
    if future.done():
        return
    with contextlib.suppress(InvalidStateError):  # cancelled between the check and the set
        future.set_exception(error) if error is not None else future.set_result(result)


def _options_key(work: Any) -> tuple:
    return tuple(sorted(work.options.items()))


__all__ = ["Cancelled", "Engine", "Job", "ServerError"]
