"""The command line as a user meets it: generate, chat, serve, and every mistake a user makes.

A tiny trained model (tests/_tiny_chat_model.py) is loaded through ``--model DIR``. Most
commands run in-process through ``codi2.cli.main``; the entry point itself (``python -m
codi2``) is exercised for --help, one generation, one error and the chat REPL over stdin.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tiny_chat_model import chat_model_dir, png_bytes, torch_threads, wav_bytes
from PIL import Image

from codi2.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_codi2(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "codi2", *args], input=stdin, capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return chat_model_dir()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    made = {
        "image": png_bytes(1), "truncated": png_bytes(1)[:60], "empty": b"", "audio": wav_bytes(),
        "corrupt": b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "text": b"just some words\n",
    }  # fmt: skip
    suffix = {"audio": ".wav", "text": ".txt"}
    paths = {}
    for name, data in made.items():
        paths[name] = folder / f"{name}{suffix.get(name, '.png')}"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_help_imports_no_torch():
    code = (
        "import sys\nfrom codi2.cli import main\n"
        "for argv in (['--help'], ['generate', '--help'], ['serve', '--help'], ['chat', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH"), "codi2 --help must not import torch"
    for word in ("generate", "chat", "serve", "--device", "--dtype", "--quiet", "--media", "--json"):
        assert word in out.stdout


def test_generate_round_trip_writes_predictable_files(model_dir, files, tmp_path):
    out = run_codi2("generate", "make it blue {a}", "--media", f"a={files['image']}", "--model", str(model_dir),
                    "--out", str(tmp_path / "out"), "--seed", "0", "--steps", "3")  # fmt: skip
    assert out.returncode == 0, out.stderr
    written = tmp_path / "out" / "output0.png"
    assert f"wrote {written} (image)" in out.stdout
    with Image.open(written) as image:
        assert image.size == (16, 16)
    assert "Traceback" not in out.stderr


def test_generate_json_is_one_object_and_seeded_runs_repeat(model_dir, files, tmp_path, capsys):
    argv = ["--quiet", "generate", "{a} paint it red", "--media", f"a={files['image']}", "--model", str(model_dir),
            "--seed", "0", "--json"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["model"] == model_dir.name and first["finish_reason"] in ("stop", "length")
    assert first["text"] == "".join(p["text"] for p in first["parts"] if p["type"] == "text")
    assert [m["path"] for m in first["media"]] == [str(tmp_path / "one" / f"output{k}.png") for k in range(len(first["media"]))]
    assert first["media"] and first["media"][0]["type"] == "image" and first["media"][0]["width"] == 16
    a, b = (np.asarray(Image.open(d["media"][0]["path"])) for d in (first, second))
    assert np.array_equal(a, b), "the same seed must give the same image"
    assert first["text"] == second["text"]


def test_global_options_work_before_and_after_the_command(model_dir, tmp_path, capsys):
    assert main(["--threads", "1", "generate", "draw a square", "--model", str(model_dir), "--out", str(tmp_path),
                 "--device", "cpu", "--dtype", "float32", "--quiet", "--max-new-tokens", "12"]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out


BAD = {
    "missing file": (["x {a}", "--media", "a=MISSING"], "no such file"),
    "truncated png": (["x {a}", "--media", "a=@truncated"], "truncated"),
    "corrupt png": (["x {a}", "--media", "a=@corrupt"], "media 'a'"),
    "empty file": (["x {a}", "--media", "a=@empty"], "empty (0 bytes)"),
    "text file as media": (["x {a}", "--media", "a=@text"], "not an image, audio, video, depth, thermal or imu file"),
    "a directory": (["x {a}", "--media", "a=DIR"], "not a regular file"),
    "placeholder without media": (["x {b}", "--media", "a=@image"], "placeholder {b} has no attachment"),
    "media never used": (["x", "--media", "a=@image"], "never referenced"),
    "unmatched brace": (["x {a", "--media", "a=@image"], "unmatched '{'"),
    "media without name": (["x", "--media", "@image"], "expected NAME=PATH"),
    "unknown model": (["x", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    "missing model dir": (["x", "--model", "./no/such/dir"], "no such model directory"),
    "unknown plugin": (["x", "--model", "BADPLUGIN"], "unknown encoder 'nope-encoder'"),
    "unavailable device": (["x", "--device", "cuda:7"], "not available"),
    "bad steps": (["x", "--steps", "0"], "steps"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_user_errors_are_one_line_exit_2_no_traceback(case, model_dir, files, tmp_path, capsys):
    args, expected = BAD[case]
    bad_model = tmp_path / "bad-model"
    bad_model.mkdir()
    (bad_model / "config.json").write_text(json.dumps({"encoders": [{"plugin": "nope-encoder"}], "llm": {"plugin": "tiny-llm"}}))
    subs = {"MISSING": str(tmp_path / "missing.png"), "DIR": str(tmp_path), "BADPLUGIN": str(bad_model),
            **{f"@{k}": str(v) for k, v in files.items()}}  # fmt: skip
    args = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_dir)]
    code = main(["generate", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err


def test_usage_errors_are_one_line():
    out = run_codi2("generate")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "PROMPT" in out.stderr
    out = run_codi2("generate", "x {a}", "--media", "a=/no/such/file.png")
    assert out.returncode == 2 and out.stderr.startswith("error: media 'a'") and "Traceback" not in out.stderr


def test_missing_default_model_is_one_clear_line(capsys, monkeypatch, tmp_path):
    import codi2.plugins.toy
    from codi2.api import DEFAULT_MODEL

    monkeypatch.setattr(codi2.plugins.toy, "asset_dir", lambda: tmp_path)  # a copy of codi2 without the toy model
    assert main(["generate", "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"default model {DEFAULT_MODEL!r} is not installed" in err and "--model" in err


def test_debug_shows_the_traceback(files, capsys):
    assert main(["--debug", "generate", "x {a}", "--media", f"a={files['truncated']}"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_serve_on_a_busy_port_is_one_line(model_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--quiet", "serve", "--model", str(model_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "in use" in err.lower()


def test_chat_repl_over_stdin(model_dir, files, tmp_path):
    script = "\n".join([
        "/help",
        f"/image {files['image']}",
        "make it blue",
        f"/audio {files['image']}",          # a PNG given as audio: refused, the chat goes on
        f"/image {tmp_path / 'missing.png'}",
        "/frobnicate",
        "draw a square",                     # second round, same conversation
        f"/save {tmp_path / 'saved'}",
        "/reset",
        f"/image {files['image']}",
        "paint it red",
        "/quit",
        "this line is never read",
    ]) + "\n"  # fmt: skip
    out = run_codi2("chat", "--model", str(model_dir), "--out", str(tmp_path / "chat"), "--seed", "0", stdin=script)
    assert out.returncode == 0, out.stderr
    assert "/image PATH" in out.stdout and "/reset" in out.stdout  # /help
    assert "(attached image" in out.stdout and "(new conversation)" in out.stdout
    generated = [line.split("] ", 1)[1] for line in out.stdout.splitlines() if line.startswith("  [image] ")]
    assert generated == [str(tmp_path / "chat" / f"turn{k}-output0.png") for k in (1, 2, 3)]
    assert all(Path(p).is_file() for p in generated)
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors), out.stderr
    assert "given as audio, but it is image" in errors[0] and "no such file" in errors[1] and "unknown command" in errors[2]
    assert "Traceback" not in out.stderr
    saved = json.loads((tmp_path / "saved" / "conversation.json").read_text())["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant", "user", "assistant"]
    assert saved[0]["content"][0]["type"] == "image" and saved[0]["content"][1]["text"] == "make it blue"
    assert saved[2]["content"] == [{"type": "text", "text": "draw a square"}]
    for message in saved:
        for part in message["content"]:
            if "path" in part:
                assert (tmp_path / "saved" / part["path"]).is_file()
