"""Answering a chat request: the job for the generation thread, whole or streamed.

Whole answers are one ``chat.completion`` object. With ``stream: true`` the answer goes out as
Server-Sent Events in OpenAI's ``chat.completion.chunk`` format as it is made::

    data: {"object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant", "content": ""}, ...}]}
    data: {... "delta": {"content": "Here it"} ...}                      text, token by token
    data: {... "delta": {}, ...,  "progress": {"modality": "image", "step": 3, "steps": 20}}
    data: {... "delta": {"content": "![output0](http://.../v1/media/ID)", "media": [{...}]} ...}
    data: {... "delta": {}, "finish_reason": "stop"}], "session_id": "..."}
    data: [DONE]

Each item is sent as soon as its decoder finishes; ``progress`` (diffusion steps) is an extra
field clients may ignore. The stream starts only once the job starts generating, so a request
that is refused, queued past its deadline or invalid gets its ordinary JSON error and status;
an error after that is one ``event: error`` with ``{"error": {"type", "message"}}`` and ends the
stream. A client that goes away cancels its generation at the next token or diffusion step.
Admission, deadlines and sessions are the same as for whole answers (the same job runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from codi2.core.messages import MediaPart, Message, TextPart
from codi2.core.modality import resolve_modalities
from codi2.errors import Codi2Error
from codi2.server.engine import Engine, ServerError
from codi2.server.inputs import GenerationParams
from codi2.server.responses import AudioRequest, MessageBuilder

log = logging.getLogger("codi2.server")

Emit = Callable[[dict[str, Any]], None]


def _assistant_message(answer: Any) -> Message:
    parts = [TextPart(p) if isinstance(p, str) else MediaPart(p.modality, p, name=p.name, target=False) for p in answer.parts]
    return Message("assistant", parts or [TextPart("")])


class _TextStream:
    """Turns the partial answer's growing text into deltas (holding back an incomplete
    character: byte-level tokenizers decode half a UTF-8 sequence as U+FFFD)."""

    def __init__(self) -> None:
        self.sent = ""

    def delta(self, text: str, final: bool = False) -> str:
        if not final:
            text = text.rstrip("\ufffd")
        if len(text) <= len(self.sent):
            return ""
        out, self.sent = text[len(self.sent) :], text
        return out


class Work:
    """One request's job for the generation thread: history, generation, media encoding, saving.

    Run alone, ``work(check)`` does it all (``check`` is the deadline hook). The engine's
    batches call the same steps one by one: :meth:`prepare` (the conversation to answer),
    :meth:`progress` for each event of its row and :meth:`finish` with its answer.

    With ``emit``, the answer is also reported as it is made: ``{"content": delta}`` for text,
    ``{"content": ref, "media": [entry], "audio": {...} | None}`` per finished item and
    ``{"progress": {...}}`` while an item renders (``{"start": True}`` first of all).
    """

    def __init__(self, engine: Engine, messages: list[Message], params: GenerationParams, *, base_url: str,
                 emit: Emit | None = None):  # fmt: skip
        self.engine, self.messages, self.params, self.base_url = engine, messages, params, base_url
        self.emit = self._emitter(emit) if emit is not None else None
        self.streamed = False  # whether the client got any of the answer (a retry would repeat it)
        options = params.generate_options(engine.settings)
        self.seed: int | None = options.pop("seed", None)
        self.max_new_tokens: int | None = options.pop("max_new_tokens", None)
        self.options = options  #: the other options: requests batch together when theirs are equal
        self.audio = AudioRequest.of(params.modalities, params.audio.model_dump() if params.audio else None)
        self.check: Callable[..., None] = lambda *_: None

    def _emitter(self, emit: Emit) -> Emit:
        def send(event: dict[str, Any]) -> None:
            self.streamed = self.streamed or "start" not in event
            emit(event)

        return send

    @property
    def streams(self) -> bool:
        return self.emit is not None

    def prepare(self, check: Callable[..., None]) -> list[Message]:
        """The conversation to answer (history included); raises what makes this request bad."""
        self.check = check
        model, sid = self.engine.model, self.params.session_id
        history: list[Message] = []
        if sid is not None:
            session = self.engine.sessions.get(sid)
            if session is None:
                raise ServerError(404, "session_not_found", f"session {sid!r} is unknown or expired; start a new one")
            history = session.messages
        self.conversation = [*history, *self.messages]
        self.prompt_tokens = len(model.sequence(self.conversation, training=False, add_generation_prompt=True))
        modalities = resolve_modalities(getattr(model, "modalities", None))  # how each item is written and shown
        self.builder = MessageBuilder(modalities=modalities, base_url=self.base_url, inline=self.params.media_format == "base64",
                                      store=self.engine.media, audio=self.audio, ttl=self.engine.settings.media_ttl)  # fmt: skip
        self.text = _TextStream()
        self.rendering: str | None = None  # the modality of the item being rendered
        if self.emit is not None:
            self.emit({"start": True})
        return self.conversation

    def progress(self, event: str, answer: Any) -> None:
        """The generation's progress hook for this request: its deadline, then its stream."""
        self.check()  # past the deadline, cancelled or disconnected: stop here
        emit, builder = self.emit, self.builder
        if emit is None:
            return
        if event == "token":
            delta = self.text.delta(answer.text + answer.draft)
            if delta:
                emit({"content": builder.text(delta)})
        elif event.startswith("render:"):
            delta = self.text.delta(answer.text, final=True)
            if delta:
                emit({"content": builder.text(delta)})
            self.rendering = event.split(":", 1)[1]
            emit({"progress": {"modality": self.rendering, "step": 0, "steps": None}})
        elif event == "step" and answer.render_steps is not None:
            done, total = answer.render_steps
            emit({"progress": {"modality": self.rendering, "step": done, "steps": total}})
        elif event == "media":
            ref, entry, audio_out = builder.item(answer.parts[-1])
            emit({"content": ref, "media": [entry], "audio": audio_out})

    def finish(self, answer: Any) -> dict[str, Any]:
        """The ``chat.completion`` for ``answer``; sends what the stream has not yet, saves the session."""
        builder, text, sid = self.builder, self.text, self.params.session_id
        # what the progress hook did not report (all of a whole answer; in a stream, text held
        # back and parts a wrapper added after generating), in order
        send = self.emit or (lambda event: None)
        seen, items = 0, 0
        for part in answer.parts:
            if isinstance(part, str):
                tail = part[max(0, len(text.sent) - seen) :]
                seen += len(part)
                if tail:
                    text.sent += tail
                    send({"content": builder.text(tail)})
            else:
                items += 1
                if items > len(builder.media):
                    ref, entry, audio_out = builder.item(part)
                    send({"content": ref, "media": [entry], "audio": audio_out})
        if self.params.store:
            sid = self.engine.sessions.save(sid, [*self.conversation, _assistant_message(answer)])
        return {
            "id": f"chatcmpl-{int(time.time() * 1000):x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": getattr(self.engine.model, "source_name", "codi2"),
            "session_id": sid,
            "choices": [{"index": 0, "message": builder.message(answer.text), "finish_reason": answer.finish_reason}],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": answer.tokens,
                      "total_tokens": self.prompt_tokens + answer.tokens},
        }  # fmt: skip

    def __call__(self, check: Callable[..., None]) -> dict[str, Any]:
        conversation = self.prepare(check)
        own = {k: v for k, v in (("seed", self.seed), ("max_new_tokens", self.max_new_tokens)) if v is not None}
        return self.finish(self.engine.model.generate(conversation, progress=self.progress, **own, **self.options))


