"""Small value types shared by every layer. No torch at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codi2.core.modality import Modalities


@dataclass(frozen=True)
class ConditionSpec:
    """The conditioning a decoder takes: ``tokens`` vectors of width ``dim``."""

    tokens: int
    dim: int

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.dim < 1:
            raise ValueError(f"ConditionSpec needs tokens >= 1 and dim >= 1, got {self}")


@dataclass
class Media:
    """One validated media item, in the raw form every component agrees on.

    ``modality`` names a registered modality (:mod:`codi2.core.modality`); its spec says what
    ``data`` holds. The built-in ones:

    - image: ``data`` is a uint8 array ``[H, W, 3]`` (RGB)
    - audio: ``data`` is a float32 array ``[samples]`` in [-1, 1], mono, at ``sample_rate``
    - video: ``data`` is a uint8 array ``[frames, H, W, 3]`` at ``fps``
    - text: ``data`` is a ``str`` (used when text is encoded like media, e.g. feature-replaced phrases)

    ``name`` is how errors and outputs refer to the item (placeholder name or file name).
    """

    modality: str
    data: Any
    sample_rate: int | None = None
    fps: float | None = None
    name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shape = getattr(self.data, "shape", None)
        what = "x".join(map(str, shape)) + f" {self.data.dtype}" if shape is not None else f"{len(str(self.data))} chars"
        extra = f", {self.sample_rate} Hz" if self.sample_rate else f", {self.fps} fps" if self.fps else ""
        return f"Media({self.modality}, {what}{extra}, name={self.name!r})"

    @property
    def label(self) -> str:
        return repr(self.name) if self.name else f"<{self.modality}>"

    def content_hash(self) -> str:
        """A stable hash of the content (for feature caches); independent of ``name``."""
        import hashlib

        import numpy as np

        h = hashlib.sha256(self.modality.encode())
        if isinstance(self.data, str):
            h.update(self.data.encode())
        else:
            arr = np.ascontiguousarray(self.data)
            h.update(str((arr.dtype.str, arr.shape, self.sample_rate, self.fps)).encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    def save(self, path: str | Path, modalities: Modalities | None = None) -> Path:
        """Write the item as its modality writes files (the suffix picks among its formats;
        none of them: its default suffix is appended). ``modalities``: where to look the
        modality up (default: the registered ones)."""
        from codi2.core.modality import resolve_modalities

        return resolve_modalities(modalities).save(self, path)

    @property
    def duration(self) -> float | None:
        """Seconds, for items with a sample rate (samples) or an fps (frames); else None."""
        rate = self.sample_rate or self.fps
        return len(self.data) / rate if rate and not isinstance(self.data, str) else None
