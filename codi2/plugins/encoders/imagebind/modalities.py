"""ImageBind's other three modalities, registered by the imagebind plugin: depth, thermal, IMU.

What an item holds (``Media.data``), and the files each modality reads and writes:

- ``depth``: float32 ``[H, W]``, metres from the camera, 0 where the sensor has no reading.
  Reads ``.npy`` (floats: metres; integers: millimetres), 16-bit PNG (millimetres, the Kinect /
  RealSense / NYU convention) and float TIFF (metres). Writes ``.npy`` (float32 metres).
- ``thermal``: float32 ``[H, W]``, intensity in [0, 1], white hot. Reads ``.npy`` (floats in
  [0, 1]; uint8 / 255; uint16 stretched), 8-bit images (RGB ones to grey) and 16-bit PNG.
  Radiometric 16-bit frames have no fixed range, so they are stretched from their own min to
  max (what a camera's automatic gain does for the 8-bit frames ImageBind was trained on).
  Writes ``.npy``.
- ``imu``: float32 ``[samples, 6]`` - accelerometer x, y, z (m/s^2), gyroscope x, y, z (rad/s)
  - at ``Media.sample_rate`` Hz (400 when nothing says otherwise: ImageBind's 2000-sample,
  5-second windows). Reads ``.npy`` (``[T, 6]`` or ``[6, T]``) and ``.csv`` (6 columns, or 7
  with time in seconds first, which gives the rate; a header line is skipped). Writes ``.npy``.

A page cannot show these files natively, so each has ``display="download"`` and a PNG
preview: depth as inverse depth (near is bright, no reading black), thermal as grey, IMU as
a plot of its six channels. PNG files are not claimed by suffix (they are images unless the
modality is named: ``--media d=depth:scan.png``); a ``.npy`` file is IMU when its header says
``[T, 6]`` or ``[6, T]``, and otherwise must be named too (depth and thermal maps look alike).
Every file is read without unpickling (``allow_pickle=False``).
"""

from __future__ import annotations

import ast
import io
import numbers
from typing import Any

import numpy as np

from codi2.core.modality import ModalitySpec
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError
from codi2.plugins.encoders.imagebind import IMU_SAMPLE_RATE, MODALITY_DESCRIPTIONS

NPY_MIME = "application/x-npy"
NPY_MAGIC = b"\x93NUMPY"
IMU_CHANNEL_NAMES = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
IMU_MIN_SAMPLES = 8  # one patch of ImageBind's IMU stem
MAX_IMU_SAMPLES = 2_000_000  # 83 minutes at 400 Hz, 48 MB as float32
PREVIEW_SIDE = 512


# --- reading ---------------------------------------------------------------------------------


def _limits(limits: Any) -> Any:
    from codi2.core.media import MediaLimits

    return limits or MediaLimits()


def _label(name: str | None, modality: str) -> str:
    return repr(name) if name else f"<{modality}>"


def _is_tensor(obj: Any) -> bool:
    # by module name, so that reading never imports torch
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _source(source: Any, modality: str, name: str | None, limits: Any) -> tuple[np.ndarray, str | None, dict, Any]:
    """(array, name, meta, rate) of any source: a Media, an ``(array, rate)`` pair, an array or
    tensor, or a file (path, bytes, ``data:`` URI) decoded by its content."""
    meta: dict[str, Any] = {}
    rate = None
    if isinstance(source, Media):
        if source.modality != modality:
            item = _label(name or source.name, modality)
            raise MediaDecodeError(f"is a {source.modality} item, expected {modality}", item=item)
        name, meta, rate, source = name or source.name, dict(source.meta), source.sample_rate, source.data
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], numbers.Real):
        source, rate = source
    if isinstance(source, (str, bytes, bytearray, memoryview)) or hasattr(source, "__fspath__"):
        from codi2.core.media import read_encoded

        is_file = not isinstance(source, (bytes, bytearray, memoryview)) and not str(source).startswith("data:")
        if is_file:
            name = name or str(source).replace("\\", "/").rsplit("/", 1)[-1]
        data = read_encoded(source, item=_label(name, modality), limits=limits)
        array, rate, meta["format"] = _decode(data, modality, _label(name, modality), limits)
        return array, name, meta, rate
    if _is_tensor(source):
        source = source.detach().cpu().numpy()
    if not isinstance(source, np.ndarray):
        what = type(source).__name__
        raise MediaDecodeError(f"unsupported source type {what} for {modality}", item=_label(name, modality))
    return source, name, meta, rate


