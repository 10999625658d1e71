"""``mimic-it``: multimodal instructions answered in text, from MIMIC-IT style files (§4.1).

``input`` is an instructions file as MIMIC-IT ships it (``XX_instructions.json``)::

    {"meta": {...},
     "data": {"LA_INS_00000": {"instruction": "...", "answer": "...",
                               "image_ids": ["LA_IMG_000000377944"], "rel_ins_ids": ["LA_INS_00001"]}}}

and ``images`` holds the pictures: either MIMIC-IT's image file (``XX.json``, a JSON object of
``{image_id: base64 image}``; the images are decoded into ``out/media``) or a folder with one
file per id (``LA_IMG_000000377944.jpg``). A video entry lists its frames as several image ids.

Each entry gives ``user: <images> {instruction}`` -> ``assistant: {answer}``. With
``in_context: K`` up to K of its related instructions (``rel_ins_ids``, in order) come first as
earlier turns that are not learning targets — the in-context format MIMIC-IT was made for.
"""

from __future__ import annotations

import base64
import binascii
import random
from pathlib import Path
from typing import Any

from pydantic import Field

from codi2.errors import DatasetError
from codi2.training.builders.common import (
    BuilderOptions,
    BuildReport,
    MediaWriter,
    conversation,
    field_of,
    finish,
    media_files,
    media_part,
    read_json,
)

NAME = "mimic-it"
DESCRIPTION = "MIMIC-IT style multimodal instructions (images / video frames) with text answers, optional in-context turns"


class Options(BuilderOptions):
    #: MIMIC-IT's base64 image JSON, or a folder of ``{image_id}.{ext}`` files
    images: str
    #: related instructions put before each one as non-target turns
    in_context: int = Field(0, ge=0)


class ImageSource:
    """Image ids -> dataset paths, from a base64 JSON or a folder."""

    def __init__(self, source: Path, writer: MediaWriter):
        self.source, self.writer = source, writer
        self.done: dict[str, str] = {}
        if source.is_dir():
            self.files = {p.stem: p for p in media_files(source, ("image",))}
            self.encoded: dict[str, Any] = {}
        elif source.is_file():
            data = read_json(source)
            if not isinstance(data, dict):
                raise DatasetError(f"{source}: expected a JSON object of image_id -> base64 image")
            self.files, self.encoded = {}, data
        else:
            raise DatasetError(f"images {source}: not found (a base64 image JSON or a folder of images)")

    def path(self, image_id: str, where: str) -> str:
        if image_id in self.done:
            return self.done[image_id]
        if image_id in self.files:
            rel = self.writer.existing(self.files[image_id])
        elif image_id in self.encoded:
            rel = self._decode(image_id, where)
        else:
            raise DatasetError(f"{where}: image {image_id!r} is not in {self.source}")
        self.done[image_id] = rel
        return rel

    def _decode(self, image_id: str, where: str) -> str:
        from codi2.core.media import sniff_format
        from codi2.core.modality import resolve_modalities

        value = self.encoded[image_id]
        if not isinstance(value, str):
            raise DatasetError(f"{self.source}: image {image_id!r}: expected a base64 string")
        try:
            data = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DatasetError(f"{self.source}: image {image_id!r}: invalid base64 ({exc})") from None
        image = resolve_modalities().get("image")  # MIMIC-IT's pictures are images
        if not image.sniff or not image.sniff(data[:4096]):
            raise DatasetError(f"{self.source}: image {image_id!r} (used by {where}) is not a known image format")
        suffix = f".{sniff_format(data[:64])}"  # the file keeps its format's own suffix
        path, rel = self.writer.new(safe_name(image_id) + (suffix if suffix in image.suffixes else image.suffix))
        path.write_bytes(data)
        return rel


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _entries(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected MIMIC-IT instructions ({{'data': {{id: entry}}}})")
    return data


def _turn(entry: Any, ins_id: str, images: ImageSource, where: str) -> tuple[list[dict[str, Any]], str]:
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object with instruction, answer, image_ids")
    instruction = field_of(entry, "instruction", where).strip()
    answer = field_of(entry, "answer", where).strip()
    ids = entry.get("image_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DatasetError(f"{where}: 'image_ids' must be a list of image ids")
    user: list[dict[str, Any]] = [media_part("image", images.path(i, where)) for i in ids]
    user.append({"type": "text", "text": ("\n" if ids else "") + instruction})
    return user, answer


def build(options: Options) -> BuildReport:
    source = Path(options.input).expanduser()
    if not source.is_file():
        raise DatasetError(f"{source}: instructions file not found")
    entries = _entries(source)
    writer = MediaWriter(Path(options.out), options.media)
    images = ImageSource(Path(options.images).expanduser(), writer)
    ids = sorted(entries)
    random.Random(options.seed).shuffle(ids)
    records = []
    for ins_id in ids[: options.limit]:
        where = f"{source}: {ins_id}"
        user, answer = _turn(entries[ins_id], ins_id, images, where)
        history: list[dict[str, Any]] = []
        related = entries[ins_id].get("rel_ins_ids") or []
        for rel_id in [r for r in related if r != ins_id][: options.in_context]:
            if rel_id not in entries:
                raise DatasetError(f"{where}: related instruction {rel_id!r} is not in the file")
            rel_user, rel_answer = _turn(entries[rel_id], rel_id, images, f"{source}: {rel_id}")
            history += [{"role": "user", "content": rel_user}, {"role": "assistant", "content": rel_answer, "target": False}]
        meta = {"source": str(source), "instruction_id": ins_id}
        records.append(conversation(user, answer, record_id=f"{NAME}-{safe_name(ins_id)}", meta=meta, history=history))
    return finish(NAME, options, records, writer)
