"""Server settings: where to listen and every limit that keeps one model safe to share."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from codi2.core.media import MediaLimits
from codi2.errors import ConfigError


def _server_limits() -> MediaLimits:
    # Tighter than the library's defaults: decoded media of every admitted request and every
    # kept conversation live in this process's memory.
    return MediaLimits(
        max_bytes=20 * 2**20,
        max_image_pixels=4096 * 4096,
        max_audio_seconds=120.0,
        max_video_pixels=1280 * 720,
        max_video_seconds=120.0,
        max_video_frames=64,
        # decoding work per upload: about 650 frames of 720p, 2,000 of 640x480, at most 30 s
        max_video_decoded_pixels=600_000_000,
        max_decode_seconds=30.0,
        max_audio_samples=16_000_000,
    )


@dataclass
class ServerSettings:
    """Everything ``codi2 serve`` can be told. Defaults suit one user on this machine."""

    host: str = "127.0.0.1"  #: loopback only unless told otherwise
    port: int = 8000
    #: the URL clients reach this server at (``https://chat.example.org``), for the absolute
    #: media links in answers; None: each request's own base URL (its Host header)
    public_url: str | None = None
    #: requests admitted at once (reading, queued or generating); more get 429
    max_queue: int = 16
    #: seconds a request may take, queueing included; past it the answer is 504
    request_timeout: float = 300.0
    #: largest request body (JSON with inline base64, or a multipart upload); more get 413
    max_body_bytes: int = 25 * 2**20
    #: seconds the whole body may take to arrive (a trickling client gets 408 and frees its place)
    body_timeout: float = 30.0
    #: characters of text one request may hold, all messages together (checked before tokenizing)
    max_text_chars: int = 100_000
    #: on SIGTERM/SIGINT: seconds in-flight requests get to finish before they are answered 503
    shutdown_grace: float = 30.0
    #: per media item: bytes, pixels, duration, frames
    limits: MediaLimits = field(default_factory=_server_limits)
    #: frames a video upload is subsampled to (uniformly), bounding its memory
    video_frames: int = 16
    #: messages and content parts one request may hold
    max_messages: int = 64
    max_parts: int = 64
    #: conversations kept (least recently used dropped first), their idle lifetime, their size
    max_sessions: int = 256
    session_ttl: float = 3600.0
    max_session_messages: int = 64
    #: decoded media all kept conversations may hold together (bytes)
    session_media_bytes: int = 1 << 30
    #: generated media kept for /v1/media/{id} (bytes; oldest dropped first) and their lifetime
    media_store_bytes: int = 256 << 20
    media_ttl: float = 3600.0
    #: requests generated together in one batch (1: one at a time); those arriving within
    #: ``batch_window`` seconds of the first one waiting join it
    max_batch: int = 8
    batch_window: float = 0.005
    #: the largest max_tokens and diffusion steps a request may ask for
    max_new_tokens: int = 1024
    max_steps: int = 200

    def validate(self) -> ServerSettings:
        """Raise ConfigError naming the first setting out of range."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port}: must be 0-65535")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url {self.public_url!r}: must start with http:// or https://")
        positive = {
            "max_queue": self.max_queue, "request_timeout": self.request_timeout,
            "max_body_bytes": self.max_body_bytes, "max_sessions": self.max_sessions,
            "session_ttl": self.session_ttl, "max_session_messages": self.max_session_messages,
            "media_store_bytes": self.media_store_bytes, "max_new_tokens": self.max_new_tokens,
            "max_steps": self.max_steps, "video_frames": self.video_frames,
            "body_timeout": self.body_timeout, "max_text_chars": self.max_text_chars, "max_batch": self.max_batch,
        }  # fmt: skip
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"server setting {name} must be > 0, got {value}")
        if not 0 <= self.batch_window <= 10:
            raise ConfigError(f"server setting batch_window must be 0-10 seconds (--batch-window-ms 0-10000), got {self.batch_window:g}")
        if not self.shutdown_grace >= 0:
            raise ConfigError(f"server setting shutdown_grace must be >= 0, got {self.shutdown_grace}")
        return self

    def is_loopback(self) -> bool:
        """True when only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


__all__ = ["ServerSettings"]
