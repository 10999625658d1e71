"""``incontext-edit``: in-context editing examples from edit triples (paper §4.1).

Two edits that share an instruction make one sample: the first pair is the example, the second
the query::

    user:      Given the transformation between <a> and <a'>, apply the same editing to <b>.
    assistant: <b'>

``input`` is either

- a folder in the InstructPix2Pix layout: sub-folders holding ``prompt.json`` (its ``"edit"``
  is the instruction) and pairs ``NAME_0.ext`` (before) / ``NAME_1.ext`` (after) — several
  pairs in one folder share its instruction; or
- a manifest (JSONL / JSON / CSV) of rows ``{"input": path, "instruction": str, "edited": path}``
  with paths relative to the manifest.

Images and audio alike (the modality comes from the file suffix; one sample never mixes
modalities). Instructions are grouped after folding case and whitespace. Each group gives up to
``max_per_group`` ordered (example, query) pairs, drawn with ``seed``.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

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
    read_json,
    read_manifest,
    template_parts,
)

NAME = "incontext-edit"
DESCRIPTION = "in-context edits from InstructPix2Pix-layout triples sharing an instruction (image or audio)"
TEMPLATE = "Given the transformation between {a} and {a_edited}, apply the same editing to {b}."
_PAIR = re.compile(r"^(.*)_0$")


class Options(BuilderOptions):
    #: the prompt; placeholders {a} (example before), {a_edited} (example after), {b} (query)
    #: and optionally {instruction}
    template: str = TEMPLATE
    #: ordered (example, query) pairs taken from one instruction group (None: all)
    max_per_group: int | None = Field(8, ge=1)


@dataclass(frozen=True)
class Edit:
    before: Path
    after: Path
    instruction: str
    modality: str
    where: str


def read_edits(source: Path) -> list[Edit]:
    """Edit triples from an InstructPix2Pix folder or a manifest."""
    if source.is_dir():
        return _from_folder(source)
    if source.is_file():
        return _from_manifest(source)
    raise DatasetError(f"{source}: input not found (a folder in InstructPix2Pix layout or a manifest)")


def _from_folder(root: Path) -> list[Edit]:
    edits = []
    prompts = sorted(root.rglob("prompt.json"))
    if not prompts:
        raise DatasetError(f"{root}: no prompt.json found; expected sub-folders with prompt.json and NAME_0/NAME_1 pairs")
    for prompt in prompts:
        data = read_json(prompt)
        if not isinstance(data, dict):
            raise DatasetError(f"{prompt}: expected a JSON object with 'edit'")
        instruction = field_of(data, "edit", str(prompt))
        found = 0
        for before in sorted(prompt.parent.iterdir()):
            match = _PAIR.match(before.stem)
            if not match or before.name.startswith("."):
                continue
            after = next(iter(sorted(prompt.parent.glob(f"{glob_escape(match.group(1))}_1.*"))), None)
            if after is None:
                raise DatasetError(f"{before}: no edited counterpart {match.group(1)}_1.* next to it")
            where = f"{prompt.parent}/{match.group(1)}"
            edits.append(_edit(before, after, instruction, where))
            found += 1
        if not found:
            raise DatasetError(f"{prompt.parent}: prompt.json but no NAME_0 / NAME_1 file pairs")
    return edits


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def _from_manifest(manifest: Path) -> list[Edit]:
    base = manifest.resolve().parent
    edits = []
    for where, row in read_manifest(manifest):
        before = existing_file(field_of(row, "input", where), base, where, "input file")
        after = existing_file(field_of(row, "edited", where), base, where, "edited file")
        edits.append(_edit(before, after, field_of(row, "instruction", where), where))
    return edits


def _edit(before: Path, after: Path, instruction: str, where: str) -> Edit:
    modality = modality_of(before, where)
    if modality_of(after, where) != modality:
        raise DatasetError(f"{where}: {before.name} is {modality} but {after.name} is {modality_of(after, where)}")
    return Edit(before, after, instruction.strip(), modality, where)


def build(options: Options) -> BuildReport:
    check_template(options.template, ("a", "a_edited", "b"), option="template")
    rng = random.Random(options.seed)
    groups: dict[tuple[str, str], list[Edit]] = {}
    for edit in read_edits(Path(options.input).expanduser()):
        groups.setdefault((edit.modality, " ".join(edit.instruction.lower().split())), []).append(edit)
    writer = MediaWriter(Path(options.out), options.media)
    records = []
    singles = 0
    for key in sorted(groups):
        edits = groups[key]
        if len(edits) < 2:
            singles += 1
            continue
        pairs = list(itertools.permutations(range(len(edits)), 2))
        rng.shuffle(pairs)
        for i, j in pairs[: options.max_per_group]:
            ex, query = edits[i], edits[j]
            a, a_edited, b, b_edited = (media_part(ex.modality, writer.existing(p)) for p in (ex.before, ex.after, query.before, query.after))
            user = template_parts(options.template, {"a": a, "a_edited": a_edited, "b": b, "instruction": ex.instruction})
            meta = {"instruction": ex.instruction, "example": ex.where, "query": query.where}
            records.append(conversation(user, [b_edited], record_id="", meta=meta))
    rng.shuffle(records)
    records = records[: options.limit]
    for k, record in enumerate(records):
        record["id"] = f"{NAME}-{k:06d}"
    notes = [f"{singles} instruction(s) with a single edit were not used (a sample needs two edits sharing an instruction)"] if singles else []
    return finish(NAME, options, records, writer, notes)
