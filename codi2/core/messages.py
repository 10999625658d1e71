"""Conversations: content-part messages, the placeholder prompt form, and validation.

A conversation is a list of ``{"role": "system"|"user"|"assistant", "content": [parts]}`` where
a part is ``{"type": "text", "text": ...}`` or ``{"type": MODALITY, ...}`` (any registered
modality: image, audio, video, or one a plugin adds) with
the media under ``path``, ``data`` or a key named after its type (path, bytes, PIL image,
numpy array, tensor, ``(array, sample_rate)`` or :class:`~codi2.core.types.Media`).
``content`` may also be a plain string. A text part with ``"encode": true`` is read through
the text encoder and spliced in as features (``<text> f </text>``), like a media item — the
paper's text-only repurposed data.

The placeholder form is for people and the command line::

    parse_prompt("Given the transformation between {a} and {b}, apply it to {c}.",
                 media={"a": "x.png", "b": "y.png", "c": "z.png"})

Braces are escaped as ``{{`` and ``}}``. Every placeholder needs an attachment and every
attachment must be used.

Training marks targets: an assistant message is a target unless it says ``"target": false``;
a media part of a target message is generated (a slot span) unless the part says
``"target": false``, in which case it is read like user media.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codi2.core.modality import resolve_modalities
from codi2.errors import MessageError, PlaceholderError, UnknownModalityError

if TYPE_CHECKING:
    from codi2.core.modality import Modalities

ROLES = ("system", "user", "assistant")


@dataclass
class TextPart:
    text: str


@dataclass
class MediaPart:
    """A media item in a message. ``source`` is whatever the user gave; loading happens later."""

    modality: str
    source: Any
    name: str | None = None
    target: bool = True  # only meaningful in assistant messages
    #: a description of the item; text-conditioned decoders regress to its encoding
    caption: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return repr(self.name)
        if isinstance(self.source, (str, Path)):
            return repr(str(self.source))
        return f"<{self.modality}>"


Part = TextPart | MediaPart


@dataclass
class Message:
    role: str
    parts: list[Part] = field(default_factory=list)
    target: bool = True  # assistant messages: learn to produce this turn

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def media(self) -> list[MediaPart]:
        return [p for p in self.parts if isinstance(p, MediaPart)]


# --- modality of an attachment ------------------------------------------------------------


def infer_modality(source: Any, *, item: str = "attachment", modalities: Modalities | None = None) -> str:
    """An attachment's modality from its type, shape, MIME type, file suffix or magic bytes
    (see :meth:`Modalities.infer`); a typed error when it cannot be told, never None."""
    return resolve_modalities(modalities).infer(source, item=item).name


# --- content-part messages ----------------------------------------------------------------


def _media_from_part(part: Mapping[str, Any], where: str, modalities: Modalities) -> MediaPart:
    modality = part.get("type")
    if not isinstance(modality, str) or modality not in modalities.media:
        raise UnknownModalityError(
            f"{where}: unknown part type {modality!r}; known: text, {', '.join(modalities.media)}"
        )
    sources = [k for k in ("path", "data", modality) if part.get(k) is not None]
    if "url" in part or "image_url" in part:
        raise MessageError(f"{where}: URLs are never fetched; pass the media as 'path' or 'data'")
    if len(sources) != 1:
        raise MessageError(f"{where}: a {modality} part needs exactly one of 'path', 'data' or '{modality}'")
    unknown = set(part) - {"type", "path", "data", modality, "name", "target", "caption"}
    if unknown:
        raise MessageError(f"{where}: unknown keys {sorted(unknown)} in a {modality} part")
    caption = part.get("caption")
    if caption is not None and not isinstance(caption, str):
        raise MessageError(f"{where}: 'caption' must be a string")
    return MediaPart(modality, part[sources[0]], name=part.get("name"), target=bool(part.get("target", True)), caption=caption)


def normalize_messages(messages: str | Sequence[Mapping[str, Any] | Message], media: Mapping[str, Any] | None = None,
                       modalities: Modalities | None = None) -> list[Message]:
    """Turn any accepted conversation form into validated :class:`Message` objects.

    A string is a single user turn in placeholder form (``media`` fills it). A list holds
    dicts in the content-part form or :class:`Message` objects. ``modalities``: the part
    types accepted (default: the registered modalities).
    """
    modalities = resolve_modalities(modalities)
    if isinstance(messages, str):
        return [Message("user", parse_prompt(check_text(messages, "prompt"), media, modalities))]
    if media:
        raise MessageError("media=... goes with a placeholder prompt string, not with a message list")
    if not isinstance(messages, Sequence) or not messages:
        raise MessageError("a conversation must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(messages):
        where = f"message {i}"
        if isinstance(msg, Message):
            out.append(msg)
            continue
        if not isinstance(msg, Mapping):
            raise MessageError(f"{where}: expected a dict with 'role' and 'content', got {type(msg).__name__}")
        unknown = set(msg) - {"role", "content", "target"}
        if unknown:
            raise MessageError(f"{where}: unknown keys {sorted(unknown)}")
        role = msg.get("role")
        if role not in ROLES:
            raise MessageError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        content = msg.get("content")
        if isinstance(content, str):
            parts: list[Part] = [TextPart(content)]
        elif isinstance(content, Sequence) and content:
            parts = []
            for j, part in enumerate(content):
                pw = f"{where}, part {j}"
                if not isinstance(part, Mapping) or "type" not in part:
                    raise MessageError(f"{pw}: expected a dict with a 'type'")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str) or set(part) - {"type", "text", "encode"}:
                        raise MessageError(f"{pw}: a text part is {{'type': 'text', 'text': str}} (optionally 'encode': true)")
                    if part.get("encode"):  # read through the text encoder, like media (text-repurposed data)
                        parts.append(MediaPart("text", part["text"], target=False))
                    else:
                        parts.append(TextPart(part["text"]))
                else:
                    parts.append(_media_from_part(part, pw, modalities))
        else:
            raise MessageError(f"{where}: 'content' must be a string or a non-empty list of parts")
        if role == "system" and any(isinstance(p, MediaPart) for p in parts):
            raise MessageError(f"{where}: system messages hold text only")
        out.append(Message(role, parts, target=bool(msg.get("target", True))))
    for i, message in enumerate(out):
        for j, part in enumerate(message.parts):
            if isinstance(part, TextPart) or (part.modality == "text" and isinstance(part.source, str)):
                check_text(part.text if isinstance(part, TextPart) else part.source, f"message {i}, part {j}")
    return out


def check_text(text: str, where: str) -> str:
    """``text`` if it is valid Unicode text (encodable as UTF-8), else a MessageError.

    Lone surrogates arrive from JSON (``"\\ud800"``) and from undecodable bytes in command-line
    arguments (Python's surrogateescape); tokenizers fail on them with assorted errors.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MessageError(
            f"{where}: the text is not valid UTF-8 (character {e.start + 1} is "
            f"{'a lone surrogate' if 0xD800 <= ord(text[e.start]) <= 0xDFFF else 'not encodable'})"
        ) from None
    return text


