"""The ``pointcloud`` modality: everything codi2 needs to know about point clouds, in one place.

An item is ``Media("pointcloud", data)`` with ``data`` a float32 array ``[N, 3]`` (x, y, z).
Files are ASCII PLY (https://paulbourke.net/dataformats/ply/): a header naming a ``vertex``
element with ``x``, ``y`` and ``z`` properties, then one vertex per line; other vertex
properties (normals, colours) are read past. Binary PLY is refused with a clear error rather
than guessed at. No torch here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from codi2.core.media import MediaLimits, read_encoded
from codi2.core.modality import ModalitySpec
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError

NAME = "pointcloud"
#: the most points one item may hold (bounds memory whatever a file declares)
MAX_POINTS = 200_000
_MAX_HEADER = 64 * 1024


def sniff(head: bytes) -> bool:
    """PLY files start with the line ``ply``."""
    return head.startswith((b"ply\n", b"ply\r\n"))


def load_pointcloud(source: Any, *, name: str | None = None, limits: MediaLimits | None = None, **_: Any) -> Media:
    """A validated point cloud from a PLY path, PLY bytes, a ``data:`` URI, an ``[N, 3]`` array
    or tensor, or a Media. Errors name the item."""
    if isinstance(source, Media):
        if source.modality != NAME:
            raise MediaDecodeError(f"is a {source.modality} item, expected a point cloud", item=repr(name or source.name))
        name, source = name or source.name, source.data
    filename = Path(source).name if isinstance(source, (str, Path)) and not str(source).startswith("data:") else None
    item = repr(name or filename) if (name or filename) else "<pointcloud>"
    if isinstance(source, (str, Path, bytes, bytearray, memoryview)):
        points = parse_ply(read_encoded(source, item=item, limits=limits), item)
    else:
        if hasattr(source, "detach"):  # a torch tensor, without importing torch
            source = source.detach().cpu().float().numpy()
        points = np.asarray(source)
        if points.dtype == object or not np.issubdtype(points.dtype, np.number):
            raise MediaDecodeError(f"expected a numeric [N, 3] array, got {points.dtype}", item=item)
    if points.ndim != 2 or points.shape[1] != 3:
        raise MediaDecodeError(f"a point cloud is an [N, 3] array, got shape {list(points.shape)}", item=item)
    if len(points) == 0:
        raise MediaLimitError("empty point cloud (0 points)", item=item)
    if len(points) > MAX_POINTS:
        raise MediaLimitError(f"{len(points)} points, over the {MAX_POINTS}-point limit", item=item)
    if not np.isfinite(points).all():
        raise MediaDecodeError("coordinates must be finite (found NaN or inf)", item=item)
    return Media(NAME, np.ascontiguousarray(points, dtype=np.float32), name=name or filename)


def parse_ply(data: bytes, item: str) -> np.ndarray:
    """The x, y, z columns of an ASCII PLY file's vertices."""
    if not sniff(data[:8]):
        raise MediaDecodeError("not a PLY file (it must start with the line 'ply')", item=item)
    end = data.find(b"end_header", 0, _MAX_HEADER)
    if end < 0:
        raise MediaDecodeError("PLY header has no 'end_header' line (truncated?)", item=item)
    body_start = data.find(b"\n", end) + 1 or len(data)
    try:
        header = data[:end].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MediaDecodeError("PLY header is not ASCII text", item=item) from None
    fmt, count, columns, element = None, None, [], None
    for line in (line.strip() for line in header[1:]):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
        elif words[0] == "element":
            element = words[1] if len(words) > 1 else None
            if element == "vertex":
                try:
                    count = int(words[2])
                except (IndexError, ValueError):
                    raise MediaDecodeError(f"bad PLY element line {line!r}", item=item) from None
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list":
                raise MediaDecodeError("list properties on vertices are not supported", item=item)
            columns.append(words[-1])
    if fmt != "ascii":
        raise MediaDecodeError(f"only ASCII PLY is read, this file is {fmt or 'of no stated format'!s} (re-export it as ascii)", item=item)
    if count is None:
        raise MediaDecodeError("PLY file has no 'element vertex N' line", item=item)
    missing = [c for c in "xyz" if c not in columns]
    if missing:
        raise MediaDecodeError(f"PLY vertices lack propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}", item=item)
    if count > MAX_POINTS:
        raise MediaLimitError(f"PLY file declares {count} points, over the {MAX_POINTS}-point limit", item=item)
    if count == 0:
        raise MediaLimitError("empty point cloud (0 points)", item=item)
    lines = data[body_start:].decode("ascii", errors="replace").splitlines()[:count]
    if len(lines) < count:
        raise MediaDecodeError(f"PLY file declares {count} vertices but holds {len(lines)} (truncated?)", item=item)
    try:
        table = np.loadtxt(io.StringIO("\n".join(lines)), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise MediaDecodeError(f"PLY vertex lines are not numbers: {exc}", item=item) from None
    if table.shape[1] != len(columns):
        raise MediaDecodeError(f"PLY vertex lines hold {table.shape[1]} values, the header names {len(columns)}", item=item)
    return table[:, [columns.index(c) for c in "xyz"]].astype(np.float32)


def encode_ply(media: Media) -> bytes:
    """ASCII PLY bytes of a point cloud."""
    points = np.asarray(media.data, dtype=np.float32)
    header = f"ply\nformat ascii 1.0\ncomment written by codi2-pointcloud\nelement vertex {len(points)}\n" \
             "property float x\nproperty float y\nproperty float z\nend_header\n"  # fmt: skip
    body = "".join(f"{x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in points)
    return (header + body).encode("ascii")


def describe(media: Media) -> dict[str, Any]:
    points = np.asarray(media.data)
    return {"points": len(points), "bounds": [points.min(0).round(4).tolist(), points.max(0).round(4).tolist()]}


def preview(media: Media, size: int = 128) -> bytes:
    """A PNG of the cloud seen from the front (x right, y up), nearer points (larger z) darker."""
    from PIL import Image

    points = np.asarray(media.data, dtype=np.float64)
    low, high = points.min(0), points.max(0)
    scale = (high - low)[:2].max() or 1.0
    xy = ((points[:, :2] - low[:2]) / scale * (size - 9) + 4).astype(int)
    depth = (points[:, 2] - low[2]) / ((high - low)[2] or 1.0)
    canvas = np.full((size, size), 255, np.uint8)
    for (x, y), d in zip(xy, depth):
        canvas[max(size - 1 - y - 1, 0) : size - y + 1, max(x - 1, 0) : x + 2] = int(180 - 170 * d)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def spec() -> ModalitySpec:
    return ModalitySpec(
        name=NAME,
        description="3-D point clouds, float32 [N, 3] (x, y, z); ASCII PLY files",
        load=load_pointcloud,
        encode=encode_ply,
        suffixes=(".ply",),
        mime_type="application/x-ply",
        mime_types=("model/ply",),
        sniff=sniff,
        describe=describe,
        display="download",  # no browser shows a PLY: a download link with a preview image
        preview=preview,
    )
