"""The paper's data builders on small generated inputs: exact samples, arithmetic, determinism, errors."""

import argparse
import base64
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from codi2.errors import DatasetError
from codi2.training.builders import BUILDERS, build_dataset
from codi2.training.builders.audio_mix import rms
from codi2.training.builders.text_repurpose import choose_phrases
from codi2.training.commands import add_data_parser
from codi2.training.data import ConversationDataset, validate_files


def png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def wav(path: Path, freq: float, seconds: float = 0.5, rate: int = 16000, amp: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="FLOAT")
    return path


def records(report):
    return [json.loads(line) for line in report.data_file.read_text().splitlines()]


def texts(parts):
    return [p["text"] if p["type"] == "text" else f"<{p['type']}:{Path(p['path']).name}>" for p in parts]


# --- incontext-edit ----------------------------------------------------------------------------------------


def instructpix2pix(root: Path) -> Path:
    for folder, instruction, names in (("0001", "make it blue", ["s1", "s2"]), ("0002", "Make it  BLUE", ["s3"]), ("0003", "add snow", ["s4"])):
        (root / folder).mkdir(parents=True)
        (root / folder / "prompt.json").write_text(json.dumps({"input": "a house", "edit": instruction, "output": "a blue house"}))
        for i, name in enumerate(names):
            png(root / folder / f"{name}_0.png", 10 * i)
            png(root / folder / f"{name}_1.png", 10 * i + 5)
    return root


def test_incontext_edit_pairs_edits_that_share_an_instruction(tmp_path):
    source = instructpix2pix(tmp_path / "ip2p")
    report = build_dataset("incontext-edit", {"input": str(source), "out": str(tmp_path / "out")})
    rows = records(report)
    assert report.samples == 6, "3 edits share 'make it blue' (case and spaces folded): 3 x 2 ordered pairs"
    assert "1 instruction(s) with a single edit were not used" in report.notes[0]
    first = rows[0]
    user, answer = first["messages"][0]["content"], first["messages"][1]["content"]
    shown = texts(user)
    assert shown[0] == "Given the transformation between " and shown[2] == " and " and shown[4] == ", apply the same editing to " and shown[6] == "."
    a, a_edited, b = shown[1], shown[3], shown[5]
    assert a.endswith("_0.png>") and a_edited == a.replace("_0", "_1") and b.endswith("_0.png>") and b != a
    (target,) = answer
    assert target["type"] == "image" and Path(target["path"]).name == b[len("<image:"):-1].replace("_0", "_1")
    assert (report.data_file.parent / target["path"]).is_file(), "media are referenced relative to the JSONL"
    assert validate_files(report.data_file).ok
    again = build_dataset("incontext-edit", {"input": str(source), "out": str(tmp_path / "again")})
    assert again.data_file.read_text() == report.data_file.read_text(), "same seed, same file"
    other = build_dataset("incontext-edit", {"input": str(source), "out": str(tmp_path / "other"), "seed": 1, "max_per_group": 2})
    assert other.samples == 2