def _decode(data: bytes, modality: str, item: str, limits: Any) -> tuple[np.ndarray, float | None, str]:
    """(array, rate, format) of a file's bytes: ``.npy``, an image (depth, thermal), CSV (IMU)."""
    if data.startswith(NPY_MAGIC):
        try:
            return np.load(io.BytesIO(data), allow_pickle=False), None, "npy"
        except Exception as e:  # truncated, object arrays (which would need unpickling), ...
            raise MediaDecodeError(f"not a readable .npy array: {e}", item=item) from e
    if modality == "imu":
        return (*_read_csv(data, item), "csv")
    from codi2.core.media import open_image

    image, fmt = open_image(data, item=item, limits=limits)  # size checked before decoding
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image.convert("I"), dtype=np.uint16), None, fmt
    if mode in ("I", "F", "L"):
        return np.asarray(image), None, fmt
    if modality == "thermal" and mode in ("RGB", "RGBA", "P", "LA"):
        return np.asarray(image.convert("L")), None, fmt  # frames saved with 3 equal channels
    raise MediaDecodeError(f"a {mode} image is not a {modality} map (use one channel)", item=item)


def _read_csv(data: bytes, item: str) -> tuple[np.ndarray, float | None]:
    """IMU rows from CSV text: 6 columns, or 7 with the time in seconds first."""
    try:
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise MediaDecodeError("not a .npy array or CSV text", item=item) from e
    if lines and not _is_number(lines[0].split(",")[0]):
        lines = lines[1:]  # a header
    cells = [line.split(",") for line in lines]
    widths = sorted({len(row) for row in cells})
    if widths not in ([6], [7]):
        found = f"rows of {', '.join(map(str, widths))} columns" if widths else "no rows"
        raise MediaDecodeError(
            f"CSV must have 6 columns (accel x y z, gyro x y z), or 7 with time first; found {found}", item=item
        )
    try:
        rows = np.array([[float(v) for v in row] for row in cells], dtype=np.float64)
    except ValueError as e:
        raise MediaDecodeError(f"CSV holds a value that is not a number ({e})", item=item) from None
    if rows.shape[1] == 6:
        return rows, None
    steps = np.diff(rows[:, 0])
    if len(steps) == 0 or not np.all(steps > 0):
        raise MediaDecodeError("the CSV's time column (seconds) must increase from row to row", item=item)
    return rows[:, 1:], 1.0 / float(np.median(steps))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_pixels(width: int, height: int, modality: str, item: str, limits: Any) -> None:
    if min(width, height) < max(1, limits.min_image_side):
        raise MediaLimitError(
            f"{modality} map is {width}x{height}, under the {limits.min_image_side}-pixel minimum side", item=item
        )
    if width * height > limits.max_image_pixels:
        raise MediaLimitError(
            f"{modality} map is {width}x{height} = {width * height} pixels, "
            f"over the {limits.max_image_pixels}-pixel limit",
            item=item,
        )


def _read_map(source: Any, modality: str, name: str | None, limits: Any) -> tuple[np.ndarray, str | None, dict, str]:
    """(values ``[H, W]``, name, meta, item label) of a depth or thermal source."""
    values, name, meta, _ = _source(source, modality, name, limits)
    item = _label(name, modality)
    return _single_channel(np.asarray(values), modality, item, limits), name, meta, item


def _single_channel(values: np.ndarray, modality: str, item: str, limits: Any) -> np.ndarray:
    """``[H, W]`` from ``[H, W]``, ``[H, W, 1]`` or ``[1, H, W]``, within the pixel limits."""
    if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1]):
        values = values.reshape(values.shape[1:] if values.shape[0] == 1 else values.shape[:2])
    if values.ndim != 2:
        raise MediaDecodeError(f"{modality} map has shape {values.shape}, expected [H, W] (one channel)", item=item)
    _check_pixels(values.shape[1], values.shape[0], modality, item, limits)
    if values.dtype.kind not in "fiu":
        raise MediaDecodeError(f"{modality} map dtype {values.dtype} unsupported", item=item)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise MediaDecodeError(f"{modality} map contains NaN or infinite values", item=item)
    return values


