"""The FastAPI application: routes, the JSON error shape, and the request guard.

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /v1/chat/completions``            OpenAI-style chat; media inline as base64; ``stream``
  sends Server-Sent Events (:mod:`codi2.server.streaming`), answers are shaped for Chat
  Completions clients (:mod:`codi2.server.responses`)
- ``POST /v1/chat/completions/multipart``  the same with uploaded files and a placeholder prompt
- ``GET  /v1/media/{id}``                  generated media (PNG, WAV, MP4)
- ``GET/DELETE /v1/sessions/{id}``         a kept conversation (text and media descriptions)
- ``GET  /v1/models``, ``GET /v1/plugins``, ``GET /v1/examples``, ``GET /health``
- ``GET  /``                               the web chat page

Every error is ``{"error": {"type": ..., "message": ...}}`` with a 4xx status for the client's
mistakes, 429/503 when the server cannot take the request now, 504 past the deadline and 500
for a bug (logged with its traceback; the message does not leak internals).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from codi2 import __version__
from codi2.core.media import decode_deadline
from codi2.core.messages import Message
from codi2.core.modality import resolve_modalities
from codi2.errors import (
    Codi2Error,
    MediaDecodeError,
    MediaError,
    MediaLimitError,
    MediaTimeoutError,
    MessageError,
    PlaceholderError,
    UnknownModalityError,
)
from codi2.server.engine import Engine, ServerError
from codi2.server.inputs import (
    ChatRequest,
    GenerationParams,
    PathNotAllowedError,
    parse_chat_messages,
    parse_multipart,
)
from codi2.server.responses import check_output_modalities, public_base_url
from codi2.server.settings import ServerSettings
from codi2.server.stores import describe_messages, valid_id
from codi2.server.streaming import make_work, stream_answer

log = logging.getLogger("codi2.server")

GENERATION_PATHS = {"/v1/chat/completions": "json", "/v1/chat/completions/multipart": "multipart"}
STATIC_FILES = {"chat.js": "text/javascript", "chat.css": "text/css"}
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: data:; "
       "script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'")  # fmt: skip


def error_response(status: int, type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type, "message": message}}, status_code=status, headers=headers)


def classify(exc: Codi2Error) -> tuple[int, str]:
    """HTTP status and error type of a codi2 error raised by a request's input."""
    if isinstance(exc, MediaTimeoutError) and exc.external:  # decoding hit the request's deadline
        return 504, "timeout"
    for cls, status, name in (
        (PathNotAllowedError, 400, "path_not_allowed"), (PlaceholderError, 400, "placeholder_mismatch"),
        (MessageError, 400, "invalid_request"), (UnknownModalityError, 400, "unknown_modality"),
        (MediaLimitError, 400, "media_limit"), (MediaDecodeError, 400, "media_decode"),
        (MediaError, 400, "media_error"),
    ):  # fmt: skip
        if isinstance(exc, cls):
            return status, name
    from codi2.errors import ConfigError

    if isinstance(exc, ConfigError):  # generation options out of range
        return 400, "invalid_request"
    return 500, "model_error"


# --- the guard: admission, body size, content type (before any body is read) -----------------


