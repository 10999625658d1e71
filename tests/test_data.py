"""The JSONL dataset format: path resolution, validation with file:line:field, skip policy, CLI."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codi2.errors import DatasetError
from codi2.training.commands import add_data_parser
from codi2.training.data import ConversationDataset, validate_files


def good(path="media/a.png", **extra):
    return {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image", "path": path}]},
        {"role": "assistant", "content": "A square."},
    ], **extra}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "media").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "media" / "a.png")
    (tmp_path / "media" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return tmp_path


def write(path: Path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_paths_are_resolved_against_the_jsonl_and_absolute_paths_are_kept(folder):
    elsewhere = folder / "sub"
    elsewhere.mkdir()
    absolute = str((folder / "media" / "a.png").resolve())
    data = write(elsewhere / "train.jsonl", [good("../media/a.png", id="x"), "", good(absolute, meta={"src": 1})])
    dataset = ConversationDataset(data)
    assert len(dataset) == 2 and not dataset.skipped
    first = dataset[0]
    assert first.messages[0]["content"][1]["path"] == str(folder / "media" / "a.png")
    assert first.id == "x" and first.line == 1 and dataset[1].line == 3 and dataset[1].meta == {"src": 1}
    assert dataset[1].messages[0]["content"][1]["path"] == absolute


def test_every_problem_is_named_with_file_line_and_field(folder):
    bad_part = good()
    bad_part["messages"][0]["content"][1] = {"type": "imgae", "path": "media/a.png"}
    no_target = {"messages": [{"role": "user", "content": "hi"}]}
    system_media = {"messages": [{"role": "system", "content": [{"type": "image", "path": "media/a.png"}]}, {"role": "assistant", "content": "x"}]}
    data = write(folder / "train.jsonl", [
        good(),                                  # 1 fine
        '{"messages": [',                        # 2 bad JSON
        {"id": 3},                               # 3 no messages
        bad_part,                                # 4 unknown part type
        good("media/missing.png"),               # 5 missing media file
        good(extra_key=1),                       # 6 unknown key
        no_target,                               # 7 nothing to learn
        system_media,                            # 8 caught by the message checks of codi2.core
        {"messages": [{"role": "bot", "content": "x"}]},  # 9 bad role
    ])
    report = validate_files(data)
    assert report.samples == 1 and report.media["image in"] == 1
    text = [str(p) for p in report.problems]
    name = str(data)
    assert text[0] == f"{name}:2: invalid JSON at column 15: Expecting value"
    assert text[1] == f"{name}:3: messages: missing"
    assert text[2] == f"{name}:4: messages[0].content[1].type: unknown part type 'imgae'; known: text, image, audio, video, depth, thermal, imu"
    assert text[3].startswith(f"{name}:5: messages[0].content[1].path: media file not found: 'media/missing.png' (looked at ")
    assert text[4] == f"{name}:6: extra_key: unknown key (known: id, messages, meta)"
    assert text[5] == f"{name}:7: messages: no assistant message to learn from (every training sample needs a target turn)"
    assert text[6] == f"{name}:8: messages: message 0: system messages hold text only"
    assert text[7] == f"{name}:9: messages[0].role: must be one of system, user, assistant, got 'bot'"
    assert len(text) == 8


def test_raise_lists_the_lines_and_skip_counts_and_reports_them(folder):
    data = write(folder / "train.jsonl", [good(), "not json", good("media/missing.png"), good()])
    with pytest.raises(DatasetError, match=r"invalid training data: 2 problem\(s\) .*\n.*train.jsonl:2: invalid JSON.*\n.*train.jsonl:3: messages\[0\]"):
        ConversationDataset(data)
    dataset = ConversationDataset(data, on_error="skip")
    assert [s.line for s in dataset.samples] == [1, 4]
    assert dataset.skipped_lines() == 2 and [p.line for p in dataset.skipped] == [2, 3]
    with pytest.raises(DatasetError, match="no valid samples"):
        ConversationDataset(write(folder / "bad.jsonl", ["{"]), on_error="skip")
    with pytest.raises(DatasetError, match="dataset file not found"):
        ConversationDataset(folder / "nothing.jsonl")


def test_decode_finds_unreadable_media(folder):
    data = write(folder / "train.jsonl", [good(), good("media/broken.png")])
    assert validate_files(data).ok, "without decoding only existence is checked"
    report = validate_files(data, decode=True)
    (problem,) = report.problems
    assert problem.line == 2 and problem.field == "messages[0].content[1].path" and "broken.png" in problem.message


def test_data_targets_and_encoded_text_are_counted(folder):
    sample = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "the fox", "encode": True}, {"type": "text", "text": " jumps"}]},
        {"role": "assistant", "content": [{"type": "image", "path": "media/a.png"}, {"type": "image", "path": "media/a.png", "target": False}]},
    ]}
    report = validate_files(write(folder / "t.jsonl", [sample]))
    assert report.ok and dict(report.media) == {"text in": 1, "image out": 1, "image in": 1}


def run_cli(argv):
    parser = argparse.ArgumentParser()
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_codi2_data_validate(folder, capsys):
    data = write(folder / "train.jsonl", [good(), good("media/missing.png")])
    assert run_cli(["data", "validate", str(data)]) == 1
    out = capsys.readouterr().out
    assert "1 valid sample(s)" in out and f"{data}:2: messages[0].content[1].path: media file not found" in out
    assert run_cli(["data", "validate", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 1 and report["problems"][0]["line"] == 2
    write(data, [good()])
    assert run_cli(["data", "validate", str(data), "--decode"]) == 0


def test_undecodable_lines_are_named_by_their_own_number_and_skippable(folder):
    lines = [json.dumps(good()).encode()] * 5 + [b'{"messages": "caf\xe9"}'] + [json.dumps(good()).encode()] * 2
    lines += [b"[" * 100_000, b'{"id": ' + b"9" * 5000 + b"}"]
    data = folder / "train.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    report = validate_files(data)
    assert [p.line for p in report.problems] == [6, 9, 10]
    assert report.problems[1].message == "invalid JSON: nested too deeply"
    assert report.problems[2].message.startswith("invalid JSON: Exceeds the limit")
    assert str(report.problems[0]) == f"{data}:6: not UTF-8 text (byte 18 of the line: invalid continuation byte)"
    with pytest.raises(DatasetError, match=r"train.jsonl:6: not UTF-8"):
        ConversationDataset(data)
    dataset = ConversationDataset(data, on_error="skip")
    assert [s.line for s in dataset.samples] == [1, 2, 3, 4, 5, 7, 8] and dataset.skipped_lines() == 3


def test_shard_records_that_break_the_json_parser_are_bad_samples():
    from types import SimpleNamespace

    from codi2.training.shards import BadSample, to_sample

    shard = SimpleNamespace(name="shards/s.tar")
    for raw, reason in ((b"[" * 100_000, "nested too deeply"), (b'{"id": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
                        (b'{"a": "caf\xe9"}', "can't decode byte 0xe9")):  # fmt: skip
        bad = to_sample(shard, 0, "k", raw, {})
        assert isinstance(bad, BadSample) and reason in str(bad), bad
        assert str(bad).startswith("shards/s.tar: key 'k': invalid JSON")