def test_incontext_edit_from_an_audio_manifest_and_its_errors(tmp_path):
    for name, f in (("a", 300), ("a2", 600), ("b", 400), ("b2", 800)):
        wav(tmp_path / f"{name}.wav", f)
    rows = [{"input": "a.wav", "instruction": "double the pitch", "edited": "a2.wav"},
            {"input": "b.wav", "instruction": "double the pitch", "edited": "b2.wav"}]
    (tmp_path / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_dataset("incontext-edit", {"input": str(tmp_path / "edits.jsonl"), "out": str(tmp_path / "out"), "media": "copy"})
    assert report.samples == 2 and report.media_written == 4
    assert all(p["type"] == "audio" for r in records(report) for m in r["messages"] for p in m["content"] if p["type"] != "text")
    assert validate_files(report.data_file, decode=True).ok

    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps({"input": "a.wav", "instruction": "x"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: missing column 'edited' \(columns: input, instruction\)"):
        build_dataset("incontext-edit", {"input": str(tmp_path / "bad.jsonl"), "out": str(tmp_path / "o")})
    (tmp_path / "gone.jsonl").write_text(json.dumps({**rows[0], "edited": "nope.wav"}) + "\n")
    with pytest.raises(DatasetError, match=r"gone.jsonl:1: edited file not found: 'nope.wav'"):
        build_dataset("incontext-edit", {"input": str(tmp_path / "gone.jsonl"), "out": str(tmp_path / "o")})
    with pytest.raises(DatasetError, match=r"template .* unknown placeholder \{c\}"):
        build_dataset("incontext-edit", {"input": str(tmp_path / "edits.jsonl"), "out": str(tmp_path / "o"), "template": "{a} {a_edited} {b} {c}"})


# --- audio-mix ---------------------------------------------------------------------------------------------


def read(report, rel):
    data, rate = sf.read(str(report.data_file.parent / rel), dtype="float64")
    return data, rate


def test_audio_mix_overlays_at_the_requested_snr_with_loudness_normalisation(tmp_path):
    clips = tmp_path / "clips"
    wav(clips / "dog.wav", 440, 0.5)
    wav(clips / "rain.wav", 1000, 0.2, rate=22050, amp=0.05)  # other rate, shorter (looped), quieter
    wav(clips / "car.wav", 150, 0.6)
    (tmp_path / "captions.csv").write_text("path,caption\nclips/rain.wav,rain falling\nclips/car.wav,a passing car\n")
    options = {"input": str(clips), "out": str(tmp_path / "out"), "captions": str(tmp_path / "captions.csv"), "count": 24,
               "snr_db": 6.0, "subtype": "FLOAT", "target_rms_db": -20.0}
    report = build_dataset("audio-mix", options)
    rows = records(report)
    assert {r["meta"]["op"] for r in rows} == {"add", "drop", "replace"}
    checked = {"add": 0, "drop": 0, "replace": 0}
    for row in rows:
        meta = row["meta"]
        user = row["messages"][0]["content"]
        source = next(p for p in user if p["type"] == "audio" and p["path"].endswith("-input.wav"))
        (target,) = row["messages"][1]["content"]
        x, rate = read(report, source["path"])
        y, _ = read(report, target["path"])
        assert rate == 16000 and len(x) == len(y)
        scale, gain = meta["scale"], meta["gain"]
        assert gain == pytest.approx(10 ** (-6 / 20)), "both clips are at the same RMS, so the gain is the SNR alone"
        a, a_rate = sf.read(str(report.data_file.parent / meta["a"]), dtype="float64")
        if a_rate == 16000:  # recompute the normalised clip a and check the arithmetic exactly
            a_n = a * (0.1 / rms(a))  # -20 dBFS
            mixed = {"add": [y], "drop": [x], "replace": [x, y]}[meta["op"]]
            clean = {"add": [x], "drop": [y], "replace": []}[meta["op"]]
            for signal in clean:
                np.testing.assert_allclose(signal, scale * a_n, atol=1e-5)
            for signal in mixed:
                assert 20 * np.log10(rms(a_n) / rms(signal / scale - a_n)) == pytest.approx(6.0, abs=1e-3)
            checked[meta["op"]] += 1
        shown = "".join(texts(user))
        caption_b = {"clips/rain.wav": "rain falling", "clips/car.wav": "a passing car"}.get(meta["b"].removeprefix("../"))
        if meta["op"] == "add" and caption_b:
            assert shown == f"Add the sound of {caption_b} to <audio:{Path(source['path']).name}>."
        if meta["op"] == "drop" and caption_b is None:  # no caption: the clip itself is shown
            assert shown.startswith("Remove <audio:") and shown.endswith(f" from <audio:{Path(source['path']).name}>.")
    assert min(checked.values()) >= 1, checked
    assert validate_files(report.data_file, decode=True).ok


def test_audio_mix_keeps_input_and_target_consistent_when_it_must_scale_down(tmp_path):
    clips = tmp_path / "clips"
    wav(clips / "a.wav", 440, 0.3)
    wav(clips / "b.wav", 97, 0.3)
    options = {"input": str(clips), "out": str(tmp_path / "out"), "count": 4, "ops": ["add"], "snr_db": -12.0,
               "target_rms_db": -3.0, "subtype": "FLOAT"}
    report = build_dataset("audio-mix", options)
    for row in records(report):
        x, _ = read(report, row["messages"][0]["content"][-2]["path"])
        y, _ = read(report, row["messages"][1]["content"][0]["path"])
        assert row["meta"]["scale"] < 1 and np.abs(y).max() == pytest.approx(0.99, abs=1e-6)
        assert 20 * np.log10(rms(x) / rms(y - x)) == pytest.approx(-12.0, abs=1e-3)
    with pytest.raises(DatasetError, match="found 2 audio clip"):
        build_dataset("audio-mix", {**options, "ops": ["replace"]})
    wav(clips / "silent.wav", 440, 0.3, amp=0.0)
    with pytest.raises(DatasetError, match="silent.wav: the clip is silent"):
        build_dataset("audio-mix", {**options, "count": 30})


# --- text-repurpose -----------------------------------------------------------------------------------------


def test_text_repurpose_replaces_random_phrases_with_feature_parts(tmp_path):
    alpaca = [{"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
              {"instruction": "Translate the sentence into French:", "input": "The red fox jumps.", "output": "Le renard roux saute."},
              {"instruction": "Hi", "input": "", "output": "Hello!"}]
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca))
    report = build_dataset("text-repurpose", {"input": str(tmp_path / "alpaca.json"), "out": str(tmp_path / "out"), "seed": 5})
    rows = records(report)
    assert len(rows) == 3
    for row, source in zip(rows, alpaca):
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        prompt = source["instruction"] + (f"\n\n{source['input']}" if source["input"] else "")
        assert "".join(p["text"] for p in user) == prompt, "the parts spell the original prompt"
        encoded = [p["text"] for p in user if p.get("encode")]
        assert encoded == row["meta"]["replaced"] and 1 <= len(encoded) <= 2
        for phrase in encoded:
            assert phrase == phrase.strip(" .,:!") and 1 <= len(phrase.split()) <= 3
        assert answer == source["output"]
    again = build_dataset("text-repurpose", {"input": str(tmp_path / "alpaca.json"), "out": str(tmp_path / "again"), "seed": 5})
    assert again.data_file.read_text() == report.data_file.read_text()
    assert validate_files(report.data_file).media["text in"] >= 3

    import random

    sentence = "one two, three four five six seven eight."
    spans = choose_phrases(sentence, random.Random(0), max_phrases=3, min_words=2, max_words=2)
    assert spans and all(len(sentence[a:b].split()) == 2 and sentence[b - 1].isalpha() for a, b in spans)
    assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(spans)), "phrases never overlap"

    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "z"}]))
    with pytest.raises(DatasetError, match=r"bad.json:item 1: missing column 'output'"):
        build_dataset("text-repurpose", {"input": str(tmp_path / "bad.json"), "out": str(tmp_path / "o")})


