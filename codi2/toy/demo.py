"""``codi2 demo``: the model on one fresh prompt of every toy task, as an HTML gallery.

>>> result = run_demo(codi2.load("toy"), "codi2-demo", seed=0)   # doctest: +SKIP
>>> result.index                                                  # codi2-demo/index.html

Inputs are drawn fresh from the world (``seed`` picks them), the answers are judged by the
deterministic analysers (:mod:`codi2.toy.analysers`), and ``out_dir`` receives
``index.html`` plus every input and output as PNG (images), WAV (audio) or GIF (clips), and
a spectrogram picture of every sound (``NAME.spec.png``). The page shows the prompts with their
inputs, the outputs (images upscaled with ``image-rendering: pixelated``, audio with players and
their spectrograms), what the analyser read and pass/fail.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codi2.errors import Codi2Error
from codi2.toy.analysers import Check, judge
from codi2.toy.tasks import TASKS, Sample, make_samples

# the demo shows every task once, and the held-out in-context cases once more
DEMO_PLAN: tuple[tuple[str, bool | None], ...] = (
    *((name, False) for name in TASKS),
    ("image_exemplar", True),
    ("audio_exemplar", True),
)


def save_lossless(media: Any, stem: Path) -> Path:
    """Write ``media`` as ``stem`` + its modality's suffix; clips (a page shows them as videos)
    as GIF where their modality writes it: the toy world's tiny flat clips stay lossless."""
    from codi2.core.modality import resolve_modalities

    spec = resolve_modalities().get(media.modality, where=media.label)
    as_gif = spec.display == "video" and ".gif" in spec.writes
    return media.save(stem.with_name(stem.name + ".gif") if as_gif else stem)


@dataclass
class DemoEntry:
    """One prompt of the demo: the sample, the answer text of each round, the checks."""

    sample: Sample
    texts: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # media name -> file name in out_dir
    outputs: list[list[tuple[str, str]]] = field(default_factory=list)  # per round: (modality, file)
    error: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(c.passed for c in self.checks)


