"""Answers in the shape Chat Completions clients read.

An answer's ``message.content`` is a string: the text, with each generated item referenced in
Markdown at its place — ``![output0](URL)`` for what a page shows as a picture, ``[output1.wav](URL)``
for the rest — where URL is absolute (the configured public URL, else the request's own base
URL) or, with ``media_format: "base64"``, a ``data:`` URI. The same items come structured in
``message.media`` (modality, MIME type, URL or data, byte size and the modality's size facts), and,
when the request asks for audio output (``modalities: ["text", "audio"]`` / ``audio: {...}``),
the first generated audio item also comes in OpenAI's ``message.audio`` shape.

What a modality is written as (suffix, MIME type, bytes), its size facts and how a page shows
it come from its registered spec (:class:`codi2.core.modality.ModalitySpec`).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Any

from codi2.core.types import Media
from codi2.errors import MessageError
from codi2.server.stores import new_id

#: OpenAI's ``message.audio`` (and the ``audio`` request field) is about this modality
OPENAI_AUDIO_MODALITY = "audio"
#: the formats ``audio.format`` may ask for (OpenAI also lists mp3, aac and opus: not written here)
AUDIO_FORMATS = ("wav", "flac", "pcm16")


@dataclass(frozen=True)
class MediaFormat:
    """How the server writes and a page shows one modality."""

    suffix: str  # ".png"
    mime_type: str  # "image/png"
    display: str  # "image" | "audio" | "video" | "text" | "download"


def media_format(spec: Any) -> MediaFormat:
    """The written suffix, MIME type and display of a modality (its registered spec)."""
    return MediaFormat(spec.suffix, spec.mime_type, spec.display)


def file_name(item: Media, fmt: MediaFormat) -> str:
    return f"{item.name or item.modality}{fmt.suffix}"


def markdown_ref(entry: dict[str, Any], fmt: MediaFormat) -> str:
    """``![name](url)`` for items a page shows as pictures, ``[file](url)`` for the rest."""
    label = entry["name"].replace("[", "(").replace("]", ")")
    target = entry.get("url") or f"data:{fmt.mime_type};base64,{entry['data']}"
    return f"![{label}]({target})" if fmt.display == "image" else f"[{label}{fmt.suffix}]({target})"


# a link to this server's media, whatever the origin and path prefix (a public URL may have one)
_MEDIA_LINK = re.compile(r"!?\[[^\]\n]*\]\([^\s)]*?/v1/media/([A-Za-z0-9_-]+)\)")


def split_media_links(markdown: str) -> list[tuple[str, str]]:
    """An answer's ``content`` as ``("text", piece)`` and ``("media", id)`` for each link to
    ``/v1/media/{id}``, in order: the inverse of how answers are written."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _MEDIA_LINK.finditer(markdown):
        if match.start() > pos:
            pieces.append(("text", markdown[pos : match.start()]))
        pieces.append(("media", match.group(1)))
        pos = match.end()
    if pos < len(markdown):
        pieces.append(("text", markdown[pos:]))
    return pieces


def join_markdown(text: str, ref: str) -> str:
    """``text`` followed by a media reference, with a space between when ``text`` needs one."""
    return f"{text}{' ' if text and not text[-1].isspace() else ''}{ref}"


@dataclass
class AudioRequest:
    """What the request's ``modalities``/``audio`` fields ask for: audio output in ``format``."""

    format: str = "wav"

    @classmethod
    def of(cls, modalities: list[str] | None, audio: dict[str, Any] | None) -> AudioRequest | None:
        wanted = audio is not None or OPENAI_AUDIO_MODALITY in (modalities or [])
        if not wanted:
            return None
        fmt = str((audio or {}).get("format") or "wav").lower()
        if fmt not in AUDIO_FORMATS:
            raise MessageError(f"audio.format {fmt!r} is not written by this server; use one of {', '.join(AUDIO_FORMATS)}")
        return cls(fmt)

    def encode(self, item: Media) -> bytes:
        if self.format == "pcm16":  # raw 16-bit little-endian samples at the item's rate
            import numpy as np

            return (np.clip(np.asarray(item.data, dtype=np.float32), -1, 1) * 32767).astype("<i2").tobytes()
        from codi2.core.media import media_to_bytes

        return media_to_bytes(item, self.format)