def load_depth(source: Any, *, name: str | None = None, limits: Any = None, **_: Any) -> Media:
    """A depth map in metres (float32 ``[H, W]``, 0 = no reading); integers are millimetres."""
    values, name, meta, item = _read_map(source, "depth", name, _limits(limits))
    if values.dtype == np.uint8:
        raise MediaDecodeError(
            "an 8-bit map holds no metric depth; give metres (float .npy or TIFF) or millimetres (16-bit PNG)",
            item=item,
        )
    metres = values.astype(np.float32) if values.dtype.kind == "f" else values.astype(np.float32) / 1000.0
    if metres.min() < 0:
        raise MediaDecodeError(f"depth must not be negative (min {float(metres.min()):.3g} m)", item=item)
    return Media("depth", metres, name=name, meta=meta)


def load_thermal(source: Any, *, name: str | None = None, limits: Any = None, **_: Any) -> Media:
    """A thermal image as intensities in [0, 1] (float32 ``[H, W]``)."""
    values, name, meta, item = _read_map(source, "thermal", name, _limits(limits))
    if values.dtype == np.uint8:
        intensity = values.astype(np.float32) / 255.0
    elif values.dtype.kind in "iu":  # radiometric counts: stretch this frame's range to [0, 1]
        lo, hi = int(values.min()), int(values.max())
        intensity = (values.astype(np.float32) - lo) / max(hi - lo, 1)
        meta["stretched_from"] = [lo, hi]
    else:
        lo, hi = float(values.min()), float(values.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise MediaDecodeError(f"float thermal values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]", item=item)
        intensity = np.clip(values, 0.0, 1.0).astype(np.float32)
    return Media("thermal", intensity, name=name, meta=meta)


def load_imu(source: Any, *, name: str | None = None, limits: Any = None, **_: Any) -> Media:
    """An IMU series, float32 ``[samples, 6]`` at the rate its source gives (a CSV's time
    column, an ``(array, rate)`` pair, a Media's ``sample_rate``), else 400 Hz. (The loaders'
    ``sample_rate`` option is audio's target rate and does not apply.)"""
    limits = _limits(limits)
    values, name, meta, rate = _source(source, "imu", name, limits)
    item = _label(name, "imu")
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[0] == 6 and values.shape[1] != 6:
        values = values.T  # channels first, as ImageBind's network takes it
    if values.ndim != 2 or values.shape[1] != 6:
        raise MediaDecodeError(
            f"imu array has shape {values.shape}, expected [samples, 6] (accel xyz, gyro xyz)", item=item
        )
    if values.dtype.kind not in "fiu":
        raise MediaDecodeError(f"imu dtype {values.dtype} unsupported", item=item)
    series = values.astype(np.float32)
    if not np.isfinite(series).all():
        raise MediaDecodeError("imu series contains NaN or infinite values", item=item)
    if not IMU_MIN_SAMPLES <= len(series) <= MAX_IMU_SAMPLES:
        raise MediaLimitError(
            f"imu series has {len(series)} samples; {IMU_MIN_SAMPLES} to {MAX_IMU_SAMPLES} allowed", item=item
        )
    rate = rate or IMU_SAMPLE_RATE
    if not 1 <= round(rate) <= 100_000:
        raise MediaDecodeError(f"imu sample rate {rate!r} Hz is not a plausible rate", item=item)
    return Media("imu", series, sample_rate=round(rate), name=name, meta=meta)


# --- writing, describing, previews ----------------------------------------------------------


def encode_npy(media: Media) -> bytes:
    """The item's array as a ``.npy`` file (float32; no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(media.data, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _png(grey: np.ndarray) -> bytes:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` -> PNG bytes, longer side at most PREVIEW_SIDE."""
    from PIL import Image

    image = Image.fromarray(grey)
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def preview_depth(media: Media) -> bytes:
    """Inverse depth, stretched over the map's readings: near is bright, no reading black."""
    depth = np.asarray(media.data, dtype=np.float32)
    valid = depth > 0
    inverse = np.zeros_like(depth)
    inverse[valid] = 1.0 / depth[valid]
    if valid.any():
        lo, hi = inverse[valid].min(), inverse[valid].max()
        inverse[valid] = 0.15 + 0.85 * (inverse[valid] - lo) / max(hi - lo, 1e-12)
    return _png(np.rint(inverse * 255).astype(np.uint8))


def preview_thermal(media: Media) -> bytes:
    return _png(np.rint(np.clip(media.data, 0, 1) * 255).astype(np.uint8))


def preview_imu(media: Media, width: int = 640, height: int = 320) -> bytes:
    """The six channels on two panels (accelerometer above, gyroscope below), x = time."""
    from PIL import Image, ImageDraw

    series = np.asarray(media.data, dtype=np.float32)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colours = ("#d62728", "#2ca02c", "#1f77b4")
    columns = np.linspace(0, len(series) - 1, min(width, len(series))).round().astype(int)
    panel = height // 2
    for p, label in enumerate(("accelerometer", "gyroscope")):
        values = series[columns, 3 * p : 3 * p + 3]
        lo, hi = float(values.min()), float(values.max())
        top = p * panel
        ys = top + 4 + (panel - 8) * (1 - (values - lo) / max(hi - lo, 1e-12))
        xs = np.linspace(0, width - 1, len(columns))
        for c in range(3):
            draw.line(list(zip(xs.tolist(), ys[:, c].tolist())), fill=colours[c], width=1)
        draw.text((4, top + 2), f"{label} [{lo:.3g}, {hi:.3g}]", fill="black")
        draw.line([(0, top + panel - 1), (width, top + panel - 1)], fill="#cccccc")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def describe_depth(media: Media) -> dict[str, Any]:
    depth = np.asarray(media.data)
    valid = depth[depth > 0]
    return {
        "height": int(depth.shape[0]),
        "width": int(depth.shape[1]),
        "min_m": float(valid.min()) if valid.size else None,
        "max_m": float(valid.max()) if valid.size else None,
        "no_reading": round(1 - valid.size / depth.size, 4),
    }


def describe_thermal(media: Media) -> dict[str, Any]:
    values = np.asarray(media.data)
    return {"height": int(values.shape[0]), "width": int(values.shape[1]),
            "min": float(values.min()), "max": float(values.max())}  # fmt: skip


def describe_imu(media: Media) -> dict[str, Any]:
    samples = len(media.data)
    rate = media.sample_rate or IMU_SAMPLE_RATE
    return {"samples": samples, "sample_rate": rate, "duration": samples / rate, "channels": list(IMU_CHANNEL_NAMES)}


# --- recognising -----------------------------------------------------------------------------


def npy_shape(head: bytes) -> tuple[int, ...] | None:
    """The array shape a ``.npy`` file's header declares (from its first bytes), else None."""
    if not head.startswith(NPY_MAGIC) or len(head) < 10:
        return None
    size_bytes = 2 if head[6] == 1 else 4
    length = int.from_bytes(head[8 : 8 + size_bytes], "little")
    header = head[8 + size_bytes : 8 + size_bytes + length]
    try:
        fields = ast.literal_eval(header.decode("latin1"))  # literals only: no code runs
        return tuple(int(n) for n in fields["shape"])
    except (ValueError, TypeError, KeyError, SyntaxError, MemoryError, RecursionError):  # not a header
        return None


def sniff_imu(head: bytes) -> bool:
    """A ``.npy`` header declaring ``[T, 6]`` or ``[6, T]``, or CSV text whose first full row
    after an optional header holds 6 or 7 numbers."""
    shape = npy_shape(head)
    if shape is not None:
        return len(shape) == 2 and 6 in shape and max(shape) > 6
    try:
        lines = head.decode("utf-8").splitlines()[:-1]  # the last line may be cut off
    except UnicodeDecodeError:
        return False
    rows = [line.split(",") for line in lines if line.strip()][:2]
    if rows and not _is_number(rows[0][0]):
        rows = rows[1:]
    return bool(rows) and len(rows[0]) in (6, 7) and all(_is_number(v) for v in rows[0])


def claims_imu(obj: Any) -> bool:
    shape = getattr(obj, "shape", None)
    return shape is not None and len(shape) == 2 and 6 in tuple(shape) and max(shape) > 6


# --- the specs -------------------------------------------------------------------------------


def spec(name: str) -> ModalitySpec:
    """The :class:`ModalitySpec` of ``depth``, ``thermal`` or ``imu``."""
    common = {"name": name, "description": MODALITY_DESCRIPTIONS[name], "encode": encode_npy,
              "mime_type": NPY_MIME, "display": "download"}  # fmt: skip
    if name == "depth":
        return ModalitySpec(
            **common, load=load_depth, suffixes=(".npy",), describe=describe_depth, preview=preview_depth
        )
    if name == "thermal":
        return ModalitySpec(
            **common, load=load_thermal, suffixes=(".npy",), describe=describe_thermal, preview=preview_thermal
        )
    if name == "imu":
        return ModalitySpec(
            **common, load=load_imu, suffixes=(".npy", ".csv"), mime_types=("text/csv",), sniff=sniff_imu,
            claims=claims_imu, describe=describe_imu, preview=preview_imu,
        )  # fmt: skip
    raise KeyError(name)