@dataclass
class DemoResult:
    out_dir: Path
    index: Path
    entries: list[DemoEntry]
    seconds: float

    @property
    def passed(self) -> int:
        return sum(e.passed for e in self.entries)

    @property
    def total(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        lines = [f"codi2 demo: {self.passed}/{self.total} prompts pass ({self.seconds:.1f} s)"]
        for e in self.entries:
            mark = "pass" if e.passed else "FAIL"
            tag = " (held-out)" if e.sample.held_out else ""
            note = f"  error: {e.error}" if e.error else ""
            lines.append(f"  {mark}  {TASKS[e.sample.task].title}{tag}{note}")
        lines.append(f"gallery: {self.index}")
        return "\n".join(lines)


def run_demo(
    model: Any,
    out_dir: str | Path = "codi2-demo",
    seed: int = 0,
    *,
    options: dict[str, Any] | None = None,
    plan: Sequence[tuple[str, bool | None]] = DEMO_PLAN,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run ``model`` on one sample per ``plan`` entry ``(task, held_out)``, write the gallery.

    ``options`` go to every ``generate`` / ``ask`` call (e.g. ``max_new_tokens``, ``steps``).
    ``log`` (default: print to stdout) gets the summary. A task the model cannot do (an
    error of :mod:`codi2.errors`) is shown as failed with its message; other errors propagate.
    """
    log = log or print
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (task, held_out) in enumerate(plan):
        sample = make_samples(task, 1, seed=seed * 1000 + k, split="eval", held_out=held_out)[0]
        entries.append(_run_entry(model, sample, out, f"e{k:02d}", dict(options or {}), seed))
    result = DemoResult(out, out / "index.html", entries, time.perf_counter() - start)
    result.index.write_text(_page(result), encoding="utf-8")
    log(result.summary())
    return result


def _display(modality: str) -> str:
    """How a page shows ``modality`` (its registered spec's ``display``)."""
    from codi2.core.modality import resolve_modalities

    modalities = resolve_modalities()
    return modalities[modality].display if modality in modalities else "download"


def _save(media: Any, stem: Path) -> Path:
    """Write ``media`` (:func:`save_lossless`); a sound also gets its spectrogram picture beside
    it (``NAME.spec.png``)."""
    written = save_lossless(media, stem)
    if _display(media.modality) == "audio":
        from codi2.core.media.spectrogram import spectrogram_png

        written.with_suffix(".spec.png").write_bytes(spectrogram_png(media.data, media.sample_rate))
    return written


def _run_entry(model: Any, sample: Sample, out: Path, stem: str, options: dict[str, Any], seed: int) -> DemoEntry:
    entry = DemoEntry(sample)
    for name, media in sample.media.items():
        entry.files[name] = _save(media, out / f"{stem}_{name}").name
    t0 = time.perf_counter()
    try:
        answers = []
        if sample.followups:
            chat = model.chat()
            for prompt in sample.prompts:
                answers.append(chat.ask(prompt, sample.media if not answers else None, seed=seed, **options))
        else:
            answers.append(model.generate(sample.prompt, media=sample.media, seed=seed, **options))
    except Codi2Error as exc:
        entry.error = f"{type(exc).__name__}: {exc}"
        print(f"codi2 demo: {sample.task}: {entry.error}", file=sys.stderr)
        return entry
    finally:
        entry.seconds = time.perf_counter() - t0
    expected = iter(sample.expected)
    for r, answer in enumerate(answers):
        entry.texts.append(answer.text)
        entry.checks += judge([next(expected) for _ in range(sample.rounds[r])], answer.media, answer.text)
        files = []
        for j, media in enumerate(answer.media):
            path = _save(media, out / f"{stem}_r{r}_out{j}")
            files.append((media.modality, path.name))
        entry.outputs.append(files)
    return entry


# --- the page ------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
.entry { border: 1px solid #ccc; border-radius: 8px; padding: 1em; margin: 1em 0; }
.entry.pass { border-left: 8px solid #2a2; } .entry.fail { border-left: 8px solid #c33; }
img.px { width: 128px; height: 128px; image-rendering: pixelated; image-rendering: crisp-edges;
         border: 1px solid #ddd; vertical-align: middle; margin: 2px; }
.prompt { font-size: 1.1em; margin: 0.4em 0; } .prompt img.px { width: 64px; height: 64px; }
.media { display: inline-block; vertical-align: middle; margin: 0 4px; }
audio { vertical-align: middle; height: 32px; }
.sound { display: inline-flex; align-items: center; gap: 4px; vertical-align: middle; }
img.spec { width: 160px; height: 64px; image-rendering: pixelated; border-radius: 4px; }
.ok { color: #2a2; font-weight: bold; } .bad { color: #c33; font-weight: bold; }
.tag { background: #eef; border-radius: 4px; padding: 0 6px; font-size: 0.85em; }
code { background: #f4f4f4; padding: 0 4px; }
"""


def _media_tag(modality: str, file: str, small: bool = False) -> str:
    src = html.escape(file, quote=True)
    display = _display(modality)
    if display in ("image", "video"):  # clips are written as GIFs
        return f'<img class="px" src="{src}" alt="{src}">'
    if display == "audio":
        spec = html.escape(str(Path(file).with_suffix(".spec.png")), quote=True)
        return (f'<span class="sound"><audio controls preload="none" src="{src}"></audio>'
                f'<img class="spec" src="{spec}" alt="spectrogram of {src}" title="spectrogram"></span>')
    return f'<a href="{src}">{src}</a>'


def _prompt_html(prompt: str, sample: Sample, files: dict[str, str]) -> str:
    import re

    pieces, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", prompt):
        pieces.append(html.escape(prompt[pos : m.start()]))
        name = m.group(1)
        media = sample.media[name]
        pieces.append(f'<span class="media" title="{name}: {html.escape(media.meta.get("caption", ""))}">'
                      f"{_media_tag(media.modality, files[name])}</span>")
        pos = m.end()
    pieces.append(html.escape(prompt[pos:]))
    return "".join(pieces)


def _entry_html(k: int, e: DemoEntry) -> str:
    s = e.sample
    info = TASKS[s.task]
    tags = f'<span class="tag">{html.escape(s.variant)}</span> ' if s.variant else ""
    tags += '<span class="tag">held-out</span>' if s.held_out else ""
    mark = '<span class="ok">pass</span>' if e.passed else '<span class="bad">fail</span>'
    parts = [f'<div class="entry {"pass" if e.passed else "fail"}" id="e{k}">',
             f"<h3>{k + 1}. {html.escape(info.title)} {tags} — {mark}</h3>"]
    checks = iter(e.checks)
    for r, prompt in enumerate(s.prompts):
        parts.append(f'<div class="prompt">&#128100; {_prompt_html(prompt, s, e.files)}</div>')
        if r >= len(e.texts):
            continue
        outs = " ".join(_media_tag(m, f) for m, f in e.outputs[r])
        parts.append(f'<div class="answer">&#129302; <code>{html.escape(e.texts[r]) or "(no text)"}</code> {outs}</div><ul>')
        for _ in range(s.rounds[r]):
            c = next(checks, None)
            if c is None:
                break
            verdict = '<span class="ok">&#10003;</span>' if c.passed else '<span class="bad">&#10007;</span>'
            got = html.escape(c.got) if c.got else f"<i>{html.escape(c.reason or 'nothing readable')}</i>"
            parts.append(f"<li>{verdict} {c.modality}: expected <b>{html.escape(c.expected)}</b>, read {got}</li>")
        parts.append("</ul>")
    if e.error:
        parts.append(f'<p class="bad">error: {html.escape(e.error)}</p>')
    parts.append(f"<small>{e.seconds:.2f} s</small></div>")
    return "\n".join(parts)


def _page(result: DemoResult) -> str:
    body = "\n".join(_entry_html(k, e) for k, e in enumerate(result.entries))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>codi2 demo</title><style>{_CSS}</style></head>
<body>
<h1>codi2 demo — the toy CoDi-2 on the shapes &amp; tones world</h1>
<p>{result.passed} of {result.total} prompts pass ({result.seconds:.1f} s). Inputs are fresh world items;
each output is read by the deterministic analysers (nearest palette colour, shape templates,
spectral peak, odd harmonics, band energy). Held-out prompts ask for combinations that no
training answer contained.</p>
{body}
</body></html>
"""


__all__ = ["DEMO_PLAN", "DemoEntry", "DemoResult", "run_demo"]
