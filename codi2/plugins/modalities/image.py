"""The image modality: RGB uint8 ``[H, W, 3]``; PNG, JPEG, GIF, BMP, WebP, TIFF files."""

from __future__ import annotations

from typing import Any

from codi2.core.media import image_bytes, load_image
from codi2.core.modality import ModalitySpec
from codi2.plugins.modalities import saves, sniffs
from codi2.registry import hookimpl

#: container formats recognised by their magic bytes (all decoded by Pillow)
READS = ("png", "jpeg", "gif", "bmp", "webp", "tiff")
#: suffix -> format of the files it writes; the first is the default
WRITES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp", ".tif": "tiff",
          ".tiff": "tiff", ".gif": "gif"}  # fmt: skip


def _load(source: Any, *, name: str | None = None, limits: Any = None, **_: Any) -> Any:
    return load_image(source, name=name, limits=limits)


def _claims(obj: Any) -> bool:
    if type(obj).__module__.startswith("PIL"):
        return True
    shape = getattr(obj, "shape", None)
    return shape is not None and (len(shape) == 3 or (len(shape) == 2 and min(shape) > 2))


def spec() -> ModalitySpec:
    return ModalitySpec(
        name="image",
        description="RGB images (uint8 [H, W, 3]); PNG, JPEG, GIF, BMP, WebP, TIFF",
        load=_load,
        encode=image_bytes,
        suffixes=(".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
        mime_type="image/png",
        mime_types=("image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff"),
        sniff=sniffs(READS),
        claims=_claims,
        describe=lambda m: {"width": int(m.data.shape[1]), "height": int(m.data.shape[0])},  # [H, W, 3]
        display="image",
        writes=tuple(WRITES),
        save=saves(WRITES, image_bytes),
    )


@hookimpl
def codi2_register_modalities(register: Any) -> None:
    register("image", load=lambda options: spec(), description="RGB images: PNG, JPEG, GIF, BMP, WebP, TIFF")