class RequestGuard:
    """ASGI middleware for the generation routes: 503/429 before reading the body, 415 for a
    wrong content type, 413 past ``max_body_bytes`` (read in chunks, never all at once)."""

    def __init__(self, app: Any, engine: Engine, decoding: set | None = None):
        self.app, self.engine = app, engine
        self.decoding = decoding if decoding is not None else set()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = GENERATION_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if scope["type"] == "http" and _ambiguous_length(scope["headers"]):
            return await error_response(400, "invalid_request", "a request may not carry both Content-Length "
                                        "and Transfer-Encoding")(scope, receive, send)  # fmt: skip
        if kind is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            self._check_content_type(kind, headers.get("content-type", ""))
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.engine.settings.max_body_bytes):
                raise self._too_large()
            self.engine.admit()
        except ServerError as exc:
            return await error_response(exc.status, exc.type, exc.message, exc.headers)(scope, receive, send)
        scope["codi2.admitted_at"] = admitted = time.monotonic()  # the request's deadline counts from here
        cancelled = threading.Event()  # set when the client goes away: stops its media decoding
        watcher: asyncio.Task | None = None
        try:
            try:
                # a client trickling its body must not hold a queue place for long (its own limit,
                # much shorter than the generation's)
                body = await asyncio.wait_for(self._read_body(receive), self.engine.settings.body_timeout)
                if kind == "json":
                    _check_utf8(body)
            except asyncio.TimeoutError:
                return await error_response(408, "request_timeout", "the request body took too long to arrive")(scope, receive, send)
            except ServerError as exc:
                return await error_response(exc.status, exc.type, exc.message, exc.headers)(scope, receive, send)
            messages: asyncio.Queue = asyncio.Queue()
            self.decoding.add(cancelled)
            with decode_deadline(admitted + self.engine.settings.request_timeout, cancelled):
                # its own task, so that a client going away cancels it: a generation then stops
                # at its next token and media decoding is cancelled (ffmpeg killed)
                handler = asyncio.ensure_future(self.app(scope, _replay(body, messages.get), send))
            watcher = asyncio.ensure_future(_watch_disconnect(receive, messages, cancelled, handler))
            try:
                await handler
            except asyncio.CancelledError:
                if not cancelled.is_set():
                    raise  # the server cancelled this request, not the client
        finally:
            if watcher is not None:
                watcher.cancel()
            self.decoding.discard(cancelled)
            self.engine.release()

    def _too_large(self) -> ServerError:
        limit = self.engine.settings.max_body_bytes
        return ServerError(413, "payload_too_large", f"the request body is over this server's {limit}-byte limit")

    @staticmethod
    def _check_content_type(kind: str, content_type: str) -> None:
        mime = content_type.split(";", 1)[0].strip().lower()
        if kind == "json" and not (mime == "application/json" or mime.endswith("+json")):
            raise ServerError(415, "unsupported_media_type",
                              f"this endpoint takes application/json, got {mime or 'no content type'!r}; "
                              "upload files to /v1/chat/completions/multipart")  # fmt: skip
        if kind == "multipart" and mime != "multipart/form-data":
            raise ServerError(415, "unsupported_media_type", f"this endpoint takes multipart/form-data, got {mime or 'no content type'!r}")

    async def _read_body(self, receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ServerError(400, "disconnected", "the client went away")
            size += len(message.get("body", b""))
            if size > self.engine.settings.max_body_bytes:
                raise self._too_large()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)


def _ambiguous_length(headers: list[tuple[bytes, bytes]]) -> bool:
    """Both Content-Length and Transfer-Encoding: the classic request-smuggling shape."""
    names = {k.lower() for k, _ in headers}
    return b"content-length" in names and b"transfer-encoding" in names


def _check_utf8(body: bytes) -> None:
    """JSON bodies are UTF-8 (RFC 8259); say where one is not, as the documented invalid_json."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServerError(400, "invalid_json", f"the body is not valid JSON: invalid UTF-8 at byte {e.start}") from None


async def _watch_disconnect(
    receive: Any, messages: asyncio.Queue, cancelled: threading.Event, handler: asyncio.Future
) -> None:
    """Read the client's messages after the body (the app gets them from ``messages``); when
    it disconnects before its answer is complete, set ``cancelled`` (decoding stops) and
    cancel the request's ``handler`` task (its generation stops)."""
    while True:
        message = await receive()
        await messages.put(message)
        if message["type"] == "http.disconnect":
            if not handler.done():
                cancelled.set()
                handler.cancel()
            return


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: disconnect notices pass through

    return replay


# --- the application ----------------------------------------------------------------------------


