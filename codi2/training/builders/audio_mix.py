"""``audio-mix``: audio editing data made by mixing clips (paper §4.1: add, drop, replace).

From a folder of clips (any layout; WAV/FLAC/OGG/MP3 read with soundfile), each sample picks
clips ``a``, ``b`` (and ``c``) with ``seed`` and one operation:

- ``add``:     input ``a``         -> target ``a + b``   "Add the sound of {caption_b} to {a}."
- ``drop``:    input ``a + b``     -> target ``a``       "Remove {caption_b} from {a}."
- ``replace``: input ``a + b``     -> target ``a + c``   "Replace {caption_b} in {a} with {caption_c}."

Arithmetic, per sample: every clip is mixed to mono, resampled to ``sample_rate``
(:func:`codi2.core.audio.resample`), fitted to the length of ``a`` (cropped, or looped when
shorter; ``duration`` fixes the length instead) and normalised to the RMS level
``target_rms_db`` dBFS. The added clip is scaled by ``g = 10 ** (-snr_db / 20)``, so the
signal-to-noise ratio of ``a`` against the added sound is exactly ``snr_db`` (drawn uniformly
from ``[snr_db, snr_db_max]`` when a maximum is given). If any signal of the sample would clip,
all of them are scaled by the same factor, so input and target stay consistent. ``meta``
records clips, gain, scale and SNR.

Captions (optional manifest of ``path`` + ``caption`` rows, paths relative to it) make the
instructions name the sounds; a clip without a caption is shown to the model instead (the
placeholder becomes the clip itself, as an audio part).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

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
    media_files,
    media_part,
    read_manifest,
    template_parts,
)

NAME = "audio-mix"
DESCRIPTION = "audio add / drop / replace edits mixed from a folder of clips, loudness-normalised at a chosen SNR"
TEMPLATES = {
    "add": "Add the sound of {caption_b} to {a}.",
    "drop": "Remove {caption_b} from {a}.",
    "replace": "Replace {caption_b} in {a} with {caption_c}.",
}


class Options(BuilderOptions):
    #: a manifest (CSV/JSONL/JSON) with columns ``path`` and ``caption``
    captions: str | None = None
    #: samples to make (None: one per clip)
    count: int | None = Field(None, ge=1)
    ops: list[Literal["add", "drop", "replace"]] = Field(default_factory=lambda: ["add", "drop", "replace"], min_length=1)
    snr_db: float = 0.0
    snr_db_max: float | None = None
    sample_rate: int = Field(16000, ge=1000)
    #: seconds per sample (None: the length of clip ``a``)
    duration: float | None = Field(None, gt=0)
    target_rms_db: float = Field(-20.0, le=0)
    #: WAV sample format of the written files
    subtype: Literal["PCM_16", "PCM_24", "FLOAT"] = "PCM_16"
    add_template: str = TEMPLATES["add"]
    drop_template: str = TEMPLATES["drop"]
    replace_template: str = TEMPLATES["replace"]

    @model_validator(mode="after")
    def _range(self) -> Options:
        if self.snr_db_max is not None and self.snr_db_max < self.snr_db:
            raise ValueError(f"snr_db_max ({self.snr_db_max}) is below snr_db ({self.snr_db})")
        return self


def rms(x) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def fit(x, length: int):
    """Crop to ``length`` samples, or loop a shorter clip."""
    import numpy as np

    return x[:length].copy() if len(x) >= length else np.resize(x, length)


def normalise(x, target_rms: float, where: str):
    level = rms(x)
    if level < 1e-6:
        raise DatasetError(f"{where}: the clip is silent (RMS {level:.2e}); remove it from the folder")
    return (x * (target_rms / level)).astype("float32")


def mix(a, b, snr_db: float):
    """``a + g * b`` with ``g`` so that ``20 log10(rms(a) / rms(g b)) = snr_db``; returns (mix, g)."""
    gain = rms(a) / (rms(b) * 10 ** (snr_db / 20))
    return (a + gain * b).astype("float32"), gain


def _read_clip(path: Path, sample_rate: int):
    import numpy as np
    import soundfile as sf

    from codi2.core.audio import resample

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DatasetError(f"{path}: cannot read audio: {exc}") from None
    if data.size == 0:
        raise DatasetError(f"{path}: empty audio file")
    mono = data.mean(axis=1).astype(np.float32)
    return resample(mono, rate, sample_rate) if rate != sample_rate else mono


def _captions(manifest: Path) -> dict[Path, str]:
    base = manifest.resolve().parent
    found = {}
    for where, row in read_manifest(manifest):
        found[existing_file(field_of(row, "path", where), base, where, "clip").resolve()] = field_of(row, "caption", where).strip()
    return found


def build(options: Options) -> BuildReport:
    import numpy as np
    import soundfile as sf

    templates = {"add": options.add_template, "drop": options.drop_template, "replace": options.replace_template}
    for op, needs in (("add", ("a", "caption_b")), ("drop", ("a", "caption_b")), ("replace", ("a", "caption_b", "caption_c"))):
        check_template(templates[op], needs, option=f"{op}_template")
    folder = Path(options.input).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: input must be a folder of audio clips")
    clips = media_files(folder, ("audio",))
    need = 3 if "replace" in options.ops else 2
    if len(clips) < need:
        raise DatasetError(f"{folder}: found {len(clips)} audio clip(s); {', '.join(options.ops)} need at least {need}")
    captions = _captions(Path(options.captions).expanduser()) if options.captions else {}
    load = functools.lru_cache(maxsize=64)(lambda i: _read_clip(clips[i], options.sample_rate))
    rng = random.Random(options.seed)
    target = 10 ** (options.target_rms_db / 20)
    writer = MediaWriter(Path(options.out), "reference")
    records = []
    total = min(options.count or len(clips), options.limit or 1 << 62)
    for k in range(total):
        op = rng.choice(options.ops)
        ia, ib, ic = rng.sample(range(len(clips)), 3 if op == "replace" else 2) + ([None] if op != "replace" else [])
        snr = options.snr_db if options.snr_db_max is None else rng.uniform(options.snr_db, options.snr_db_max)
        a_raw = load(ia)
        length = round(options.duration * options.sample_rate) if options.duration else len(a_raw)
        a = normalise(fit(a_raw, length), target, str(clips[ia]))
        b = normalise(fit(load(ib), length), target, str(clips[ib]))
        ab, gain = mix(a, b, snr)
        signals = {"add": {"input": a, "target": ab, "b": b}, "drop": {"input": ab, "target": a, "b": b}}.get(op)
        if op == "replace":
            c = normalise(fit(load(ic), length), target, str(clips[ic]))
            ac, _ = mix(a, c, snr)
            signals = {"input": ab, "target": ac, "b": b, "c": c}
        peak = max(float(np.abs(s).max()) for s in signals.values())
        scale = min(1.0, 0.99 / peak)  # one factor for the whole sample keeps input and target consistent
        paths = {}
        for role in ("input", "target"):
            path, rel = writer.new(f"{k:06d}-{role}.wav")
            sf.write(str(path), signals[role] * scale, options.sample_rate, subtype=options.subtype)
            paths[role] = rel

        values = {"a": media_part("audio", paths["input"])}
        for name, index, role in (("caption_b", ib, "b"), ("caption_c", ic, "c")):
            if index is None:
                continue
            caption = captions.get(clips[index].resolve())
            if caption:
                values[name] = caption
            else:  # no caption: the (normalised) clip itself stands for the sound
                path, rel = writer.new(f"{k:06d}-{role}.wav")
                sf.write(str(path), signals[role] * scale, options.sample_rate, subtype=options.subtype)
                values[name] = media_part("audio", rel)
        meta = {"op": op, "a": writer.existing(clips[ia]), "b": writer.existing(clips[ib]), "snr_db": snr, "gain": gain,
                "scale": scale, "sample_rate": options.sample_rate}
        if op == "replace":
            meta["c"] = writer.existing(clips[ic])
        user = template_parts(templates[op], values, option=f"{op}_template")
        records.append(conversation(user, [media_part("audio", paths["target"])], record_id=f"{NAME}-{k:06d}", meta=meta))
    return finish(NAME, options, records, writer)