class MessageBuilder:
    """Builds one answer's message as its items arrive (whole answers and streams alike).

    ``put(data, mime_type, filename) -> id`` stores an item for ``GET /v1/media/{id}``;
    ``base_url`` is what absolute URLs start with.
    """

    def __init__(self, *, modalities: Any, base_url: str, inline: bool, store: Any, audio: AudioRequest | None, ttl: float):
        self.modalities = modalities
        self.base_url, self.inline, self.store, self.audio, self.ttl = base_url.rstrip("/"), inline, store, audio, ttl
        self.content = ""  # the Markdown string so far
        self.media: list[dict[str, Any]] = []
        self.audio_message: dict[str, Any] | None = None
        self._after_media = False

    def text(self, delta: str) -> str:
        """Add answer text; returns what was added to ``content`` (a space after a media link)."""
        if delta and self._after_media and not delta[0].isspace():
            delta = " " + delta
        self._after_media = self._after_media and not delta
        self.content += delta
        return delta

    def item(self, item: Media) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """Encode and store ``item``: (its Markdown reference as a content delta, its media
        entry, its ``message.audio`` object when this is the audio the request asked for)."""
        spec = self.modalities.get(item.modality)
        data, fmt = spec.encode(item), media_format(spec)
        facts = {k: v for k, v in spec.summary(item).items() if v is not None and k not in ("type", "name", "mime_type")}
        entry = {"modality": item.modality, "name": item.name or item.modality, "mime_type": fmt.mime_type,
                 "display": fmt.display, "bytes": len(data), **facts}  # fmt: skip
        if spec.preview is not None:  # a picture of an item no page can show natively
            entry["preview"] = "data:image/png;base64," + base64.b64encode(spec.preview(item)).decode("ascii")
        if self.inline:
            entry["data"] = base64.b64encode(data).decode("ascii")
        else:
            entry["url"] = f"{self.base_url}/v1/media/{self.store.put(data, fmt.mime_type, file_name(item, fmt))}"
        delta = join_markdown(self.content, markdown_ref(entry, fmt))[len(self.content) :]
        self.content += delta
        self._after_media = True
        self.media.append(entry)
        audio = None
        if self.audio is not None and self.audio_message is None and item.modality == OPENAI_AUDIO_MODALITY:
            audio = {"id": f"audio_{new_id()}", "data": base64.b64encode(self.audio.encode(item)).decode("ascii"),
                     "expires_at": int(time.time() + self.ttl), "transcript": ""}  # fmt: skip
            self.audio_message = audio
        return delta, entry, audio

    def message(self, text: str) -> dict[str, Any]:
        """The whole message (``text`` is the answer's text alone, also the audio transcript)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "text": text, "media": self.media}
        if self.audio_message is not None:
            message["audio"] = {**self.audio_message, "transcript": text}
        return message


def check_output_modalities(model: Any, modalities: list[str] | None) -> None:
    """Refuse ``modalities`` naming something the model cannot write (text always can)."""
    if not modalities or model is None:
        return
    known = {"text", *getattr(model, "decoders", {})}
    unknown = [m for m in modalities if m not in known]
    if unknown:
        raise MessageError(f"modalities: this model cannot write {', '.join(map(repr, unknown))}; it writes {', '.join(sorted(known))}")


def public_base_url(request: Any, configured: str | None) -> str:
    """The URL media links start with: the configured public URL, else the request's own."""
    return (configured or str(request.base_url)).rstrip("/")


__all__ = ["AudioRequest", "MediaFormat", "MessageBuilder", "check_output_modalities", "media_format", "public_base_url"]