# --- placeholder prompts ------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*$")


def parse_prompt(prompt: str, media: Mapping[str, Any] | None = None, modalities: Modalities | None = None) -> list[Part]:
    """Split ``"... {a} ..."`` into text and media parts, checking attachments both ways."""
    modalities = resolve_modalities(modalities)
    media = dict(media or {})
    parts: list[Part] = []
    text: list[str] = []
    used: set[str] = set()
    pos = 0
    for m in _TOKEN.finditer(prompt):
        text.append(prompt[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
            continue
        if token in ("{", "}"):
            raise MessageError(f"prompt, column {m.start() + 1}: unmatched {token!r} (write {token * 2} for a literal brace)")
        name = m.group(1).strip()
        if not _NAME.fullmatch(name):
            raise MessageError(f"prompt, column {m.start() + 1}: invalid placeholder {token!r} (names are letters, digits, _ or -)")
        if name not in media:
            known = ", ".join(sorted(media)) or "none"
            raise PlaceholderError(f"placeholder {{{name}}} has no attachment (attached: {known})")
        if "".join(text):
            parts.append(TextPart("".join(text)))
        text = []
        source = media[name]
        if isinstance(source, Mapping) and "type" in source:
            part = _media_from_part(source, f"attachment {name!r}", modalities)
            part.name = name
        else:
            part = MediaPart(infer_modality(source, item=f"attachment {name!r}", modalities=modalities), source, name=name)
        parts.append(part)
        used.add(name)
    text.append(prompt[pos:])
    if "".join(text):
        parts.append(TextPart("".join(text)))
    unused = sorted(set(media) - used)
    if unused:
        raise PlaceholderError(f"attachment(s) {', '.join(repr(u) for u in unused)} never referenced in the prompt")
    if not parts:
        raise MessageError("the prompt is empty")
    return parts
