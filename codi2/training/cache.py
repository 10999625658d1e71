"""An on-disk cache of frozen-encoder features.

The encoders of CoDi-2 are frozen, so a media item's features never change while its encoder
does not: the model asks the cache first (``model.feature_cache``, see
:meth:`CoDi2Model.encode_media`) under the key ``{encoder.identity}/{modality}/{content hash}``
and the encoder runs only on a miss. From the second epoch on the encoder is not called at all.

Layout: one safetensors file per key, named by the SHA-256 of the key and sharded into
sub-folders by its first two hex digits (``ab/ab12...ef.safetensors``); the key itself is stored
in the file's metadata and checked on read. Writes go to a temporary file in the same folder
and are renamed into place, so any number of processes (DDP ranks, data-loader workers) may read
and write one cache at once: a reader sees a whole file or none. A file that cannot be read
(truncated by a crash, corrupted on disk, another key) counts as ``corrupt`` and is treated as
a miss: the features are computed again and the entry rewritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TENSOR_NAME = "features"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    writes: int = 0
    write_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class FeatureCache:
    """``get(key) -> Tensor | None`` and ``put(key, tensor)`` over a folder (created on demand).

    ``stats`` counts this process's hits, misses, corrupt entries (recomputed) and writes.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stats = CacheStats()
        self._warned = False

    def path_for(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """The cached features of ``key``, or None (a miss, or an unreadable entry)."""
        path = self.path_for(key)
        if not path.is_file():
            self.stats.misses += 1
            return None
        tensor = self._read(path, key)
        if tensor is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return tensor

    def _read(self, path: Path, key: str) -> torch.Tensor | None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != key or TENSOR_NAME not in handle.keys():  # noqa: SIM118 (not a dict)
                    return None  # a different key (hash collision) or a foreign file
                return handle.get_tensor(TENSOR_NAME)
        except (SafetensorError, OSError, ValueError, RuntimeError):
            # truncated or garbled file: recompute rather than crash; the rewrite replaces it
            return None

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` (moved to the CPU) under ``key``, atomically. A failed write (disk
        full, read-only folder) is counted and warned about once; training goes on."""
        from safetensors.torch import save_file

        path = self.path_for(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
            os.close(fd)
            save_file({TENSOR_NAME: tensor.detach().cpu().contiguous()}, tmp, metadata={"key": key})
            os.replace(tmp, path)
            tmp = None
            self.stats.writes += 1
        except OSError as exc:
            self.stats.write_errors += 1
            if not self._warned:
                self._warned = True
                warnings.warn(f"feature cache {self.root}: cannot write entries ({exc}); features will be recomputed", stacklevel=2)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def __len__(self) -> int:
        """Entries on disk."""
        return sum(1 for _ in self.root.glob("*/*.safetensors")) if self.root.is_dir() else 0

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, {self.stats})"
