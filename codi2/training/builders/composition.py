"""``composition``: subject-driven generation from entity crops, KOSMOS-G style (paper §4.1).

A manifest (JSONL / JSON; CSV with ``|``-separated lists) gives per row a ``caption``, the
``entities`` (crop images) and the ``target`` image. The caption becomes an interleaved prompt
whose entity mentions carry the crops, and the target image is the answer::

    {"caption": "a {e0} sitting on a {e1}", "entities": ["dog.png", "sofa.png"], "target": "scene.png"}
    {"caption": "a dog sitting on a sofa", "entities": [{"path": "dog.png", "phrase": "dog"},
                                                        {"path": "sofa.png", "phrase": "sofa"}], "target": "scene.png"}

With ``{e0}``, ``{e1}`` ... placeholders the crops replace them; with phrases each crop is
inserted right after the first unused mention of its phrase (case-insensitive; CSV: a
``phrases`` column). Either way every entity must be placed. ``prefix`` is put before the
prompt (``"Generate an image of "``, say). Paths are relative to the manifest.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from codi2.errors import DatasetError
from codi2.training.builders.common import (
    BuilderOptions,
    BuildReport,
    MediaWriter,
    conversation,
    existing_file,
    field_of,
    finish,
    media_part,
    modality_of,
    read_manifest,
    template_parts,
)

NAME = "composition"
DESCRIPTION = "KOSMOS-G style prompts interleaving entity crops with a caption -> the target image"


class Options(BuilderOptions):
    prefix: str = ""


def _entities(row: dict[str, Any], where: str, base: Path) -> list[tuple[Path, str | None]]:
    raw = field_of(row, "entities", where, kind=(list, str))
    if isinstance(raw, str):  # CSV: "a.png|b.png", phrases in their own column
        paths = [p.strip() for p in raw.split("|") if p.strip()]
        phrases = [p.strip() for p in str(row.get("phrases") or "").split("|")] if row.get("phrases") else [None] * len(paths)
        if len(phrases) != len(paths):
            raise DatasetError(f"{where}: {len(paths)} entities but {len(phrases)} phrases")
        raw = [{"path": p, "phrase": q} if q else p for p, q in zip(paths, phrases)]
    if not raw:
        raise DatasetError(f"{where}: 'entities' is empty")
    found = []
    for k, entity in enumerate(raw):
        ew = f"{where}: entities[{k}]"
        if isinstance(entity, str):
            path, phrase = entity, None
        elif isinstance(entity, dict):
            path, phrase = field_of(entity, "path", ew), entity.get("phrase")
            if phrase is not None and (not isinstance(phrase, str) or not phrase.strip()):
                raise DatasetError(f"{ew}: 'phrase' must be a non-empty string")
        else:
            raise DatasetError(f"{ew}: expected a path or {{'path', 'phrase'}}, got {type(entity).__name__}")
        file = existing_file(path, base, ew, "entity image")
        if modality_of(file, ew) != "image":
            raise DatasetError(f"{ew}: {file.name} is not an image")
        found.append((file, phrase))
    return found


def interleave(caption: str, entities: list[dict[str, Any]], phrases: list[str | None], where: str) -> list[dict[str, Any]]:
    """The caption as parts with each entity part placed (placeholders, or after its phrase)."""
    names = set(re.findall(r"\{(e\d+)\}", caption))
    if names:
        expected = {f"e{k}" for k in range(len(entities))}
        if names != expected:
            raise DatasetError(f"{where}: caption placeholders {sorted(names)} do not match the {len(entities)} entities ({sorted(expected)})")
        return template_parts(caption, {f"e{k}": part for k, part in enumerate(entities)}, option=f"{where}: caption")
    if any(p is None for p in phrases):
        raise DatasetError(f"{where}: the caption has no {{e0}}-style placeholders, so every entity needs a 'phrase' to attach to")
    inserts: list[tuple[int, int]] = []  # (position after the phrase, entity index)
    lowered = caption.lower()
    for k, phrase in enumerate(phrases):
        start = 0
        while True:
            pos = lowered.find(phrase.lower(), start)
            if pos < 0:
                raise DatasetError(f"{where}: entity {k}'s phrase {phrase!r} does not occur in the caption {caption!r}")
            end = pos + len(phrase)
            if all(end != e for e, _ in inserts):
                break
            start = pos + 1
        inserts.append((end, k))
    parts: list[dict[str, Any]] = []
    pos = 0
    for end, k in sorted(inserts):
        parts.append({"type": "text", "text": caption[pos:end] + " "})
        parts.append(entities[k])
        pos = end
    if pos < len(caption):
        parts.append({"type": "text", "text": caption[pos:]})
    return parts


def build(options: Options) -> BuildReport:
    manifest = Path(options.input).expanduser()
    base = manifest.resolve().parent
    writer = MediaWriter(Path(options.out), options.media)
    records = []
    for where, row in read_manifest(manifest):
        caption = field_of(row, "caption", where).strip()
        entities = _entities(row, where, base)
        target = existing_file(field_of(row, "target", where), base, where, "target image")
        if modality_of(target, where) != "image":
            raise DatasetError(f"{where}: target {target.name} is not an image")
        parts = [media_part("image", writer.existing(path)) for path, _ in entities]
        user = interleave(caption, parts, [p for _, p in entities], where)
        if options.prefix:
            user.insert(0, {"type": "text", "text": options.prefix})
        meta = {"source": where, "caption": caption}
        records.append(conversation(user, [media_part("image", writer.existing(target))], record_id="", meta=meta))
    random.Random(options.seed).shuffle(records)
    records = records[: options.limit]
    for k, record in enumerate(records):
        record["id"] = f"{NAME}-{k:06d}"
    return finish(NAME, options, records, writer)