def create_app(
    model: Any = None,
    *,
    loader: Any = None,
    settings: ServerSettings | None = None,
    registry: Any = None,
) -> FastAPI:
    """The server for ``model`` (or for what ``loader()`` returns, loaded in the background
    while requests get 503). ``registry`` is what ``/v1/plugins`` describes (default: the
    installed plugins)."""
    from contextlib import asynccontextmanager

    settings = (settings or ServerSettings()).validate()
    engine = Engine(settings, model=model, loader=loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.close()

    app = FastAPI(
        title="codi2", version=__version__, lifespan=lifespan,
        description="CoDi-2 chat: text, images, audio and video in; text and media out. "
                    "Media go in as bytes only (base64 or upload); errors are "
                    '{"error": {"type", "message"}}.',
    )  # fmt: skip
    app.state.engine = engine
    app.state.decoding = set()  # cancel flags of requests decoding media (set on shutdown)
    app.add_middleware(RequestGuard, engine=engine, decoding=app.state.decoding)

    # --- errors -------------------------------------------------------------------------

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(Codi2Error)
    async def _codi2_error(request: Request, exc: Codi2Error) -> JSONResponse:
        if isinstance(exc, MediaTimeoutError) and engine.state == "closing":  # stopped by a shutdown
            return error_response(503, "shutting_down", "the server is shutting down")
        status, kind = classify(exc)
        if status >= 500:
            log.error("model error on %s: %s", request.url.path, exc)
        return error_response(status, kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            where = detail.get("ctx", {}).get("error", "")
            return error_response(400, "invalid_json", f"the body is not valid JSON{f': {where}' if where else ''}")
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors[:5])
        return error_response(400, "invalid_request", text)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and GENERATION_PATHS.get(request.url.path) == "json":
            # FastAPI's answer when json.loads itself fails (nesting too deep for the parser)
            return error_response(400, "invalid_json", "the body is not valid JSON (unparseable, or nested too deeply)")
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")

    # --- chat ---------------------------------------------------------------------------

    async def _answer(request: Request, messages: list[Message], params: GenerationParams) -> Response:
        if params.session_id is not None and not valid_id(params.session_id):
            raise ServerError(400, "invalid_request", "session_id is malformed")
        if params.session_id is not None and engine.sessions.get(params.session_id) is None:
            raise ServerError(404, "session_not_found", f"session {params.session_id!r} is unknown or expired; start a new one")
        check_output_modalities(engine.model, params.modalities)
        started = request.scope.get("codi2.admitted_at", time.monotonic())
        base_url = public_base_url(request, settings.public_url)
        if params.stream:
            return await stream_answer(engine, messages, params, base_url=base_url, started=started)
        result = await engine.run(make_work(engine, messages, params, base_url=base_url), started)
        engine.served += 1
        return JSONResponse(result)

    @app.post("/v1/chat/completions", tags=["chat"], summary="Chat (JSON, media inline as base64)")
    async def chat_completions(request: Request, body: ChatRequest) -> Response:
        """OpenAI-style chat. ``content`` parts may hold media as base64 (plain or a data URI);
        the answer's ``content`` is Markdown text linking each generated item, ``media`` lists
        them (``url`` or ``data``); ``stream: true`` sends ``chat.completion.chunk`` events.
        ``session_id`` continues a conversation the server kept (send only the new turn)."""
        messages = await asyncio.to_thread(parse_chat_messages, body, settings, getattr(engine.model, "modalities", None),
                                           engine.media)  # fmt: skip
        return await _answer(request, messages, body)

    @app.post(
        "/v1/chat/completions/multipart", tags=["chat"], summary="Chat (multipart upload)",
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["prompt"],
            "properties": {"prompt": {"type": "string", "description": "text with {name} placeholders"},
                           "system": {"type": "string"}, "session_id": {"type": "string"},
                           "max_tokens": {"type": "integer"}, "seed": {"type": "integer"},
                           "steps": {"type": "integer"}, "guidance": {"type": "number"},
                           "temperature": {"type": "number"}, "top_p": {"type": "number"},
                           "media_format": {"type": "string", "enum": ["url", "base64"]},
                           "stream": {"type": "boolean"},
                           "store": {"type": "boolean"}},
            "additionalProperties": {"type": "string", "format": "binary",
                                     "description": "one file per placeholder, the field named after it"},
        }}}}},
    )  # fmt: skip
    async def chat_multipart(request: Request) -> Response:
        """``prompt`` ("Make {a} purple") plus one file per placeholder, in a form field of
        that name (``-F a=@square.png``); options as form fields."""
        try:
            form = await request.form(max_files=settings.max_parts, max_fields=64, max_part_size=settings.max_body_bytes)
        except (StarletteHTTPException, MultiPartException) as exc:  # malformed, or over a limit
            raise ServerError(400, "invalid_form", f"unreadable multipart form: {getattr(exc, 'detail', exc)}") from None
        fields: dict[str, str] = {}
        files: dict[str, tuple[bytes, str | None, str | None]] = {}
        try:
            for key, value in form.multi_items():
                if key in fields or key in files:
                    raise ServerError(400, "invalid_form", f"form field {key!r} appears twice")
                if isinstance(value, str):
                    fields[key] = value
                else:
                    files[key] = (await value.read(), value.content_type, value.filename)
        finally:
            await form.close()
        messages, params = await asyncio.to_thread(parse_multipart, fields, files, settings, getattr(engine.model, "modalities", None))
        return await _answer(request, messages, params)

    # --- media and sessions -------------------------------------------------------------

    @app.get("/v1/media/{media_id}", tags=["media"], summary="A generated media file")
    async def get_media(media_id: str) -> Response:
        item = engine.media.get(media_id) if valid_id(media_id) else None
        if item is None:
            raise ServerError(404, "not_found", "no such media (unknown id, or expired)")
        return Response(item.data, media_type=item.mime_type, headers={
            "Content-Disposition": f'inline; filename="{item.filename}"',
            "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
        })  # fmt: skip

    @app.get("/v1/sessions/{session_id}", tags=["sessions"], summary="A kept conversation")
    async def get_session(session_id: str) -> dict[str, Any]:
        session = engine.sessions.get(session_id) if valid_id(session_id) else None
        if session is None:
            raise ServerError(404, "session_not_found", f"session {session_id!r} is unknown or expired")
        return {"id": session.id, "created": int(session.created), "messages": describe_messages(session.messages, getattr(engine.model, "modalities", None))}

    @app.delete("/v1/sessions/{session_id}", tags=["sessions"], summary="Forget a conversation")
    async def delete_session(session_id: str) -> dict[str, Any]:
        if not (valid_id(session_id) and engine.sessions.delete(session_id)):
            raise ServerError(404, "session_not_found", f"session {session_id!r} is unknown or expired")
        return {"id": session_id, "deleted": True}

    # --- about ----------------------------------------------------------------------------

    @app.get("/health", tags=["about"], summary="Liveness and readiness")
    async def health() -> JSONResponse:
        body = {
            "status": {"ready": "ok"}.get(engine.state, engine.state),
            "version": __version__,
            "model": getattr(engine.model, "source_name", None),
            "queue": {"in_flight": engine.admitted, "limit": settings.max_queue},
            "sessions": len(engine.sessions),
            "served": engine.served, "refused": engine.refused,
            "batching": {"max_batch": settings.max_batch, "window_ms": settings.batch_window * 1000,
                         "batches": engine.batches, "requests": engine.batched, "largest": engine.largest_batch},
        }  # fmt: skip
        if engine.load_error:
            body["error"] = engine.load_error
        return JSONResponse(body, status_code=200 if engine.state == "ready" else 503)

    @app.get("/v1/models", tags=["about"], summary="The served model")
    async def models() -> dict[str, Any]:
        engine.check_ready()
        from codi2.api import model_info

        info = model_info(engine.model)
        return {"object": "list", "data": [{"object": "model", "owned_by": "codi2", **info}]}

    @app.get("/v1/examples", tags=["about"], summary="Example prompts (with sample media) for the served model")
    async def examples() -> dict[str, Any]:
        engine.check_ready()
        from codi2.server.examples import load_examples

        modalities = resolve_modalities(getattr(engine.model, "modalities", None))
        return {"examples": await asyncio.to_thread(load_examples, engine.model, modalities)}

    @app.get("/v1/plugins", tags=["about"], summary="Installed plugins and their components")
    async def plugins() -> dict[str, Any]:
        from codi2.registry import default_registry

        reg = registry or default_registry()
        return {"plugins": [info.to_dict() for info in reg.plugins()]}

    # --- the web page ---------------------------------------------------------------------

    page_headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(_web_file("index.html"), headers=page_headers)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:  # a fixed list: no path from the request reaches the disk
            raise ServerError(404, "not_found", "no such file")
        return Response(_web_file(name), media_type=STATIC_FILES[name], headers=page_headers)

    return app


def _web_file(name: str) -> str:
    return (resources.files("codi2") / "web" / name).read_text(encoding="utf-8")


__all__ = ["create_app", "error_response"]
