"""Files of prompts for ``codi2 generate --prompts FILE``: one JSON object per line.

Each line: ``{"prompt": "Make {a} green.", "media": {"a": "square.png"}, "seed": 0, "id": "q1"}``;
only ``prompt`` is required. Media paths are relative to the file. ``id`` (default: the line
number) names the item's output folder and its line in the results; ids must be unique and
safe as folder names. Every problem is reported as ``FILE:LINE: field: reason``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codi2.core.config import check_seed
from codi2.errors import ConfigError, DatasetError, MediaError, MessageError

MAX_PROMPT_FILE_BYTES = 64 * 1024 * 1024
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class PromptItem:
    id: str
    prompt: str
    media: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


def read_prompt_file(path: str | Path, *, load_media: Any = None) -> list[PromptItem]:
    """Read and check every line; ``load_media(path, name=...)`` loads each attachment (the
    CLI passes its attachment loader, so media errors surface here, before any generation)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such prompt file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_PROMPT_FILE_BYTES // 2**20} MiB")
    items: list[PromptItem] = []
    seen: set[str] = set()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DatasetError(f"{where}: not a JSON object ({exc})") from None
            items.append(_item(record, where, number, path.parent, load_media))
            if items[-1].id in seen:
                raise DatasetError(f"{where}: id: {items[-1].id!r} is used twice")
            seen.add(items[-1].id)
    if not items:
        raise DatasetError(f"{path}: no prompts")
    return items


def _item(record: Any, where: str, number: int, base: Path, load_media: Any) -> PromptItem:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - {"prompt", "media", "seed", "id"})
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; known: prompt, media, seed, id")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetError(f"{where}: prompt: expected a non-empty string")
    try:  # the one seed range of the API, CLI and server
        seed = check_seed(record.get("seed"), "seed")
    except ConfigError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    item_id = str(record.get("id", number))
    if not _SAFE_ID.fullmatch(item_id):
        raise DatasetError(f"{where}: id: {item_id!r} is not a safe folder name (letters, digits, . _ -)")
    media = record.get("media") or {}
    if not isinstance(media, dict) or not all(isinstance(v, str) for v in media.values()):
        raise DatasetError(f"{where}: media: expected an object of NAME: PATH strings")
    loaded: dict[str, Any] = {}
    for name, rel in media.items():
        target = base / rel
        try:
            loaded[name] = load_media(target, name=name) if load_media else target
        except (MediaError, MessageError) as exc:
            raise DatasetError(f"{where}: media.{name}: {exc}") from None
    from codi2.core.messages import normalize_messages

    try:  # placeholder mistakes surface here, before any model loads
        normalize_messages(prompt, loaded)
    except MessageError as exc:
        raise DatasetError(f"{where}: prompt: {exc}") from None
    return PromptItem(item_id, prompt, loaded, seed)


__all__ = ["MAX_PROMPT_FILE_BYTES", "PromptItem", "read_prompt_file"]