def test_text_repurposed_samples_feed_a_model_with_a_text_encoder(tmp_path):
    from codi2.core.model import CoDi2Model
    from codi2.testing import tiny_components

    (tmp_path / "alpaca.jsonl").write_text(json.dumps({"instruction": "Name a red fruit.", "output": "Apple."}) + "\n")
    report = build_dataset("text-repurpose", {"input": str(tmp_path / "alpaca.jsonl"), "out": str(tmp_path / "out")})
    model = CoDi2Model.from_components(**tiny_components())
    batch = model.collate([ConversationDataset(report.data_file)[0].messages])
    assert len(batch.inputs["text"]) == len(records(report)[0]["meta"]["replaced"])


# --- composition, paired, mimic-it ----------------------------------------------------------------------------


def test_composition_places_entity_crops_in_the_caption(tmp_path):
    png(tmp_path / "dog.png", 1), png(tmp_path / "sofa.png", 2), png(tmp_path / "scene.png", 3)
    rows = [{"caption": "a {e0} on a {e1}", "entities": ["dog.png", "sofa.png"], "target": "scene.png"},
            {"caption": "A dog on a sofa", "entities": [{"path": "sofa.png", "phrase": "sofa"}, {"path": "dog.png", "phrase": "dog"}], "target": "scene.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build_dataset("composition", {"input": str(tmp_path / "m.jsonl"), "out": str(tmp_path / "out"), "prefix": "Generate: "})
    got = sorted((texts(r["messages"][0]["content"]), texts(r["messages"][1]["content"])) for r in records(report))
    assert got == sorted([
        (["Generate: ", "a ", "<image:dog.png>", " on a ", "<image:sofa.png>"], ["<image:scene.png>"]),
        (["Generate: ", "A dog ", "<image:dog.png>", " on a sofa ", "<image:sofa.png>"], ["<image:scene.png>"]),
    ])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"caption": "a cat", "entities": [{"path": "dog.png", "phrase": "dog"}], "target": "scene.png"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: entity 0's phrase 'dog' does not occur in the caption 'a cat'"):
        build_dataset("composition", {"input": str(tmp_path / "bad.jsonl"), "out": str(tmp_path / "o")})


def test_paired_makes_captioning_and_generation_samples(tmp_path):
    png(tmp_path / "media" / "cat.png", 9)
    wav(tmp_path / "media" / "bark.wav", 500)
    (tmp_path / "pairs.csv").write_text("file,text\nmedia/cat.png,a cat\nmedia/bark.wav,a dog barking\n")
    options = {"input": str(tmp_path / "pairs.csv"), "out": str(tmp_path / "out"), "path_column": "file", "caption_column": "text"}
    rows = records(build_dataset("paired", options))
    assert len(rows) == 4
    captioning = [r for r in rows if r["meta"]["direction"] == "caption"]
    generation = [r for r in rows if r["meta"]["direction"] == "generate"]
    assert sorted(r["messages"][1]["content"] for r in captioning) == ["a cat", "a dog barking"]
    for row in captioning:
        assert row["messages"][0]["content"][0]["type"] in ("image", "audio")
    for row in generation:
        (media,) = row["messages"][1]["content"]
        caption = {"image": "a cat", "audio": "a dog barking"}[media["type"]]
        assert caption in "".join(texts(row["messages"][0]["content"]))
    with pytest.raises(DatasetError, match=r"pairs.csv:row 2: missing column 'path' \(columns: file, text\)"):
        build_dataset("paired", {"input": str(tmp_path / "pairs.csv"), "out": str(tmp_path / "o")})


def test_mimic_it_decodes_images_and_adds_in_context_turns(tmp_path):
    def b64(value):
        buffer = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    (tmp_path / "LA.json").write_text(json.dumps({"LA_IMG_1": b64(1), "LA_IMG_2": b64(2)}))
    data = {"LA_INS_0": {"instruction": "What is here?", "answer": "A wall.", "image_ids": ["LA_IMG_1"], "rel_ins_ids": ["LA_INS_1"]},
            "LA_INS_1": {"instruction": "And here?", "answer": "A door.", "image_ids": ["LA_IMG_2"], "rel_ins_ids": []}}
    (tmp_path / "LA_instructions.json").write_text(json.dumps({"meta": {}, "data": data}))
    options = {"input": str(tmp_path / "LA_instructions.json"), "images": str(tmp_path / "LA.json"), "out": str(tmp_path / "out"), "in_context": 1}
    report = build_dataset("mimic-it", options)
    rows = {r["meta"]["instruction_id"]: r for r in records(report)}
    first = rows["LA_INS_0"]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant"]
    assert first[1] == {"role": "assistant", "content": "A door.", "target": False}
    assert texts(first[2]["content"]) == ["<image:LA_IMG_1.png>", "\nWhat is here?"] and first[3]["content"] == "A wall."
    assert report.media_written == 2 and validate_files(report.data_file, decode=True).ok
    data["LA_INS_1"]["image_ids"] = ["LA_IMG_9"]
    (tmp_path / "LA_instructions.json").write_text(json.dumps({"data": data}))
    with pytest.raises(DatasetError, match=r"LA_instructions.json: LA_INS_1: image 'LA_IMG_9' is not in"):
        build_dataset("mimic-it", options)


def test_codi2_data_build_and_the_builder_registry(tmp_path, capsys):
    from codi2.registry import Registry
    from codi2.training import builders

    registry = Registry(strict=True)
    registry.register_plugin(builders, name="codi2.training.builders")
    assert registry.names("dataset") == sorted(BUILDERS)
    instructpix2pix(tmp_path / "ip2p")
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "build", "incontext-edit", "--input", str(tmp_path / "ip2p"), "--out", str(tmp_path / "out"),
                              "--set", "max_per_group=1", "--limit", "1"])
    assert args.run(args) == 0
    assert "incontext-edit: wrote 1 sample(s)" in capsys.readouterr().out
    args = parser.parse_args(["data", "builders"])
    assert args.run(args) == 0
    assert "audio-mix" in capsys.readouterr().out
