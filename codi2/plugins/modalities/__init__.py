"""The built-in modalities: image, audio, video and text, one module each.

Each module is an ordinary plugin: it registers one :class:`~codi2.core.modality.ModalitySpec`
through ``codi2_register_modalities``, exactly as a third-party modality plugin does. The
reading and writing code lives in :mod:`codi2.core.media`; the facts about the modality
(suffixes, MIME types, magic bytes, how it is shown) live here, in one place each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def sniffs(formats: tuple[str, ...]) -> Callable[[bytes], bool]:
    """A magic-byte test: the head's container format (``sniff_format``) is one of ``formats``."""

    def sniff(head: bytes) -> bool:
        from codi2.core.media import sniff_format

        return sniff_format(head) in formats

    return sniff


def encodes(fmt: str) -> Callable[[Any], bytes]:
    """Encode an item as ``fmt`` ("png", "wav", "mp4") with codi2's writers."""

    def encode(media: Any) -> bytes:
        from codi2.core.media import media_to_bytes

        return media_to_bytes(media, fmt)

    return encode


def save(media: Any, path: Path) -> Path:
    """Write an item with codi2's writers, the suffix choosing among the modality's formats."""
    from codi2.core.media import save_media

    return save_media(media, path)
