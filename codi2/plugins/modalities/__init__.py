"""The built-in modalities: image, audio, video and text, one module each.

Each module is an ordinary plugin: it registers one :class:`~codi2.core.modality.ModalitySpec`
through ``codi2_register_modalities``, exactly as a third-party modality plugin does. What is
specific to the modality lives in its module and nowhere else: its suffixes and MIME types,
the container formats it recognises and reads, the ones it writes (suffix -> format) and how a
page shows it. The decoding and encoding code they call is :mod:`codi2.core.media`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from codi2.core.media import sniff_format
from codi2.core.types import Media


def sniffs(formats: Collection[str]) -> Callable[[bytes], bool]:
    """A magic-byte test: the head's container format (``sniff_format``) is one of ``formats``."""
    return lambda head: sniff_format(head) in formats


def saves(writes: Mapping[str, str], encode: Callable[[Media, str], bytes]) -> Callable[[Media, Path], Path]:
    """``save(media, path)`` for a modality that writes several formats: ``writes`` maps each
    suffix it writes to the format ``encode(media, format)`` produces (the spec's ``write``
    hands over only paths with one of those suffixes)."""

    def save(media: Media, path: Path) -> Path:
        path.write_bytes(encode(media, writes[path.suffix.lower()]))
        return path

    return save
