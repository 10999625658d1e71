"""What a request may say, and turning it into validated messages.

Media reach the server only as bytes in the request: base64 (plain or a ``data:`` URI) inside
JSON, or a file in a multipart upload. A part that names a path (``"path"``), a URL
(``file://``, ``http://``), or a string that is not base64 is refused with a 400: the server
never opens a file or a URL on a client's behalf. Decoding happens here, before a request
joins the generation queue, so bad media costs the queue nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codi2.attachments import load_attachment
from codi2.core.config import SEED_MAX, format_validation_error
from codi2.core.messages import Message, normalize_messages
from codi2.core.modality import resolve_modalities
from codi2.core.types import Media
from codi2.errors import (
    MediaDecodeError,
    MediaLimitError,
    MessageError,
    PathNotAllowedError,
    UnknownModalityError,
)
from codi2.server.settings import ServerSettings

if TYPE_CHECKING:
    from codi2.core.modality import Modalities

# --- the JSON request -----------------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class AudioOutput(BaseModel):
    """OpenAI's ``audio`` request field; codi2 models have no voices, so ``voice`` is accepted and ignored."""

    model_config = ConfigDict(extra="forbid")
    format: str = "wav"
    voice: str | dict[str, Any] | None = None


class GenerationParams(BaseModel):
    """Sampling and rendering options (all optional; the model's defaults otherwise)."""

    max_tokens: int | None = Field(None, ge=1, description="longest answer in tokens")
    temperature: float | None = Field(None, ge=0, le=10, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="same seed, same answer")
    steps: int | None = Field(None, ge=1, description="diffusion steps per media item")
    guidance: float | None = Field(None, ge=0, le=100, description="classifier-free guidance")
    media_format: Literal["url", "base64"] = Field(
        "url", description="generated media as URLs under /v1/media/{id}, or inline base64"
    )
    session_id: str | None = Field(None, description="continue this conversation (from an earlier response)")
    store: bool = Field(True, description="keep the conversation on the server for follow-ups")
    stream: bool = Field(False, description="send the answer as Server-Sent Events (chat.completion.chunk) as it is made")
    stream_options: StreamOptions | None = Field(None, description='{"include_usage": true}: a last chunk with usage')
    modalities: list[str] | None = Field(
        None, description='OpenAI\'s output modalities; with "audio", generated audio also comes as message.audio'
    )
    audio: AudioOutput | None = Field(None, description="OpenAI's audio output options (format; the voice is ignored)")

    def generate_options(self, settings: ServerSettings) -> dict[str, Any]:
        if self.max_tokens is not None and self.max_tokens > settings.max_new_tokens:
            raise MessageError(f"max_tokens {self.max_tokens} is over this server's limit of {settings.max_new_tokens}")
        if self.steps is not None and self.steps > settings.max_steps:
            raise MessageError(f"steps {self.steps} is over this server's limit of {settings.max_steps}")
        options = {"max_new_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                   "seed": self.seed, "steps": self.steps, "guidance": self.guidance}  # fmt: skip
        return {k: v for k, v in options.items() if v is not None}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    # what Chat Completions clients send back with an earlier answer (its own fields and
    # codi2's): accepted and not read — the answer's content (and the media it links) is
    name: str | None = None
    audio: dict[str, Any] | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    text: str | None = None
    media: list[Any] | None = None
    content: str | list[dict[str, Any]] = Field(
        description='a string, or content parts: {"type": "text", "text": ...}, '
        '{"type": MODALITY (image, audio, video or a plugin\'s), "data": BASE64_OR_DATA_URI}, '
        '{"type": "image_url", "image_url": {"url": DATA_URI}}, '
        '{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}'
    )


class ChatRequest(GenerationParams):
    """``POST /v1/chat/completions``: OpenAI's chat request shape, with media parts."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Make this purple: "},
                {"type": "image", "data": "data:image/png;base64,iVBORw0KGgo..."}]}],
            "seed": 0,
        }]},
    )  # fmt: skip
    model: str | None = Field(None, description="informational; the server serves one model")
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name of max_tokens")

    def model_post_init(self, context: Any) -> None:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
    n: int = Field(1, ge=1, le=1, description="must be 1")


# --- inline media ---------------------------------------------------------------------------

_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.IGNORECASE)
_FILE_NAME = re.compile(r"\.[A-Za-z0-9]{2,5}$")


def _looks_like_path_or_url(text: str) -> bool:
    """For a string that is not base64: does it look like a file name, path or URL?"""
    head = text[:256].strip()
    return (
        any(c in head for c in "/\\:")
        or head.startswith(("~", "."))
        or bool(_FILE_NAME.search(head))
    )


def decode_inline(data: Any, where: str, settings: ServerSettings) -> tuple[bytes, str | None]:
    """(bytes, declared MIME type or None) of a base64 string or base64 ``data:`` URI."""
    if not isinstance(data, str):
        raise MessageError(f"{where}: 'data' must be a base64 string, got {type(data).__name__}")
    mime = None
    payload = data
    if data[:5].lower() == "data:":
        match = _DATA_URI.match(data)
        if not match:
            raise MediaDecodeError(f"{where}: a data URI must be base64: data:<type>;base64,<data>")
        mime, payload = match.group(1), data[match.end() :]
    # base64 grows data by 4/3: refuse before decoding anything over the per-item limit
    if len(payload) > (settings.limits.max_bytes * 4) // 3 + 4:
        raise MediaLimitError(f"{where}: over the {settings.limits.max_bytes}-byte limit per media item")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        if mime is None and _looks_like_path_or_url(data):
            raise PathNotAllowedError(
                f"{where}: {data[:80]!r} looks like a path or URL; the server never reads files or URLs — "
                "send the media's bytes as base64 (or upload it to /v1/chat/completions/multipart)"
            ) from None
        raise MediaDecodeError(f"{where}: 'data' is not valid base64") from None
    return raw, mime


def _modality_of_mime(mime: str | None, modalities: Modalities) -> str | None:
    spec = modalities.by_mime(mime) if mime else None
    return spec.name if spec is not None and not spec.is_text else None


def _media_part(part: Mapping[str, Any], where: str, settings: ServerSettings, modalities: Modalities) -> dict[str, Any]:
    kind = part.get("type")
    if "path" in part or "file" in part:
        raise PathNotAllowedError(
            f"{where}: 'path' is not accepted; the server never reads files — send the bytes as base64 'data'"
        )
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), Mapping) else part.get("image_url")
        if not isinstance(url, str) or not url.lower().startswith("data:"):
            if isinstance(url, str) and _looks_like_path_or_url(url):
                raise PathNotAllowedError(f"{where}: URLs and paths are never fetched; send a base64 data URI")
            raise MessageError(f"{where}: image_url.url must be a base64 data URI (data:image/png;base64,...)")
        modality, data, name = "image", url, None
    elif kind == "input_audio":
        spec = part.get("input_audio")
        if not isinstance(spec, Mapping) or "data" not in spec:
            raise MessageError(f"{where}: input_audio needs {{'data': BASE64, 'format': 'wav'}}")
        modality, data, name = "audio", spec["data"], None
    elif kind in modalities.media:
        unknown = set(part) - {"type", "data", "name"}
        if "url" in part:
            raise PathNotAllowedError(f"{where}: URLs are never fetched; send the bytes as base64 'data'")
        if unknown:
            raise MessageError(f"{where}: unknown keys {sorted(unknown)} in a {kind} part (use 'data' and 'name')")
        if "data" not in part:
            raise MessageError(f"{where}: a {kind} part needs 'data' (base64 or a data URI)")
        modality, data, name = kind, part["data"], part.get("name")
    else:
        raise UnknownModalityError(
            f"{where}: unknown part type {kind!r}; known: text, {', '.join(modalities.media)}, image_url, input_audio"
        )
    if name is not None and (not isinstance(name, str) or len(name) > 64):
        raise MessageError(f"{where}: 'name' must be a string of at most 64 characters")
    raw, mime = decode_inline(data, where, settings)
    declared = _modality_of_mime(mime, modalities)
    if mime is not None and declared != modality:
        raise MediaDecodeError(f"{where}: a {modality} part carries a {mime} data URI")
    media = load_attachment(raw, name=name or "media", modality=modality, limits=settings.limits,
                            video_frames=settings.video_frames, label=f"in {where}", modalities=modalities)  # fmt: skip
    media.name = name
    return {"type": modality, "data": media, **({"name": name} if name else {})}


def parse_chat_messages(request: ChatRequest, settings: ServerSettings, modalities: Modalities | None = None,
                        media_store: Any = None) -> list[Message]:  # fmt: skip
    """The request's messages with every media item decoded and checked (runs off the loop).
    ``modalities``: the served model's (default: the registered ones). With ``media_store``,
    assistant answers' links to this server's media become the items."""
    modalities = resolve_modalities(modalities)
    if len(request.messages) > settings.max_messages:
        raise MessageError(f"{len(request.messages)} messages, over this server's limit of {settings.max_messages}")
    texts = [m.content if isinstance(m.content, str) else "" for m in request.messages]
    texts += [p.get("text") for m in request.messages if isinstance(m.content, list) for p in m.content]
    check_text_size(texts, settings)
    out = []
    for i, msg in enumerate(request.messages):
        if isinstance(msg.content, str) and msg.role == "assistant" and media_store is not None:
            # an earlier answer sent back as it came: its links to this server's media are the items
            content = linked_media_parts(msg.content, media_store, f"message {i}", settings, modalities)
            out.append({"role": msg.role, "content": content})
            continue
        if isinstance(msg.content, str):
            out.append({"role": msg.role, "content": msg.content})
            continue
        if len(msg.content) > settings.max_parts:
            raise MessageError(f"message {i}: {len(msg.content)} parts, over the limit of {settings.max_parts}")
        content = []
        for j, part in enumerate(msg.content):
            where = f"message {i}, part {j}"
            if part.get("type") == "text":
                if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
                    raise MessageError(f"{where}: a text part is {{'type': 'text', 'text': str}}")
                content.append(part)
            else:
                item = _media_part(part, where, settings, modalities)
                if msg.role == "assistant":
                    item["target"] = False  # earlier answers are history, read like user media
                content.append(item)
        out.append({"role": msg.role, "content": content})
    return normalize_messages(out, modalities=modalities)


def linked_media_parts(text: str, store: Any, where: str, settings: ServerSettings, modalities: Modalities) -> list[dict[str, Any]]:
    """Content parts of an answer's Markdown: its links to ``/v1/media/{id}`` of this server
    become the stored items (looked up in memory; nothing is fetched)."""
    from codi2.server.responses import split_media_links

    parts: list[dict[str, Any]] = []
    for kind, piece in split_media_links(text):
        if kind == "text":
            parts.append({"type": "text", "text": piece})
            continue
        stored = store.get(piece) if valid_media_id(piece) else None
        if stored is None:
            raise MessageError(f"{where}: its link to media {piece!r} is unknown or expired here; send the item "
                               "inline as a content part, or continue with session_id")  # fmt: skip
        media = load_attachment(stored.data, name=stored.filename, limits=settings.limits, video_frames=settings.video_frames,
                                label=f"in {where}", modalities=modalities)  # fmt: skip
        parts.append({"type": media.modality, "data": media, "target": False})
    return parts or [{"type": "text", "text": ""}]


def valid_media_id(text: str) -> bool:
    from codi2.server.stores import valid_id

    return valid_id(text)


def check_text_size(texts: list[Any], settings: ServerSettings) -> None:
    """Refuse a request whose text is over ``max_text_chars`` before it is tokenized (a 10 MB
    prompt took 18 s and +360 MB only to be refused as too many tokens)."""
    total = sum(len(t) for t in texts if isinstance(t, str))
    if total > settings.max_text_chars:
        raise MessageError(f"the request holds {total} characters of text, over this server's limit of {settings.max_text_chars}")


# --- the multipart request ------------------------------------------------------------------

MULTIPART_FIELDS = {"prompt", "system", *GenerationParams.model_fields} - {"stream_options", "modalities", "audio"}


def parse_multipart(
    fields: Mapping[str, str],
    files: Mapping[str, tuple[bytes, str | None, str | None]],
    settings: ServerSettings,
    modalities: Modalities | None = None,
) -> tuple[list[Message], GenerationParams]:
    """A placeholder prompt (``prompt``: "Make {a} blue"), one uploaded file per placeholder
    (the form field's name is the placeholder's), and the generation options as fields."""
    modalities = resolve_modalities(modalities)
    unknown = set(fields) - MULTIPART_FIELDS
    if unknown:
        raise MessageError(f"unknown form field(s) {sorted(unknown)}; files go in fields named after their placeholder")
    prompt = fields.get("prompt")
    if not prompt:
        raise MessageError("the form needs a 'prompt' field (text with {name} placeholders for the uploaded files)")
    if len(files) > settings.max_parts:
        raise MessageError(f"{len(files)} files, over the limit of {settings.max_parts}")
    check_text_size([prompt, fields.get("system")], settings)
    try:
        params = GenerationParams.model_validate({k: v for k, v in fields.items() if k in GenerationParams.model_fields})
    except ValidationError as exc:
        raise MessageError(f"form fields: {format_validation_error(exc)}") from None
    media: dict[str, Media] = {}
    for field_name, (data, content_type, filename) in files.items():
        label = f"{filename!r} (field {field_name!r})" if filename else repr(field_name)
        declared = _modality_of_mime(content_type, modalities)
        if content_type and declared is None and content_type != "application/octet-stream":
            kinds = ", ".join(modalities[m].mime_type for m in modalities.media)
            raise MediaDecodeError(f"content type {content_type!r} is not a media type this server reads ({kinds}, ...)", item=label)
        media[field_name] = load_attachment(data, name=field_name, modality=declared, limits=settings.limits,
                                            video_frames=settings.video_frames, label=label, modalities=modalities)  # fmt: skip
    messages = normalize_messages(prompt, media, modalities)
    if fields.get("system"):
        messages = [*normalize_messages([{"role": "system", "content": fields["system"]}], modalities=modalities), *messages]
    return messages, params


__all__ = ["ChatRequest", "GenerationParams", "PathNotAllowedError", "decode_inline",
           "parse_chat_messages", "parse_multipart"]  # fmt: skip
