"""Reading evaluation sets: DreamBench folders, editing and audio-editing JSONL, output folders.

Every reader validates as it reads and raises :class:`~codi2.errors.DatasetError` naming the
file, line and field (or :class:`~codi2.errors.MediaError` for a media file). Nothing is
skipped silently. No torch here.

Layouts (see docs/evaluation.md):

- DreamBench: ``DATA/<subject>/*.jpg`` (the real images), optionally the dataset's own
  ``prompts_and_classes.txt`` (``subject_name,class`` table) or a ``subjects.json``
  (``{"dog2": {"class": "dog", "live": true}, ...}``).
- editing: a ``.jsonl`` (or a folder holding ``edits.jsonl``) of
  ``{"id"?, "input", "instruction", "target_caption"}``; paths relative to the file.
- audio editing: ``.jsonl`` files of ``{"id"?, "input", "instruction", "target", "task"?}`` or
  of ``{"id"?, "messages": [...], "meta"?}`` — the training data format
  (:mod:`codi2.training.data`, what ``audio-mix`` builds): a conversation whose last assistant
  message holds the target audio. The group of a record is its ``task``, else its
  ``meta.op`` (``audio-mix`` writes add / drop / replace there), else the file's stem
  (``add.jsonl`` -> ``add``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codi2.core.modality import Modalities, resolve_modalities
from codi2.errors import DatasetError

# --- DreamBench ---------------------------------------------------------------------------------

#: DreamBench's prompts (DreamBooth dataset, prompts_and_classes.txt), "{}" = "<class noun>"
OBJECT_PROMPTS = (
    "a {} in the jungle", "a {} in the snow", "a {} on the beach", "a {} on a cobblestone street",
    "a {} on top of pink fabric", "a {} on top of a wooden floor", "a {} with a city in the background",
    "a {} with a mountain in the background", "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest", "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background", "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water", "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it", "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street", "a {} on top of a dirt road",
    "a {} on top of a white rug", "a red {}", "a purple {}", "a shiny {}", "a wet {}", "a cube shaped {}",
)  # fmt: skip
LIVE_PROMPTS = (
    *OBJECT_PROMPTS[:10],
    "a {} wearing a red hat", "a {} wearing a santa hat", "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle", "a {} in a chef outfit", "a {} in a firefighter outfit",
    "a {} in a police outfit", "a {} wearing pink glasses", "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit", *OBJECT_PROMPTS[20:],
)  # fmt: skip
#: the classes whose subjects DreamBench prompts as live (its 9 cats and dogs)
LIVE_CLASSES = frozenset({"cat", "dog"})


@dataclass
class Subject:
    name: str
    cls: str
    live: bool
    images: list[Path]

    @property
    def prompts(self) -> tuple[str, ...]:
        return LIVE_PROMPTS if self.live else OBJECT_PROMPTS


def _media_files(folder: Path, modality: str) -> list[Path]:
    suffixes = resolve_modalities().get(modality).suffixes
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _read_classes(data: Path) -> dict[str, dict[str, Any]]:
    table = data / "prompts_and_classes.txt"
    if (data / "subjects.json").is_file():
        path = data / "subjects.json"
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: expected an object mapping subject -> {{'class', 'live'}}")
        out = {}
        for name, entry in raw.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
                raise DatasetError(f"{path}: subject {name!r} needs a string 'class'")
            out[name] = {"class": entry["class"], "live": entry.get("live")}
        return out
    if table.is_file():
        out, on = {}, False
        for lineno, line in enumerate(table.read_text().splitlines(), 1):
            line = line.strip()
            if line == "subject_name,class":
                on = True
            elif on and not line:
                break
            elif on:
                if line.count(",") != 1:
                    raise DatasetError(f"{table}:{lineno}: expected 'subject_name,class', got {line!r}")
                name, cls = (s.strip() for s in line.split(","))
                out[name] = {"class": cls, "live": None}
        if not out:
            raise DatasetError(f"{table}: no 'subject_name,class' table found")
        return out
    return {}


def dreambench_subjects(data: str | Path) -> list[Subject]:
    """The subjects of a DreamBench folder, with their class nouns and real images."""
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"DreamBench data {str(data)!r} is not a directory")
    classes = _read_classes(data)
    subjects = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _media_files(folder, "image")
        if not images:
            raise DatasetError(f"DreamBench subject folder {str(folder)!r} holds no images")
        entry = classes.get(folder.name)
        if classes and entry is None:
            raise DatasetError(f"DreamBench subject {folder.name!r} is not in the class table of {data}")
        cls = entry["class"] if entry else re.sub(r"\d+$", "", folder.name).replace("_", " ").strip()
        live = entry.get("live") if entry else None
        subjects.append(Subject(folder.name, cls, cls in LIVE_CLASSES if live is None else bool(live), images))
    if not subjects:
        raise DatasetError(f"DreamBench data {str(data)!r} has no subject folders")
    return subjects


# --- JSONL records --------------------------------------------------------------------------------


@dataclass
class Record:
    """One evaluation item: the prompt to generate from, the reference, the text to score with."""

    id: str
    group: str
    messages: list[dict[str, Any]]
    target: Path | None = None
    text: str | None = None
    source: str = ""  # "file:line", for errors
    extra: dict[str, Any] = field(default_factory=dict)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _field(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _local(path: str, base: Path, where: str, key: str) -> Path:
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise DatasetError(f"{where}: field {key!r}: file {str(p)!r} does not exist")
    return p


def _jsonl_files(data: Path, default_name: str) -> list[Path]:
    if data.is_file():
        return [data]
    if not data.is_dir():
        raise DatasetError(f"evaluation data {str(data)!r} does not exist")
    if (data / default_name).is_file():
        return [data / default_name]
    files = sorted(data.glob("*.jsonl"))
    if not files:
        raise DatasetError(f"evaluation data {str(data)!r} holds no .jsonl files")
    return files


def _unique_ids(records: list[Record]) -> list[Record]:
    seen: dict[tuple[str, str], str] = {}
    for r in records:
        key = (r.group, r.id)
        if key in seen:
            raise DatasetError(f"{r.source}: id {r.id!r} already used at {seen[key]}")
        seen[key] = r.source
    return records


def edit_records(data: str | Path) -> list[Record]:
    """Instruction-editing items (``input``, ``instruction``, ``target_caption``)."""
    records = []
    for path in _jsonl_files(Path(data), "edits.jsonl"):
        for lineno, obj in _jsonl(path):
            where = f"{path}:{lineno}"
            image = _local(_field(obj, "input", where), path.parent, where, "input")
            instruction = _field(obj, "instruction", where)
            caption = _field(obj, "target_caption", where)
            content = [{"type": "image", "path": str(image)}, {"type": "text", "text": instruction}]
            records.append(Record(str(obj.get("id", f"{path.stem}-{lineno:05d}")), "all",
                                  [{"role": "user", "content": content}], text=caption, source=where))
    if not records:
        raise DatasetError(f"editing data {str(data)!r} holds no records")
    return _unique_ids(records)


def _resolve_parts(messages: Any, base: Path, where: str) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: field 'messages' must be a non-empty list")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg:
            raise DatasetError(f"{where}: messages[{i}] must be an object with a 'role'")
        content = msg.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, dict) and isinstance(part.get("path"), str):
                    part = {**part, "path": str(_local(part["path"], base, where, f"messages[{i}].content[{j}].path"))}
                parts.append(part)
            msg = {**msg, "content": parts}
        out.append(msg)
    return out


def audio_edit_records(data: str | Path) -> list[Record]:
    """Audio-editing items, grouped by ``task`` (or file stem); see the module docstring."""
    records = []
    for path in _jsonl_files(Path(data), "audio_edits.jsonl"):
        for lineno, obj in _jsonl(path):
            where = f"{path}:{lineno}"
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            group = str(obj.get("task") or meta.get("op") or path.stem)
            rid = str(obj.get("id", f"{path.stem}-{lineno:05d}"))
            if "messages" in obj:
                messages = _resolve_parts(obj["messages"], path.parent, where)
                last = messages[-1]
                audio = [p for p in last.get("content") or [] if isinstance(p, dict) and p.get("type") == "audio"]
                if last["role"] != "assistant" or len(audio) != 1 or "path" not in audio[0]:
                    raise DatasetError(f"{where}: the last message must be the assistant's, holding "
                                       f"exactly one audio part with a 'path' (the target)")
                records.append(Record(rid, group, messages[:-1], target=Path(audio[0]["path"]), source=where))
            else:
                clip = _local(_field(obj, "input", where), path.parent, where, "input")
                target = _local(_field(obj, "target", where), path.parent, where, "target")
                content = [{"type": "audio", "path": str(clip)},
                           {"type": "text", "text": _field(obj, "instruction", where)}]
                records.append(Record(rid, group, [{"role": "user", "content": content}],
                                      target=target, source=where))
    if not records:
        raise DatasetError(f"audio-editing data {str(data)!r} holds no records")
    return _unique_ids(records)


# --- output folders ---------------------------------------------------------------------------------

def modality_of(path: Path, modalities: Modalities | None = None) -> str:
    """The registered media modality whose suffix ``path`` has."""
    spec = resolve_modalities(modalities).by_suffix(path.suffix, item=repr(str(path))) if path.suffix else None
    if spec is None or spec.is_text:
        raise DatasetError(f"{str(path)!r}: not a media file codi2 can score (suffix {path.suffix!r})")
    return spec.name


def _by_stem(folder: Path, role: str, modalities: Modalities | None) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{role} folder {str(folder)!r} does not exist")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        modality_of(p, modalities)  # raises on files that are not media
        if p.stem in files:
            raise DatasetError(f"{role} folder {str(folder)!r}: {files[p.stem].name!r} and {p.name!r} "
                               f"share the name {p.stem!r}; pairing is by file name without suffix")
        files[p.stem] = p
    if not files:
        raise DatasetError(f"{role} folder {str(folder)!r} holds no media files")
    return files


def pair_folders(generated: str | Path, references: str | Path, modalities: Modalities | None = None,
                 ) -> tuple[str, list[tuple[str, Path, Path]]]:
    """``(modality, [(name, generated_file, reference_file)])`` paired by file stem.

    Every file must have a partner and all files one of ``modalities`` (default: the registered
    ones); errors name the files.
    """
    gen, ref = _by_stem(Path(generated), "generated", modalities), _by_stem(Path(references), "reference", modalities)
    only_gen, only_ref = sorted(set(gen) - set(ref)), sorted(set(ref) - set(gen))
    if only_gen or only_ref:
        def names(files: dict[str, Path], stems: list[str]) -> str:
            shown = ", ".join(files[s].name for s in stems[:10])
            return shown + (f" and {len(stems) - 10} more" if len(stems) > 10 else "")

        problems = []
        if only_gen:
            problems.append(f"generated without a reference in {str(references)!r}: {names(gen, only_gen)}")
        if only_ref:
            problems.append(f"references without a generated file in {str(generated)!r}: {names(ref, only_ref)}")
        raise DatasetError("unpaired files — " + "; ".join(problems))
    pairs = [(stem, gen[stem], ref[stem]) for stem in sorted(gen)]
    found = {p: modality_of(p, modalities) for _, g, r in pairs for p in (g, r)}
    kinds = set(found.values())
    if len(kinds) != 1:
        odd = next(p for p, m in found.items() if m != found[pairs[0][1]])
        raise DatasetError(f"mixed media in the folders ({', '.join(sorted(kinds))}), e.g. {str(odd)!r}")
    return kinds.pop(), pairs


def read_texts(path: str | Path) -> dict[str, str]:
    """Texts by item name: a JSON object ``{name: text}`` or JSONL of ``{"name"|"id", "text"}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"texts file {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        out = {}
        for lineno, obj in _jsonl(path):
            name = obj.get("name", obj.get("id"))
            if not isinstance(name, (str, int)) or name == "":
                raise DatasetError(f"{path}:{lineno}: needs a 'name' (or 'id') naming the item")
            out[Path(str(name)).stem] = _field(obj, "text", f"{path}:{lineno}")
        return out
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise DatasetError(f"{path}: expected an object mapping item name -> text")
    return {Path(k).stem: v for k, v in raw.items()}
