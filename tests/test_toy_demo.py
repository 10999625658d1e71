"""``codi2 demo`` and ``codi2 bench toy`` end to end.

With a tiny untrained CoDi-2 the answers are garbage, but the gallery's files must exist and
open and the bench must report every task. An *oracle* (a stand-in model that solves each
task by reading its inputs with the analysers) checks that scoring, baselines and goals
measure what they claim: it must score 100 % where the copy and no-examples baselines fail.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codi2.core.model import Answer, CoDi2Model
from codi2.core.types import Media
from codi2.testing import tiny_components
from codi2.toy import world as w
from codi2.toy.analysers import analyse
from codi2.toy.bench import format_report, run_bench
from codi2.toy.commands import add_bench_parser, add_demo_parser
from codi2.toy.demo import DEMO_PLAN, run_demo
from codi2.toy.tasks import TASKS
from codi2.toy.world import AudioItem, ImageItem

FAST = {"max_new_tokens": 6, "steps": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return CoDi2Model.from_components(**tiny_components()).eval()


# --- an oracle: solves every toy task symbolically from the analysers' readings -------------------


class Oracle:
    """Answers like a perfect toy model (rain drawn with another seed than the ground truth)."""

    def generate(self, prompt, media=None, **options):
        return self._answer(prompt, dict(media or {}), None)[0]

    def chat(self):
        oracle = self

        class Chat:
            last = None

            def ask(self, prompt, media=None, **options):
                answer, self.last = oracle._answer(prompt, dict(media or {}), self.last)
                return answer

        return Chat()

    def _answer(self, prompt, media, last):
        read = {k: [analyse(Media("image", f)).item for f in v.data] if v.modality == "video" else analyse(v).item
                for k, v in media.items()}
        out: list = []
        if prompt.startswith("Draw a") and "play its sound" in prompt:
            colour, shape = re.search(r"Draw a (\w+) (\w+) and", prompt).groups()
            item = ImageItem(shape, colour, "large")
            out = [item, w.sound_of(item)]
        elif prompt.startswith("Draw a"):
            size, colour, shape = re.search(r"Draw a (\w+) (\w+) (\w+)\.", prompt).groups()
            out = [ImageItem(shape, colour, size)]
        elif prompt.startswith("Play a"):
            wf, pitch, extra = re.search(r"Play a (\w+) tone at (\w+)( with \w+)?\.", prompt).groups()
            out = [AudioItem(pitch, wf, {None: "none", " with rain": "rain", " with bells": "bell"}[extra])]
        elif prompt.startswith("What is in"):
            return Answer([w.caption(read["a"])]), last
        elif prompt.startswith("Make it "):
            out = [last.with_(colour=prompt[8:-1])]
        elif prompt.startswith("Now make it "):
            out = [last.with_(size=prompt[12:-1])]
        elif "sounds like" in prompt and prompt.startswith(("Make {a}", "Turn {a}")):  # audio-conditioned edit
            look = w.look_of(read["b"])
            out = [read["a"].with_(**({"colour": look.colour} if "colour" in prompt else {"shape": look.shape}))]
        elif prompt.startswith("Draw the next frame of {v}"):  # clip -> shape, sound -> colour, image -> size
            nxt = w.next_frame(read["v"][-1], "shape")
            out = [nxt.with_(colour=w.look_of(read["a"]).colour, size=read["b"].size)]
        elif prompt.startswith("Given the transformation") and type(read["a"]) is not type(read["c"]):
            a, b, c = (w.sound_of(read[k]) if isinstance(read[k], ImageItem) else read[k] for k in "abc")
            field = next((f for f in ("pitch", "waveform") if getattr(a, f) != getattr(b, f)), None)
            edited = c.with_(**{field: getattr(b, field)}) if field else c  # compared as sounds
            if isinstance(read["c"], ImageItem):
                look = w.look_of(edited.with_(overlay="none"))
                out = [read["c"].with_(colour=look.colour, shape=look.shape)]
            else:
                out = [read["c"].with_(pitch=edited.pitch, waveform=edited.waveform)]
        elif prompt.startswith("Make {a} "):
            value = prompt[9:-1]
            out = [read["a"].with_(**{"size" if value in w.SIZES else "colour": value})]
        elif prompt.startswith("Turn {a} into a "):
            out = [read["a"].with_(shape=prompt[16:-1])]
        elif prompt.startswith(("Add", "Remove", "Replace")):
            overlay = "none" if prompt.startswith("Remove") else "rain" if "rain to" in prompt else "bell"
            out = [read["a"].with_(overlay=overlay)]
        elif prompt.startswith("Given the transformation"):
            a, b, c = read["a"], read["b"], read["c"]
            field = next((f for f in ("shape", "colour", "size") if getattr(a, f) != getattr(b, f)), None)
            out = [c.with_(**{field: getattr(b, field)}) if field else c]  # an unedited pair: give c back
        elif prompt.startswith("We overlaid"):
            out = [read["c"].with_(overlay=read["b"].overlay)]
        elif prompt.startswith("Apply"):  # no examples: nothing to go on, give c back
            out = [read["c"]]
        elif prompt.startswith("A {a} in the colour"):
            out = [read["a"].with_(colour=read["b"].colour)]
        elif prompt.startswith("What does"):
            out = [w.sound_of(read["a"])]
        elif prompt.startswith("Draw what"):
            out = [w.look_of(read["a"])]
        elif prompt.startswith("Given these frames"):
            frames = read["v"]
            rule = "colour" if frames[0].colour != frames[1].colour else "shape"
            nxt = w.next_frame(frames[-1], rule)
            out = [nxt, w.sound_of(nxt)]
        parts: list = []
        for k, item in enumerate(out):
            parts += ["Here it is: " if k == 0 else " and its sound: ", w.to_media(item, seed=12345)]
        images = [i for i in out if isinstance(i, ImageItem)]
        return Answer(parts), (images[-1] if images else last)


# --- tests ------------------------------------------------------------------------------------------


def _referenced_files(index: Path) -> list[str]:
    return re.findall(r'src="([^"]+)"', index.read_text(encoding="utf-8"))


def test_demo_gallery_with_a_tiny_model(tiny_model, tmp_path):
    logged = []
    result = run_demo(tiny_model, tmp_path / "gallery", seed=1, options=FAST, log=logged.append)
    assert result.index.is_file() and result.total == len(DEMO_PLAN)
    assert {e.sample.task for e in result.entries} == set(TASKS)  # every task is shown
    assert "prompts pass" in logged[0] and str(result.index) in logged[0]
    referenced = _referenced_files(result.index)
    files = [f for f in referenced if not f.endswith(".spec.png")]
    inputs = sum(len(e.sample.media) for e in result.entries)
    outputs = sum(len(f) for e in result.entries for f in e.outputs)
    assert len(files) == inputs + outputs and inputs >= 20
    # every sound has its spectrogram picture beside its player, and nothing else has one
    sounds = [f for f in files if f.endswith(".wav")]
    assert sounds and sorted(f for f in referenced if f.endswith(".spec.png")) == sorted(f[:-4] + ".spec.png" for f in sounds)
    with Image.open(result.out_dir / (sounds[0][:-4] + ".spec.png")) as picture:
        assert picture.size == (160, 64) and len(picture.convert("RGB").getcolors(160 * 64)) > 8
    for name in files:
        path = result.out_dir / name
        assert path.is_file(), name
        if path.suffix in (".png", ".gif"):
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".wav":
            data, rate = sf.read(path)
            assert rate == 16000 and len(data) > 0
        else:
            raise AssertionError(f"unexpected file type {name}")
    html = result.index.read_text(encoding="utf-8")
    assert "image-rendering: pixelated" in html and "<audio controls" in html
    for info in TASKS.values():
        assert info.title.replace(">", "&gt;") in html


def test_demo_with_the_oracle_passes_everything(tmp_path):
    result = run_demo(Oracle(), tmp_path, seed=2, log=lambda s: None)
    failed = [(e.sample.task, [(c.expected, c.got, c.reason) for c in e.checks if not c.passed]) for e in result.entries if not e.passed]
    assert not failed
    assert result.passed == result.total
    assert "held-out" in result.index.read_text(encoding="utf-8")


def test_bench_with_a_tiny_model_reports_every_task(tiny_model):
    report = run_bench(tiny_model, n=1, seed=0, options=FAST)
    json.dumps(report)  # JSON-able
    assert set(report["tasks"]) == set(TASKS)
    for name, info in TASKS.items():
        groups = report["tasks"][name]
        assert "accuracy" in groups["seen"] and "copy_input" in groups["seen"]
        assert ("held_out" in groups) == info.can_hold_out
        for group in ("seen", "held_out"):
            if group in groups:
                assert set(groups[group]["ci95"]) >= {"accuracy", "copy_input", "copy_any"}
                assert ("mismatched" in groups[group] and "no_examples" in groups[group]) == info.exemplar
    assert set(report["goals"]) == {"exemplar_held_out_accuracy", "audio_edit_lsd_ratio", "foreign_every_task_accuracy"}
    assert report["goals"]["foreign_every_task_accuracy"]["met"] is None  # world inputs only: not measured
    assert "goals:" in format_report(report)


def test_bench_measures_what_it_claims():
    report = run_bench(Oracle(), n=3, seed=5)
    for name, groups in report["tasks"].items():
        for group in ("seen", "held_out"):
            if group in groups:
                assert groups[group]["accuracy"] == 1.0, (name, group)
    # copying the input never solves a task here (every answer differs from its input), nor does
    # copying any input (no task's answer is one of its inputs)
    assert all(g["copy_input"] == 0.0 and g["copy_any"] == 0.0 for t in report["tasks"].values() for k, g in t.items() if k != "title")
    # the oracle reads the pair: an unedited pair gives c back, a mismatched pair another edit
    ex = report["exemplar_held_out"]
    assert (ex["accuracy"], ex["no_examples"], ex["mismatched"], ex["copy_any"], ex["n"]) == (1.0, 0.0, 0.0, 0.0, 12)
    assert ex["ci95"]["accuracy"][1] == 1.0 and 0.7 < ex["ci95"]["accuracy"][0] < 0.8  # Wilson, 12 of 12 (4 exemplar tasks)
    for name in ("image_exemplar", "audio_exemplar", "exemplar_image_to_audio", "exemplar_audio_to_image"):
        assert report["tasks"][name]["held_out"]["follows_pair"] == 1.0
    goals = report["goals"]
    assert goals["exemplar_held_out_accuracy"] == {"goal": ">= 0.90", "measured": 1.0, "met": True}
    assert goals["audio_edit_lsd_ratio"]["met"] is True and goals["audio_edit_lsd_ratio"]["measured"] < 0.5
    assert report["audio_edit_lsd"]["n"] == 3 * 2 * 2


def test_commands_run_on_a_saved_model(tiny_model, tmp_path, capsys):
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_demo_parser(sub)
    add_bench_parser(sub)
    assert parser.parse_args(["demo"]).model == "toy" and parser.parse_args(["demo"]).out == "codi2-demo"

    args = parser.parse_args(["demo", "--out", str(tmp_path / "g"), "--model", str(model_dir), "--steps", "2", "--max-new-tokens", "4"])
    assert args.run(args) == 0
    assert (tmp_path / "g" / "index.html").is_file() and "codi2 demo:" in capsys.readouterr().out

    args = parser.parse_args(["bench", "toy", "--json", "--n", "1", "--task", "composition", "--task", "audio_edit",
                              "--model", str(model_dir), "--steps", "2", "--max-new-tokens", "4"])
    assert args.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["tasks"]) == {"composition", "audio_edit"} and report["model"] == str(model_dir)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "toy", "--n", "0"])
    args = parser.parse_args(["bench", "toy", "--seeds", "0,1,2", "--inputs", "foreign"])
    assert (args.seeds, args.inputs) == ([0, 1, 2], "foreign") and parser.parse_args(["bench", "toy"]).inputs == "world"
    for bad in (["--seeds", "0,x"], ["--seeds", ","], ["--inputs", "paint"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "toy", *bad])


def test_commands_import_no_torch():
    import subprocess
    import sys

    code = "import sys, codi2.toy.commands; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_oracle_is_honest():
    """The oracle only sees what a model sees (prompt and media): a wrong input gives a wrong answer."""
    answer = Oracle().generate("Make {a} green.", media={"a": w.to_media(ImageItem("circle", "red", "small"))})
    assert analyse(answer.media[0]).item == ImageItem("circle", "green", "small")
    assert np.asarray(answer.media[0].data).shape == (32, 32, 3)


class NoVideoOracle(Oracle):
    """An oracle that cannot read video, the way a model without a video encoder fails."""

    def _answer(self, prompt, media, last):
        from codi2.errors import UnknownModalityError

        if any(m.modality == "video" for m in media.values()):
            raise UnknownModalityError("no encoder for video input; this model reads audio, image")
        return super()._answer(prompt, media, last)


def test_a_task_the_model_cannot_do_fails_visibly(tmp_path):
    result = run_demo(NoVideoOracle(), tmp_path, seed=0, log=lambda s: None)
    failed = [e for e in result.entries if not e.passed]
    assert [e.sample.task for e in failed] == ["video_next", "interleaved"] and "no encoder for video" in failed[0].error
    assert "no encoder for video" in result.index.read_text(encoding="utf-8")
    report = run_bench(NoVideoOracle(), n=1, seed=0, tasks=["video_next", "composition"])
    assert report["tasks"]["video_next"]["seen"]["accuracy"] == 0.0
    assert report["tasks"]["video_next"]["seen"]["errors"] == 1 and "video" in report["tasks"]["video_next"]["seen"]["first_error"]
    assert report["tasks"]["composition"]["seen"] == {**report["tasks"]["composition"]["seen"], "accuracy": 1.0, "errors": 0}


def test_spectrogram_draws_a_tone_at_its_pitch():
    from codi2.core.media.spectrogram import spectrogram

    rate, height = 16000, 64
    t = np.arange(rate) / rate
    for freq in (200.0, 1000.0, 4000.0):
        picture = spectrogram(0.5 * np.sin(2 * np.pi * freq * t), rate, width=40, height=height)
        assert picture.shape == (height, 40, 3) and picture.dtype == np.uint8
        brightest = int(picture.astype(int).sum(axis=(1, 2)).argmax())
        expected = (height - 1) - (np.log(freq) - np.log(50)) / (np.log(rate / 2) - np.log(50)) * (height - 1)
        assert abs(brightest - expected) <= 1.5, (freq, brightest, expected)
