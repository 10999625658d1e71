"""docs/plugins.md runs as written: its Python blocks, in order, in one namespace. A block whose
first line is ``# file: PATH`` is a file the reader creates (``# file: PATH (append)`` adds to
it); a block fenced ``python no-test`` is shown, not run (a signature; the modality hook's shape,
which runs in docs/modalities.md)."""

import re
import sys
import tempfile
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"^# file: (\S+)( \(append\))?\n")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blocks() -> list[tuple[str, str]]:
    """(info, code) of every Python block of the tutorial, in order."""
    return [(info.strip(), code) for lang, info, code in FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == "python"]


def test_a_typical_encoder_plugin_is_at_most_60_lines():
    files = {}
    for _, code in blocks():
        match = FILE.match(code)
        if match and "encoder" in code:
            files.setdefault(match.group(1), code[match.end():])
    lines = files["my_codi2_plugin/__init__.py"].strip().splitlines() + files["my_codi2_plugin/encoder.py"].strip().splitlines()
    assert len(lines) <= 60, len(lines)


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the tutorial's mkdtemp() folders go too
    namespace: dict = {"__name__": "tutorial"}
    ran = 0
    try:
        for info, code in blocks():
            if info == "no-test":
                continue
            match = FILE.match(code)
            if match:
                path = tmp_path / match.group(1)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a" if match.group(2) else "w", encoding="utf-8") as handle:
                    handle.write(code[match.end():])
                continue
            exec(compile(code, f"{DOC.name} block {ran}", "exec"), namespace)  # noqa: S102 — our own docs
            ran += 1
    finally:
        for name in [m for m in sys.modules if m == "my_codi2_plugin" or m.startswith("my_codi2_plugin.")]:
            del sys.modules[name]
    assert ran >= 4  # encoder check, decoder check, one training step, save + load + generate
    losses = namespace["losses"]
    assert set(losses) == {"text", "feature", "diffusion", "total"} and losses["diffusion"] > 0
    assert "'total'" in capsys.readouterr().out  # the training step printed its losses
    again = namespace["again"]  # saved and loaded back by name through the registry
    assert again.config.encoders[0].plugin == "my-clip" and again.config.decoders["image"].plugin == "my-pixels"
