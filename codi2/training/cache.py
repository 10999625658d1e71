"""An on-disk cache of frozen-encoder features that scales to millions of items.

The encoders of CoDi-2 are frozen, so a media item's features never change while its encoder
does not: the model asks the cache first (``model.feature_cache``, see
:meth:`CoDi2Model.encode_media`) under the key ``{encoder.identity}/{modality}/{content hash}``
and the encoder runs only on a miss. From the second epoch on the encoder is not called at all.

Layout (a folder, created on demand)::

    index.sqlite                         key hash -> (shard, offset, length, CRC-32)
    shards/<host>-<pid>-<n>.bin          append-only records, one writer each

- **Append-only shards, not a file per item.** Each process appends its records to a shard
  file of its own (a new one past 1 GiB), so writers never share a file and need no lock; ten
  million items are a few dozen files, not ten million.
- **Lookup** is one primary-key read of the SQLite index (a B-tree on a 16-byte hash: three
  or four page reads up to ~10^8 entries, in practice constant) and one ``pread``.
- **Memory is flat** in the number of items: nothing is held per item in RAM; SQLite keeps a
  small page cache, and at most :data:`OPEN_SHARDS` shard files stay open.
- **Several processes** (DDP ranks, data-loader workers) may read and write at once: the index
  runs in WAL mode (readers never block; writers queue on SQLite's lock, with a long busy
  timeout), and a record is in its shard before the index names it. A forked child opens its
  own connection and shard.
- **Corruption is detected**: every record carries its key, dtype and shape and the index its
  CRC-32; a record that is short, garbled, of another key, or whose shard vanished counts as
  ``corrupt``, is dropped from the index and treated as a miss, so the features are computed
  again and written anew.

A record is ``b"C2F1"``, the header length (4 bytes, little-endian), a JSON header
``{"key", "dtype", "shape"}`` and the tensor's raw bytes: nothing is ever unpickled.
Replaced records stay in their shards as dead bytes (features of a frozen encoder are written
once per item, so there are few); delete the folder to reclaim them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import struct
import warnings
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAGIC = b"C2F1"
INDEX = "index.sqlite"
SHARDS = "shards"
#: a process starts a new shard file past this size
SHARD_BYTES = 1 << 30
#: shard files kept open for reading (least recently used closed first)
OPEN_SHARDS = 64
#: index rows written per transaction (a crash loses at most these: they are recomputed)
BATCH = 64


#: caches with a connection in this process: their last index rows are published at exit
_OPEN: weakref.WeakSet = weakref.WeakSet()
_HOOKED_PID: int | None = None


def _flush_open_caches() -> None:
    for cache in list(_OPEN):
        try:
            cache.flush()
        except (OSError, sqlite3.DatabaseError):
            pass


def _hook_exit() -> None:
    """Flush at exit, in this process and in multiprocessing children (which leave through
    ``os._exit`` after running multiprocessing's finalizers, not atexit's)."""
    global _HOOKED_PID
    if _HOOKED_PID != os.getpid():
        _HOOKED_PID = os.getpid()
        import multiprocessing.util

        multiprocessing.util.Finalize(None, _flush_open_caches, exitpriority=0)


atexit.register(_flush_open_caches)


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
    """``get(key) -> Tensor | None`` and ``put(key, tensor)`` over a folder (see the module doc).

    ``stats`` counts this process's hits, misses, corrupt entries (recomputed) and writes.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stats = CacheStats()
        self._warned = False
        self._pid: int | None = None
        self._db: sqlite3.Connection | None = None
        self._readers: OrderedDict[int, int] = OrderedDict()  # shard id -> file descriptor
        self._shard_names: dict[int, str] = {}
        self._writer: tuple[int, int, int] | None = None  # (shard id, fd, size)
        self._pending: list[tuple[bytes, int, int, int, int]] = []

    # --- connections, per process ----------------------------------------------------------------

    def _index(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # first use, or a forked child: never share the parent's handles
            self._pid, self._db, self._writer, self._pending = os.getpid(), None, None, []
            self._readers, self._shard_names = OrderedDict(), {}
        if self._db is None:
            (self.root / SHARDS).mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.root / INDEX), timeout=120, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 120000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # a crash may lose the last rows: they are recomputed
            db.execute("CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS entries (hash BLOB PRIMARY KEY, shard INTEGER NOT NULL, "
                       "offset INTEGER NOT NULL, length INTEGER NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID")
            self._db = db
            _OPEN.add(self)
            _hook_exit()
        return self._db

    @staticmethod
    def _hash(key: str) -> bytes:
        return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()

    # --- reading -----------------------------------------------------------------------------------

    def get(self, key: str) -> torch.Tensor | None:
        """The cached features of ``key``, or None (a miss, or an unreadable entry)."""
        digest = self._hash(key)
        row = next((p[1:] for p in self._pending if p[0] == digest), None)
        if row is None:
            try:
                row = self._index().execute("SELECT shard, offset, length, crc FROM entries WHERE hash = ?", (digest,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
        if row is None:
            self.stats.misses += 1
            return None
        tensor = self._read(key, *row)
        if tensor is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            self._forget(digest)
            return None
        self.stats.hits += 1
        return tensor

    def _read(self, key: str, shard: int, offset: int, length: int, crc: int) -> torch.Tensor | None:
        import torch

        try:
            data = os.pread(self._reader(shard), length, offset)
            if len(data) != length or zlib.crc32(data) != crc or data[:4] != MAGIC:
                return None
            (size,) = struct.unpack("<I", data[4:8])
            header = json.loads(data[8 : 8 + size])
            if header.get("key") != key:
                return None  # another key (a hash collision) or a record overwritten in place
            dtype = getattr(torch, header["dtype"])
            raw = bytearray(data[8 + size :])
            return torch.frombuffer(raw, dtype=dtype).reshape(header["shape"]) if raw else torch.empty(header["shape"], dtype=dtype)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, struct.error, sqlite3.DatabaseError):
            return None  # a vanished shard, a garbled header: recompute rather than crash

    def _reader(self, shard: int) -> int:
        fd = self._readers.get(shard)
        if fd is not None:
            self._readers.move_to_end(shard)
            return fd
        name = self._shard_names.get(shard)
        if name is None:
            found = self._index().execute("SELECT name FROM shards WHERE id = ?", (shard,)).fetchone()
            if found is None:
                raise OSError(f"shard {shard} is not in the index")
            name = self._shard_names[shard] = found[0]
        fd = os.open(self.root / SHARDS / name, os.O_RDONLY)
        self._readers[shard] = fd
        if len(self._readers) > OPEN_SHARDS:
            os.close(self._readers.popitem(last=False)[1])
        return fd

    def _forget(self, digest: bytes) -> None:
        self._pending = [p for p in self._pending if p[0] != digest]
        try:
            self._index().execute("DELETE FROM entries WHERE hash = ?", (digest,))
        except sqlite3.DatabaseError:
            pass

    # --- writing -----------------------------------------------------------------------------------

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store ``tensor`` (moved to the CPU) under ``key``. A failed write (disk full,
        read-only folder) is counted and warned about once; training goes on."""
        tensor = tensor.detach().cpu().contiguous()
        header = json.dumps({"key": key, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}).encode()
        record = MAGIC + struct.pack("<I", len(header)) + header + tensor.view(-1).view(dtype=_byte_dtype()).numpy().tobytes()
        try:
            shard, offset = self._append(record)
            self._pending.append((self._hash(key), shard, offset, len(record), zlib.crc32(record)))
            if len(self._pending) >= BATCH:
                self.flush()
            self.stats.writes += 1
        except (OSError, sqlite3.DatabaseError) as exc:
            self.stats.write_errors += 1
            if not self._warned:
                self._warned = True
                warnings.warn(f"feature cache {self.root}: cannot write entries ({exc}); features will be recomputed", stacklevel=2)

    def _append(self, record: bytes) -> tuple[int, int]:
        db = self._index()
        if self._writer is None or self._writer[2] + len(record) > SHARD_BYTES:
            if self._writer is not None:
                os.close(self._writer[1])
            name = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}.bin"
            fd = os.open(self.root / SHARDS / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            shard = db.execute("INSERT INTO shards (name) VALUES (?)", (name,)).lastrowid
            self._writer = (shard, fd, 0)
        shard, fd, _ = self._writer
        written = os.write(fd, record)  # one write of the whole record: O_APPEND keeps it contiguous
        if written != len(record):
            raise OSError(f"short write ({written} of {len(record)} bytes)")
        end = os.lseek(fd, 0, os.SEEK_CUR)  # where the record really ended (even if the file was cut meanwhile)
        self._writer = (shard, fd, end)
        return shard, end - written

    def flush(self) -> None:
        """Publish the index rows of this process's recent writes (called every :data:`BATCH`
        writes and when the cache is closed); the records are already in their shard."""
        if not self._pending or self._pid != os.getpid():
            return
        rows, self._pending = self._pending, []
        db = self._index()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO entries (hash, shard, offset, length, crc) VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Flush and release every file and the index connection (the cache reopens on use)."""
        if self._pid == os.getpid():
            try:
                self.flush()
            except (OSError, sqlite3.DatabaseError):
                pass
            for fd in self._readers.values():
                os.close(fd)
            if self._writer is not None:
                os.close(self._writer[1])
            if self._db is not None:
                self._db.close()
        self._pid, self._db, self._writer, self._pending, self._readers = None, None, None, [], OrderedDict()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown modules may be gone
            self.close()

    def __len__(self) -> int:
        """Entries in the index."""
        if not (self.root / INDEX).is_file():
            return 0
        self.flush()
        return int(self._index().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, {self.stats})"


def _byte_dtype():
    import torch

    return torch.uint8
