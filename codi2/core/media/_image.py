"""Images: files and bytes through Pillow, arrays and tensors of any common layout."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from codi2.core.media._common import (
    _DEFAULT_LIMITS,
    MediaLimits,
    _filename,
    _is_encoded,
    _is_tensor,
    _label,
    _read_encoded,
    _tensor_to_numpy,
    _unwrap,
    _what_it_is,
)
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError


def load_image(source: Any, *, name: str | None = None, limits: MediaLimits | None = None) -> Media:
    """An RGB image as uint8 ``[H, W, 3]``: EXIF orientation applied, alpha composited on white.

    Arrays may be ``[H, W]``, ``[H, W, 1|3|4]`` or ``[1|3|4, H, W]``, uint8 (or integers in
    0..255) or floats in [0, 1].
    """
    limits = limits or _DEFAULT_LIMITS
    source, name, meta, _ = _unwrap(source, "image", name)
    item = _label(name, _filename(source), "image")
    if _is_encoded(source):
        data = _read_encoded(source, item, limits)
        pixels, meta["format"] = _decode_image(data, item, limits)
    elif type(source).__module__.startswith("PIL."):
        from PIL import ImageOps

        _check_pixels(source.size[0], source.size[1], item, limits)
        try:  # an image from Image.open() decodes only now
            pixels = _pil_to_rgb(ImageOps.exif_transpose(source))
        except Exception as e:  # Pillow's decoders raise assorted types on corrupt data
            raise MediaDecodeError(f"corrupt or truncated image: {e}", item=item) from e
    else:
        pixels = _pixels(source, item, video=False)
    _check_pixels(pixels.shape[1], pixels.shape[0], item, limits)
    return Media("image", pixels, name=name or _filename(source), meta=meta)


def _check_pixels(width: int, height: int, item: str, limits: MediaLimits) -> None:
    if min(width, height) < max(1, limits.min_image_side):
        raise MediaLimitError(
            f"image is {width}x{height}, under the {limits.min_image_side}-pixel minimum side",
            item=item,
        )
    if width * height > limits.max_image_pixels:
        raise MediaLimitError(
            f"image is {width}x{height} = {width * height} pixels, over the "
            f"{limits.max_image_pixels}-pixel limit",
            item=item,
        )


def _decode_image(data: bytes, item: str, limits: MediaLimits) -> tuple[np.ndarray, str]:
    image, fmt = open_image(data, item=item, limits=limits)
    return _pil_to_rgb(image), fmt


def open_image(data: bytes, *, item: str, limits: MediaLimits | None = None) -> tuple[Any, str]:
    """``(PIL image, format)`` of an image file's bytes, fully decoded and upright (EXIF), its
    size checked against ``limits`` before decoding; typed errors naming ``item``. For modality
    plugins that read their own maps from image files (a depth map in a 16-bit PNG)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = limits or _DEFAULT_LIMITS

    fmt = "?"
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or "?"
            # Size comes from the header: refuse huge images before decoding them.
            _check_pixels(probe.size[0], probe.size[1], item, limits)
            probe.verify()
        image = Image.open(io.BytesIO(data))
        # A full decode: a truncated file must fail here, not come out half grey (we never
        # set ImageFile.LOAD_TRUNCATED_IMAGES).
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as e:
        raise MediaDecodeError(
            f"not a readable image{_what_it_is(data, 'image')}", item=item
        ) from e
    except Image.DecompressionBombError as e:
        raise MediaLimitError(str(e), item=item) from e
    except MediaLimitError:
        raise
    except Exception as e:  # Pillow's decoders raise assorted types on corrupt data
        raise MediaDecodeError(f"corrupt or truncated {fmt} image: {e}", item=item) from e
    return image, fmt.lower()


def _pil_to_rgb(image: Any) -> np.ndarray:
    from PIL import Image

    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        grey = np.asarray(image, dtype=np.float64)
        top = grey.max(initial=0.0)
        scale = 255.0 if mode == "F" and top <= 1.0 else 255.0 / 65535.0 if top > 255 else 1.0
        grey = np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _pixels(arr: Any, item: str, *, video: bool) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` from an image (video: frames) array of any common layout."""
    if _is_tensor(arr):
        arr = _tensor_to_numpy(arr)
    if not isinstance(arr, np.ndarray):
        raise MediaDecodeError(f"unsupported source type {type(arr).__name__}", item=item)
    what, ndim = ("video", 4) if video else ("image", 3)
    if arr.ndim == ndim - 1:  # greyscale
        arr = arr[..., None]
    if arr.ndim != ndim:
        layout = "[F, H, W, C]" if video else "[H, W, C]"
        raise MediaDecodeError(f"{what} array has shape {arr.shape}, expected {layout}", item=item)
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[-3] in (1, 3, 4):
        arr = np.moveaxis(arr, -3, -1)  # channels-first, as torch keeps images
    if arr.shape[-1] not in (1, 3, 4):
        raise MediaDecodeError(
            f"{what} array has shape {arr.shape}: 1, 3 or 4 channels expected", item=item
        )
    if arr.size == 0:
        raise MediaLimitError(f"empty {what} (shape {arr.shape})", item=item)
    if arr.dtype == np.uint8 and arr.shape[-1] == 3:
        return np.array(arr)  # already in the raw form; copied so the caller's array is free
    if arr.dtype == np.uint8:
        values = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        if not np.isfinite(values).all():
            raise MediaDecodeError(f"{what} array contains NaN or infinite values", item=item)
        lo, hi = float(values.min()), float(values.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise MediaDecodeError(
                f"float {what} values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]", item=item
            )
        values = np.clip(values, 0, 1) * 255.0
    elif np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255:
        values = arr.astype(np.float32)
    else:
        raise MediaDecodeError(
            f"{what} array dtype {arr.dtype} unsupported: use uint8 or floats in [0, 1]", item=item
        )
    if values.shape[-1] == 4:  # composite on white, like files with alpha
        alpha = values[..., 3:] / 255.0
        values = values[..., :3] * alpha + 255.0 * (1.0 - alpha)
    elif values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
