"""In-memory stores of the server: conversations (sessions) and generated media.

Both are bounded by count or bytes and by age, and evict least-recently-used entries first, so
no sequence of requests can grow the process without limit. Both are shared between the event
loop and the generation thread, hence the locks. Nothing here touches the disk.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from codi2.core.messages import Message

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}$")


def new_id() -> str:
    """An unguessable identifier (URL-safe, 22 characters)."""
    return secrets.token_urlsafe(16)


def valid_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))  # match() would let a trailing newline through ($)


def _media_bytes(messages: list[Message]) -> int:
    total = 0
    for msg in messages:
        for part in msg.media:
            data = getattr(part.source, "data", None)
            total += int(getattr(data, "nbytes", 0) or 0)
    return total


@dataclass
class Session:
    """One conversation: its messages (media included, decoded) and when it was last used."""

    id: str
    messages: list[Message] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    used: float = field(default_factory=time.monotonic)
    nbytes: int = 0


class SessionStore:
    """Conversations by id, bounded by count, idle time and the media bytes they hold."""

    def __init__(self, max_sessions: int, ttl: float, max_bytes: int, max_messages: int):
        self.max_sessions, self.ttl, self.max_bytes, self.max_messages = max_sessions, ttl, max_bytes, max_messages
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.used <= self.ttl:
                break
            self._drop(oldest.id)

    def _drop(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            self._bytes -= session.nbytes

    def get(self, sid: str) -> Session | None:
        """The session, or None if unknown or expired (touching it keeps it alive)."""
        with self._lock:
            self._expire()
            session = self._sessions.get(sid)
            if session is not None:
                session.used = time.monotonic()
                self._sessions.move_to_end(sid)
            return session

    def save(self, sid: str | None, messages: list[Message]) -> str:
        """Store ``messages`` as session ``sid`` (a new id when None); returns the id.

        Only the newest ``max_messages`` messages are kept (a leading system message stays).
        """
        if len(messages) > self.max_messages:
            head = messages[:1] if messages and messages[0].role == "system" else []
            messages = head + messages[len(messages) - (self.max_messages - len(head)) :]
        nbytes = _media_bytes(messages)
        with self._lock:
            sid = sid or new_id()
            old = self._sessions.get(sid)
            session = Session(sid, list(messages), created=old.created if old else time.time(), nbytes=nbytes)
            self._drop(sid)
            self._sessions[sid] = session
            self._bytes += nbytes
            self._expire()
            while len(self._sessions) > 1 and (len(self._sessions) > self.max_sessions or self._bytes > self.max_bytes):
                self._drop(next(iter(self._sessions)))
            return sid

    def delete(self, sid: str) -> bool:
        with self._lock:
            found = sid in self._sessions
            self._drop(sid)
            return found

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass
class StoredMedia:
    data: bytes
    mime_type: str
    filename: str
    created: float = field(default_factory=time.monotonic)


class MediaStore:
    """Encoded generated media by id, for ``GET /v1/media/{id}``; bounded by bytes and age."""

    def __init__(self, max_bytes: int, ttl: float):
        self.max_bytes, self.ttl = max_bytes, ttl
        self._items: OrderedDict[str, StoredMedia] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items:
            key, oldest = next(iter(self._items.items()))
            if now - oldest.created <= self.ttl and self._bytes <= self.max_bytes:
                break
            self._bytes -= len(self._items.pop(key).data)

    def put(self, data: bytes, mime_type: str, filename: str) -> str:
        key = new_id()
        with self._lock:
            self._items[key] = StoredMedia(data, mime_type, filename)
            self._bytes += len(data)
            self._expire()
        return key

    def get(self, key: str) -> StoredMedia | None:
        with self._lock:
            self._expire()
            return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


def describe_messages(messages: list[Message], modalities: Any = None) -> list[dict[str, Any]]:
    """Messages as JSON without the media data (text, and each item's modality and size, as
    ``modalities`` — the served model's — describe them)."""
    from codi2.answers import media_summary
    from codi2.core.messages import TextPart

    out = []
    for msg in messages:
        content: list[dict[str, Any]] = []
        for part in msg.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif hasattr(part.source, "modality"):
                content.append({k: v for k, v in media_summary(part.source, modalities).items() if v is not None})
            else:
                content.append({"type": part.modality, "name": part.name})
        out.append({"role": msg.role, "content": content})
    return out


__all__ = ["MediaStore", "Session", "SessionStore", "describe_messages", "new_id", "valid_id"]
