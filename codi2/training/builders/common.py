"""What every data builder shares: options, manifests, media references, prompt templates.

A builder reads the user's own files (``input``), writes ``out/data.jsonl`` in the format of
:mod:`codi2.training.data` and, when it creates media (audio mixes, decoded images), writes them
under ``out/media/``. Existing media are referenced by a path relative to ``out`` (default),
copied or symlinked into ``out/media`` (``media: copy|symlink``). Every random choice comes from
``random.Random(seed)``, so a builder run twice gives the same file. Errors name the file and
the row (line for JSONL, row for CSV counting the header as row 1, index for a JSON array).
This module imports no torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codi2.core.modality import resolve_modalities
from codi2.errors import DatasetError

DATA_FILE = "data.jsonl"
MEDIA_DIR = "media"


class BuilderOptions(BaseModel):
    """Options every builder takes."""

    model_config = ConfigDict(extra="forbid")

    #: the user's files: a folder or a manifest (what each builder reads is in its docstring)
    input: str
    #: output folder: ``data.jsonl`` and ``media/``
    out: str
    seed: int = 0
    #: how existing media enter the dataset: a relative path to them, a copy, or a symlink
    media: Literal["reference", "copy", "symlink"] = "reference"
    #: build at most this many samples (None: all)
    limit: int | None = Field(None, ge=1)


@dataclass
class BuildReport:
    """What a builder wrote."""

    kind: str
    data_file: Path
    samples: int
    media_written: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.kind}: wrote {self.samples} sample(s) to {self.data_file}"
                 + (f" and {self.media_written} media file(s) to {self.data_file.parent / MEDIA_DIR}" if self.media_written else "")]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# --- manifests --------------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a CSV/TSV, JSONL or JSON (array of objects) file as ``(where, row)``, ``where``
    naming file and row (``captions.csv:row 3``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            if not reader.fieldnames:
                raise DatasetError(f"{path}: empty CSV (no header row)")
            for number, row in enumerate(reader, start=2):
                yield f"{path}:row {number}", {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
        return
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{number}: invalid JSON at column {exc.colno}: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                yield f"{path}:{number}", row
        return
    if suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise DatasetError(f"{path}: item {index}: expected an object, got {type(row).__name__}")
            yield f"{path}:item {index}", row
        return
    raise DatasetError(f"{path}: unsupported manifest type {suffix or '(no suffix)'}; use .csv, .tsv, .jsonl or .json")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None


def field_of(row: Mapping[str, Any], key: str, where: str, *, kind: type | tuple[type, ...] = str) -> Any:
    """``row[key]``, which must be present, non-empty and of ``kind``."""
    if key not in row or row[key] is None or row[key] == "":
        raise DatasetError(f"{where}: missing column {key!r} (columns: {', '.join(sorted(row)) or 'none'})")
    value = row[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(f"{where}: column {key!r} must be {names}, got {type(value).__name__}")
    return value


def existing_file(value: str, base: Path, where: str, what: str = "media file") -> Path:
    """A path from a manifest (relative to ``base``) that must exist."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise DatasetError(f"{where}: {what} not found: {value!r} (looked at {path})")
    return path


# --- media ---------------------------------------------------------------------------------------------


def modality_of(path: Path, where: str) -> str:
    """The registered media modality whose suffix ``path`` has (DatasetError if none or several)."""
    registered = resolve_modalities()
    spec = registered.by_suffix(path.suffix, item=f"{where}: {path.name!r}") if path.suffix else None
    if spec is None or spec.is_text:
        raise DatasetError(f"{where}: cannot tell the modality of {path.name!r} from its suffix "
                           f"(registered: {', '.join(registered.media)})")
    return spec.name


def media_files(folder: Path, modalities: Sequence[str] | None = None) -> list[Path]:
    """Files of the given media modalities (default: every registered one) under ``folder``
    (recursively), in sorted order."""
    registered = resolve_modalities()
    suffixes = {s for name in (registered.media if modalities is None else modalities) for s in registered.get(name).suffixes}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