def make_work(engine: Engine, messages: list[Message], params: GenerationParams, *, base_url: str,
              emit: Emit | None = None) -> Work:  # fmt: skip
    """The job for the generation thread (see :class:`Work`)."""
    return Work(engine, messages, params, base_url=base_url, emit=emit)


# --- Server-Sent Events ------------------------------------------------------------------------


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _error_body(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ServerError):
        return {"error": {"type": exc.type, "message": exc.message}}
    if isinstance(exc, Codi2Error):
        from codi2.server.app import classify

        status, kind = classify(exc)
        if status >= 500:
            log.error("model error in a stream: %s", exc)
        return {"error": {"type": kind, "message": str(exc)}}
    log.error("unexpected error in a stream", exc_info=exc)
    return {"error": {"type": "internal_error", "message": f"internal error ({type(exc).__name__}); see the server log"}}


async def stream_answer(engine: Engine, messages: list[Message], params: GenerationParams, *, base_url: str,
                        started: float) -> Any:  # fmt: skip
    """A ``text/event-stream`` response for the request, once its job has started generating.

    Raises (before anything is sent) what the job raised if it never started: refusals,
    deadlines and invalid conversations keep their ordinary status and JSON error.
    """
    from fastapi.responses import StreamingResponse

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:  # called on the generation thread
        loop.call_soon_threadsafe(queue.put_nowait, event)

    job = asyncio.ensure_future(engine.run(make_work(engine, messages, params, base_url=base_url, emit=emit), started))
    first = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({job, first}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancel()
        first.cancel()
        raise
    if not first.done():
        first.cancel()
        job.result()  # the job ended before it started generating: raise its error
    chunk_id = f"chatcmpl-{int(time.time() * 1000):x}"
    model_name = getattr(engine.model, "source_name", "codi2")

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})  # fmt: skip

    def event_chunk(event: dict[str, Any]) -> str | None:
        if "progress" in event:
            return chunk({}, progress=event["progress"])
        if "content" in event:
            delta = {"content": event["content"]}
            if event.get("media"):
                delta["media"] = event["media"]
            if event.get("audio"):
                delta["audio"] = event["audio"]
            return chunk(delta)
        return None

    async def body() -> AsyncIterator[str]:
        get: asyncio.Future | None = None
        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, job}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    break
                text = event_chunk(get.result())
                if text:
                    yield text
            while not queue.empty():  # what the job reported before it returned
                text = event_chunk(queue.get_nowait())
                if text:
                    yield text
            result = job.result()
            choice = result["choices"][0]
            audio = choice["message"].get("audio")
            if audio is not None:  # OpenAI streams the transcript in audio deltas: here all at once
                yield chunk({"audio": {"id": audio["id"], "transcript": audio["transcript"]}})
            yield chunk({}, choice["finish_reason"], session_id=result["session_id"])
            if params.stream_options is not None and params.stream_options.include_usage:
                yield _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model_name, "choices": [], "usage": result["usage"]})  # fmt: skip
            engine.served += 1
            yield "data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 — after the stream started, any failure is one error event
            yield _sse(_error_body(exc), event="error")
        finally:
            if get is not None and not get.done():
                get.cancel()
            if not job.done():  # the client went away (or the server stops): stop generating
                job.cancel()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


__all__ = ["Work", "make_work", "stream_answer"]
