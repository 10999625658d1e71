"""`codi2 eval` tasks end to end on tiny feature networks and a stand-in model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from codi2.core.types import Media
from codi2.errors import DatasetError, MediaDecodeError, MediaError
from codi2.evaluation import report, tasks
from codi2.evaluation.commands import run_eval
from codi2.registry import Registry, hookimpl

SR = 16000


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    from codi2.evaluation.testing import save_tiny_clip, save_tiny_cnn14, save_tiny_dino

    root = tmp_path_factory.mktemp("nets")
    return {"dino": str(save_tiny_dino(root / "dino")), "clip": str(save_tiny_clip(root / "clip")),
            "cnn14": str(save_tiny_cnn14(root / "cnn14.safetensors"))}


@pytest.fixture()
def registry():
    from codi2.evaluation import plugin

    r = Registry()
    r.register_plugin(plugin, "metrics")
    return r


def options(nets):
    clip = {"model": nets["clip"], "device": "cpu"}
    cnn = {"classifier_options": {"checkpoint": nets["cnn14"], "device": "cpu"}}
    return {"dino": {"model": nets["dino"], "device": "cpu"}, "clip-i": clip, "clip-t": clip,
            "clipsim": clip, "kl": cnn, "fd": cnn}


def write_image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(path)
    return path


def write_audio(path, freq, seconds=1.0, noise=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    x = 0.5 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(freq).standard_normal(t.size)
    sf.write(path, x.astype(np.float32), SR)
    return path


def cli(argv):
    from codi2.cli import build_parser  # the real command line, global options included

    return build_parser().parse_args(argv)


# --- score: finished outputs, no model ------------------------------------------------------


def test_score_images_from_the_command_line(nets, tmp_path, capsys):
    data = tmp_path / "data"
    for name, seed in (("a", 1), ("b", 2)):
        write_image(data / "generated" / f"{name}.png", seed)
    write_image(data / "references" / "a.jpg", 1)  # JPEG of the same pixels: close, not equal
    write_image(data / "references" / "b.png", 2)
    (data / "texts.json").write_text(json.dumps({"a.png": "a red cube", "b": "a dog in the snow"}))
    args = cli(["eval", "score", "--data", str(data), "--dino", nets["dino"], "--clip", nets["clip"],
                "--device", "cpu", "--metrics", "dino,clip-i,clip-t", "--out", str(tmp_path / "out"),
                "--json", "--name", "tiny"])
    assert run_eval(args) == 0
    out = json.loads(capsys.readouterr().out)
    scores = out["results"][0]["scores"]["all"]
    assert set(scores) == {"dino", "clip-i", "clip-t"}
    items = {(r["item"], r["metric"]): r["value"] for r in out["results"][0]["items"]}
    assert items[("b", "dino")] == pytest.approx(1.0) and items[("b", "clip-i")] == pytest.approx(1.0)
    assert 0.8 < items[("a", "dino")] <= 1.0 + 1e-6
    with Image.open(out["files"]["chart"]) as chart:
        chart.verify()
    assert (tmp_path / "out" / "results.csv").read_text().startswith("run,task,group,metric")


def test_score_audio_with_the_classifier_metrics(nets, tmp_path, registry):
    for name, freq in (("x", 440), ("y", 880), ("z", 300)):
        write_audio(tmp_path / "gen" / f"{name}.wav", freq, noise=0.01)
        write_audio(tmp_path / "ref" / f"{name}.wav", freq if name != "z" else 500, noise=0.01)
    result = tasks.score_folders(tmp_path / "gen", tmp_path / "ref", registry=registry,
                                 metric_options=options(nets))
    assert set(result.scores["all"]) == {"lsd", "kl", "fd"} and result.counts["all"] == 3
    lsd = {r["item"]: r["value"] for r in result.items if r["metric"] == "lsd"}
    assert lsd["x"] < 1e-6 and lsd["z"] > 0.1
    assert result.scores["all"]["fd"] > 0 and result.higher_is_better["kl"] is False


def test_score_names_unpaired_duplicate_and_broken_files(tmp_path, registry):
    write_image(tmp_path / "g" / "a.png", 1)
    write_image(tmp_path / "g" / "extra.png", 2)
    write_image(tmp_path / "r" / "a.png", 1)
    write_image(tmp_path / "r" / "lonely.png", 3)
    with pytest.raises(DatasetError, match=r"unpaired.*extra\.png.*lonely\.png"):
        tasks.score_folders(tmp_path / "g", tmp_path / "r", registry=registry)
    (tmp_path / "g" / "extra.png").unlink()
    (tmp_path / "r" / "lonely.png").unlink()
    write_image(tmp_path / "g" / "a.jpg", 1)
    with pytest.raises(DatasetError, match=r"'a.jpg' and 'a.png' share the name 'a'"):
        tasks.score_folders(tmp_path / "g", tmp_path / "r", registry=registry)
    (tmp_path / "g" / "a.jpg").unlink()
    (tmp_path / "g" / "notes.csv").write_text("x")
    with pytest.raises(DatasetError, match="notes.csv"):
        tasks.score_folders(tmp_path / "g", tmp_path / "r", registry=registry)
    (tmp_path / "g" / "notes.csv").unlink()
    (tmp_path / "g" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(MediaDecodeError, match="a.png"):
        tasks.score_folders(tmp_path / "g", tmp_path / "r", registry=registry, metrics=["lsd"])


# --- defaults come from the metric registrations: a third-party modality gets them too ---------


def _sonar_spec():
    """A modality codi2 has never heard of: 1-D echo profiles in ``.snr`` files (NumPy format)."""
    from codi2.core.modality import ModalitySpec

    def load(source, *, name=None, limits=None, **_):
        with open(source, "rb") as fh:
            return Media("sonar", np.load(fh, allow_pickle=False), name=name)

    return ModalitySpec(name="sonar", load=load, encode=lambda m: m.data.tobytes(), suffixes=(".snr",),
                        mime_type="application/x-sonar", sniff=lambda head: head.startswith(b"\x93NUMPY"))


class SonarMetric:
    """Per item: mean |generated - reference| (needs references) or |mean - text| (needs texts)."""

    modality, higher_is_better, matches, network = "sonar", False, None, None

    def __init__(self, name, needs, modality="sonar"):
        self.name, self.needs, self.modality = name, needs, modality

    def score(self, generated, references=None, texts=None):
        from codi2.evaluation.base import MetricResult, check_items

        check_items(self, generated, references, texts)
        if "texts" in self.needs:
            values = [abs(float(g.data.mean()) - float(t)) for g, t in zip(generated, texts)]
        else:
            values = [float(np.abs(g.data - r.data).mean()) for g, r in zip(generated, references)]
        return MetricResult(float(np.mean(values)), values)


class SonarModality:
    """A third-party plugin registering the modality only."""

    @hookimpl
    def codi2_register_modalities(self, register):
        register("sonar", load=lambda options: _sonar_spec(), description="echo profiles")


class SonarPlugin(SonarModality):
    """A third-party plugin: the modality and its metrics, registered through the public hooks."""

    @hookimpl
    def codi2_register_metrics(self, register):
        pairs, text = ("references",), ("texts",)
        register("sonar-gap", load=lambda o: SonarMetric("sonar-gap", pairs), modality="sonar", needs=pairs,
                 default=True)
        register("sonar-depth", load=lambda o: SonarMetric("sonar-depth", text), modality="sonar", needs=text,
                 default=True)
        register("sonar-peak", load=lambda o: SonarMetric("sonar-peak", pairs), modality="sonar", needs=pairs)
        register("sonar-liar", load=lambda o: SonarMetric("sonar-liar", pairs, modality="audio"),
                 modality="sonar", needs=pairs)


def write_sonar(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.save(fh, np.asarray(values, dtype=np.float32))


def test_a_plugin_modality_gets_score_defaults_from_its_metric_registrations(tmp_path, monkeypatch, capsys):
    import codi2.registry
    from codi2.errors import ComponentLoadError
    from codi2.evaluation.plugin import build_metric, default_metrics

    registry = Registry.create(entry_points=False)
    registry.register_plugin(SonarPlugin(), name="sonar-plugin")
    monkeypatch.setattr(codi2.registry, "default_registry", lambda: registry)  # what `codi2 eval` uses
    # the built-in registrations declare the defaults `score` had always used
    assert default_metrics(registry, "image") == ["clip-i", "dino"]
    assert default_metrics(registry, "image", texts=True) == ["clip-i", "clip-t", "dino"]
    assert default_metrics(registry, "audio") == ["fd", "kl", "lsd"] and default_metrics(registry, "video") == []
    assert default_metrics(registry, "sonar", texts=True) == ["sonar-depth", "sonar-gap"]

    write_sonar(tmp_path / "g" / "a.snr", [1, 2, 3])
    write_sonar(tmp_path / "r" / "a.snr", [1, 2, 5])
    write_sonar(tmp_path / "g" / "b.snr", [0, 0, 0])
    write_sonar(tmp_path / "r" / "b.snr", [0, 0, 0])
    argv = ["eval", "score", "--generated", str(tmp_path / "g"), "--references", str(tmp_path / "r"), "--json"]
    assert run_eval(cli(argv)) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["scores"]["all"] == {"sonar-gap": pytest.approx(1 / 3)}  # (2/3 + 0) / 2; no texts, no depth
    assert result["higher_is_better"] == {"sonar-gap": False}

    (tmp_path / "texts.json").write_text(json.dumps({"a": "2.5", "b": "1"}))
    assert run_eval(cli([*argv, "--texts", str(tmp_path / "texts.json")])) == 0
    scores = json.loads(capsys.readouterr().out)["results"][0]["scores"]["all"]
    assert scores == {"sonar-depth": pytest.approx(0.75), "sonar-gap": pytest.approx(1 / 3)}  # (0.5 + 1) / 2

    with pytest.raises(DatasetError, match="'lsd' scores audio, the folders hold sonar"):
        run_eval(cli([*argv, "--metrics", "lsd"]))
    with pytest.raises(ComponentLoadError, match="sonar-liar.*registered with modality='sonar'.*'audio'"):
        build_metric(registry, "sonar-liar")
    bare = Registry.create(entry_points=False)  # the modality without metrics: no defaults
    bare.register_plugin(SonarModality(), name="sonar-modality")
    with pytest.raises(DatasetError, match="no metric is registered as a default for sonar"):
        tasks.score_folders(tmp_path / "g", tmp_path / "r", registry=bare)


# --- generation tasks with a stand-in model ---------------------------------------------------


@dataclass
class Reply:
    parts: list = field(default_factory=list)

    @property
    def media(self):
        return [p for p in self.parts if isinstance(p, Media)]

    @property
    def text(self):
        return "".join(p for p in self.parts if isinstance(p, str))


class EchoModel:
    """Answers with its first input item (images get seed-dependent noise); records the calls."""

    def __init__(self, answer_media=True):
        self.calls = []
        self.answer_media = answer_media

    def generate(self, messages, seed=0, **options):
        from codi2.core.media import load_media

        self.calls.append((messages, seed, options))
        if not self.answer_media:
            return Reply(["I cannot draw."])
        part = next(p for m in messages for p in m["content"] if p["type"] in ("image", "audio"))
        item = load_media(part["path"], part["type"])
        if item.modality == "image":
            noise = np.random.default_rng(seed).integers(0, 8, item.data.shape)
            item = Media("image", np.clip(item.data.astype(int) + noise, 0, 255).astype(np.uint8))
        return Reply(["here:", item])


def test_dreambench_generates_in_context_and_scores_all_pairs(nets, tmp_path, registry):
    data = tmp_path / "dreambench"
    for subject, seeds in (("dog2", (1, 2)), ("backpack", (3, 4, 5))):
        for k, seed in enumerate(seeds):
            write_image(data / subject / f"{k:02d}.jpg", seed)
    (data / "prompts_and_classes.txt").write_text("Classes\n\nsubject_name,class\nbackpack,backpack\n"
                                                  "dog2,dog\n\nPrompts\n...")
    model = EchoModel()
    result = tasks.dreambench(model, data, tmp_path / "out", registry=registry, metric_options=options(nets),
                              shots=2, samples=2, max_prompts=2, run="echo")
    assert result.counts["all"] == 8 and set(result.scores["all"]) == {"dino", "clip-i", "clip-t"}
    texts = [m[0]["content"][-1]["text"] for m, _, _ in model.calls]
    assert "a backpack in the jungle" in texts and "a dog in the snow" in texts
    assert all(sum(p["type"] == "image" for p in m[0]["content"]) == 2 for m, _, _ in model.calls)
    assert sorted({seed for _, seed, _ in model.calls}) == [0, 1]
    assert len(list((tmp_path / "out" / "image" / "backpack").glob("*.png"))) == 4
    # resume: outputs on disk are reused, the model is not asked again
    again = tasks.dreambench(EchoModel(answer_media=False), data, tmp_path / "out", registry=registry,
                             metric_options=options(nets), shots=2, samples=2, max_prompts=2, resume=True)
    assert again.scores["all"] == pytest.approx(result.scores["all"])
    with pytest.raises(MediaError, match=r"backpack: 'a backpack in the jungle' #0.*cannot draw"):
        tasks.dreambench(EchoModel(answer_media=False), data, tmp_path / "out2", registry=registry,
                         metric_options=options(nets), max_prompts=1, samples=1)


def test_edit_scores_clipsim_and_names_bad_records(nets, tmp_path, registry):
    write_image(tmp_path / "imgs" / "1.png", 1)
    write_image(tmp_path / "imgs" / "2.png", 2)
    lines = [{"id": "e1", "input": "imgs/1.png", "instruction": "make it red", "target_caption": "a red photo"},
             {"id": "e2", "input": "imgs/2.png", "instruction": "add a hat", "target_caption": "a cat in a hat"}]
    (tmp_path / "edits.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    result = tasks.edit(EchoModel(), tmp_path, tmp_path / "out", registry=registry, metric_options=options(nets))
    assert list(result.scores["all"]) == ["clipsim"] and result.counts["all"] == 2
    assert (tmp_path / "out" / "image" / "all" / "e2.png").is_file()
    (tmp_path / "bad.jsonl").write_text(json.dumps(lines[0]) + "\n" + json.dumps({**lines[1], "target_caption": ""}))
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: field 'target_caption'"):
        tasks.edit(EchoModel(), tmp_path / "bad.jsonl", tmp_path / "o", registry=registry)


def test_audio_edit_groups_by_task_in_both_record_forms(nets, tmp_path, registry):
    for k in range(2):
        write_audio(tmp_path / "clips" / f"in{k}.wav", 300 + 100 * k, noise=0.01)
        write_audio(tmp_path / "clips" / f"out{k}.wav", 300 + 100 * k, noise=0.02)
    flat = [{"id": f"a{k}", "input": f"clips/in{k}.wav", "instruction": "add a dog barking",
             "target": f"clips/out{k}.wav"} for k in range(2)]
    (tmp_path / "add.jsonl").write_text("\n".join(json.dumps(x) for x in flat))
    conv = [{"id": k, "meta": {"op": "drop"}, "messages": [
        {"role": "user", "content": [{"type": "audio", "path": f"clips/in{k}.wav"},
                                     {"type": "text", "text": "remove the rain"}]},
        {"role": "assistant", "content": [{"type": "audio", "path": f"clips/out{k}.wav"}]}]} for k in range(2)]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(x) for x in conv))  # audio-mix layout
    result = tasks.audio_edit(EchoModel(), tmp_path, tmp_path / "out", registry=registry,
                              metric_options=options(nets), run="echo")
    assert set(result.scores) == {"add", "drop"} and result.counts == {"add": 2, "drop": 2}
    assert all(set(s) == {"lsd", "kl", "fd"} for s in result.scores.values())
    assert (tmp_path / "out" / "audio" / "drop" / "1.wav").is_file()
    table = report.format_table([result])
    assert "Adding" in table and "Dropping" in table and "LSD↓" in table
    bad = {**conv[0], "messages": conv[0]["messages"][:1]}
    (tmp_path / "replace.jsonl.bad").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"replace\.jsonl\.bad:1: the last message must be the assistant"):
        tasks.audio_edit(EchoModel(), tmp_path / "replace.jsonl.bad", tmp_path / "o", registry=registry)


# --- report -----------------------------------------------------------------------------------


def test_report_table_files_and_chart_compare_runs(tmp_path, capsys):
    def run(name, shift):
        return tasks.EvalResult("audio-edit", name,
                                {g: {"lsd": 1.2 + shift, "kl": 0.9 - shift, "fd": 18.0 + shift}
                                 for g in ("replace", "add", "drop")},
                                {"lsd": False, "kl": False, "fd": False}, {"add": 10})

    results = [run("CoDi-2", 0.0), run("ours", 0.1)]
    results[1].sources = {"fd": {"matches": "audioldm-eval 0.0.3: calculate_fid", "network": "PANNs CNN14 16 kHz"}}
    table = report.format_table(results)
    header, metrics_line = table.splitlines()[:2]
    assert header.index("Adding") < header.index("Dropping") < header.index("Replacement")
    assert metrics_line.split()[:4] == ["Method", "LSD↓", "KL↓", "FD↓"]
    assert "18.00" in table and "1.300" in table
    paths = report.write_outputs(results, tmp_path)
    with Image.open(paths["chart"]) as chart:
        assert chart.size[0] > 300 and chart.format == "PNG"
    assert [r.run for r in report.load_results([paths["json"]])] == ["CoDi-2", "ours"]
    # `codi2 eval report` combines saved results
    assert run_eval(cli(["eval", "report", str(paths["json"]), "--out", str(tmp_path / "cmp")])) == 0
    printed = capsys.readouterr().out
    assert "ours" in printed and (tmp_path / "cmp" / "results.png").is_file()
    # every number states what it matches; runs saved without sources say so
    assert "FD [ours]: audioldm-eval 0.0.3: calculate_fid" in printed and "network: PANNs CNN14 16 kHz" in printed
    assert f"FD [CoDi-2]: {report.NOT_RECORDED}" in printed
    assert "audioldm-eval 0.0.3" in (tmp_path / "cmp" / "results.csv").read_text()
    with pytest.raises(DatasetError, match="nothing.json"):
        report.load_results([tmp_path / "nothing.json"])
