"""``paired``: captioning and generation samples from media-caption pairs (paper §4.1).

For LAION (image-text), AudioSet/AudioCaps (audio-text) and WebVid (video-text) style
manifests: a CSV/TSV/JSONL/JSON of rows with a media path and its caption. Each row gives, in
the chosen ``directions``,

- ``caption``:  user ``<media> Describe this image.`` -> assistant ``{caption}``
- ``generate``: user ``Generate an image: {caption}`` -> assistant ``<media>``

with the prompt drawn (seeded) from ``caption_prompts`` / ``generate_prompts``, where
``{modality}`` names the medium (``image``) and ``{a_modality}`` with its article
(``an image``). The modality comes from the file suffix unless ``modality`` fixes it.
Media paths are relative to ``media_root`` (default: the manifest's folder).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from codi2.core.modality import resolve_modalities
from codi2.errors import DatasetError
from codi2.training.builders.common import (
    BuilderOptions,
    BuildReport,
    MediaWriter,
    check_template,
    conversation,
    existing_file,
    field_of,
    finish,
    media_part,
    modality_of,
    read_manifest,
    template_parts,
)

NAME = "paired"
DESCRIPTION = "captioning and generation samples (both directions) from media + caption manifests (LAION / AudioSet / WebVid style)"


class Options(BuilderOptions):
    path_column: str = "path"
    caption_column: str = "caption"
    modality: str | None = None  # a registered media modality; None: from each file's suffix
    media_root: str | None = None
    directions: list[Literal["caption", "generate"]] = Field(default_factory=lambda: ["caption", "generate"], min_length=1)
    caption_prompts: list[str] = Field(default_factory=lambda: [
        "{media} Describe this {modality}.", "{media} What is in this {modality}?", "{media} Write a caption for this {modality}.",
    ], min_length=1)
    generate_prompts: list[str] = Field(default_factory=lambda: [
        "Generate {a_modality}: {caption}", "Create {a_modality} of {caption}", "{caption}",
    ], min_length=1)


def build(options: Options) -> BuildReport:
    for t in options.caption_prompts:
        check_template(t, ("media",), option="caption_prompts")
    for t in options.generate_prompts:
        check_template(t, ("caption",), option="generate_prompts")
    manifest = Path(options.input).expanduser()
    base = Path(options.media_root).expanduser() if options.media_root else manifest.resolve().parent
    if not base.is_dir():
        raise DatasetError(f"media_root {base}: not a folder")
    rng = random.Random(options.seed)
    writer = MediaWriter(Path(options.out), options.media)
    records = []
    for where, row in read_manifest(manifest):
        path = existing_file(str(field_of(row, options.path_column, where, kind=(str, int))), base, where)
        caption = str(field_of(row, options.caption_column, where)).strip()
        modality = options.modality or modality_of(path, where)
        a_modality = resolve_modalities().get(modality, where=where).noun  # what {a_modality} reads as
        media = media_part(modality, writer.existing(path))
        meta = {"source": where}
        if "caption" in options.directions:
            user = template_parts(rng.choice(options.caption_prompts), {"media": media, "modality": modality, "a_modality": a_modality}, option="caption_prompts")
            records.append(conversation(user, caption, record_id="", meta={**meta, "direction": "caption"}))
        if "generate" in options.directions:
            user = template_parts(rng.choice(options.generate_prompts), {"caption": caption, "modality": modality, "a_modality": a_modality}, option="generate_prompts")
            records.append(conversation(user, [media], record_id="", meta={**meta, "direction": "generate"}))
    rng.shuffle(records)
    records = records[: options.limit]
    for k, record in enumerate(records):
        record["id"] = f"{NAME}-{k:06d}"
    return finish(NAME, options, records, writer)