class MediaWriter:
    """Puts media into a dataset folder and returns the path to write into the JSONL."""

    def __init__(self, out: Path, mode: str = "reference"):
        self.out, self.mode = out, mode
        self.media = out / MEDIA_DIR
        self.written = 0

    def existing(self, path: Path) -> str:
        """A media file the user already has (referenced, copied or symlinked)."""
        path = path.resolve()
        if self.mode == "reference":
            try:
                return Path(os.path.relpath(path, self.out.resolve())).as_posix()
            except ValueError:  # another drive (Windows): only an absolute path reaches it
                return str(path)
        name = f"{hashlib.sha1(str(path).encode()).hexdigest()[:10]}-{path.name}"
        target = self.media / name
        if not target.exists():
            self.media.mkdir(parents=True, exist_ok=True)
            if self.mode == "copy":
                shutil.copyfile(path, target)
            else:
                os.symlink(path, target)
            self.written += 1
        return f"{MEDIA_DIR}/{name}"

    def new(self, name: str) -> tuple[Path, str]:
        """A path to write a new media file to, and its JSONL path."""
        self.media.mkdir(parents=True, exist_ok=True)
        self.written += 1
        return self.media / name, f"{MEDIA_DIR}/{name}"


def media_part(modality: str, path: str, *, target: bool | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": modality, "path": path}
    if target is not None:
        part["target"] = target
    return part


# --- prompt templates -----------------------------------------------------------------------------------

_SLOT = re.compile(r"\{(\w+)\}")


def template_parts(template: str, values: Mapping[str, Any], *, option: str = "template") -> list[dict[str, Any]]:
    """Fill ``"Given {a} and {b} ..."``: a string value is spliced in as text, a dict (a message
    part) as that part. Unknown placeholders name the option and the known ones."""
    parts: list[dict[str, Any]] = []
    text: list[str] = []
    pos = 0
    for match in _SLOT.finditer(template):
        name = match.group(1)
        if name not in values:
            raise DatasetError(f"{option} {template!r}: unknown placeholder {{{name}}}; known: {', '.join('{' + k + '}' for k in values)}")
        text.append(template[pos : match.start()])
        pos = match.end()
        value = values[name]
        if isinstance(value, str):
            text.append(value)
            continue
        if "".join(text):
            parts.append({"type": "text", "text": "".join(text)})
        text = []
        parts.append(dict(value))
    text.append(template[pos:])
    if "".join(text):
        parts.append({"type": "text", "text": "".join(text)})
    return parts


def check_template(template: str, required: Sequence[str], *, option: str) -> None:
    """Every name in ``required`` must appear in ``template``."""
    present = set(_SLOT.findall(template))
    missing = [r for r in required if r not in present]
    if missing:
        raise DatasetError(f"{option} {template!r} lacks {', '.join('{' + m + '}' for m in missing)}")


def conversation(user: list[dict[str, Any]] | str, answer: list[dict[str, Any]] | str, *, record_id: str, meta: dict[str, Any] | None = None, history: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One JSONL record: optional history turns, a user turn and the target answer."""
    record: dict[str, Any] = {"id": record_id, "messages": [*history, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    if meta:
        record["meta"] = meta
    return record


def finish(kind: str, options: BuilderOptions, records: list[dict[str, Any]], writer: MediaWriter | None = None, notes: Sequence[str] = ()) -> BuildReport:
    """Write ``records`` to ``out/data.jsonl``; an empty result is an error (nothing to train on)."""
    from codi2.training.data import write_jsonl

    out = Path(options.out)
    if not records:
        raise DatasetError(f"{kind}: {options.input} gave no samples" + (f" ({'; '.join(notes)})" if notes else ""))
    count = write_jsonl(out / DATA_FILE, records)
    return BuildReport(kind, out / DATA_FILE, count, writer.written if writer else 0, list(notes))
