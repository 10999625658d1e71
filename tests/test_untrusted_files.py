"""Never run untrained by accident, never unpickle: a model directory without its weights and
pickled weight files handed to any loader are one-line errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from codi2.core.model import CoDi2Model
from codi2.errors import CheckpointError, ComponentLoadError
from codi2.testing import tiny_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    """What a hostile checkpoint holds: unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _plant_pickle(directory: Path, marker: Path) -> Path:
    """Replace a saved model's safetensors weights by a hostile ``pytorch_model.bin``."""
    for old in directory.glob("*.safetensors"):
        old.unlink()
    torch.save({"weight": _Payload(marker)}, directory / "pytorch_model.bin")
    return directory / "pytorch_model.bin"


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_missing_empty_or_folder_weights_are_errors_naming_the_file(tmp_path):
    torch.manual_seed(0)
    CoDi2Model.from_components(**tiny_components()).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing.*random ones") as info:
        CoDi2Model.from_pretrained(tmp_path / "m", components=tiny_components())
    _one_line(info.value)
    weights.mkdir()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a file"):
        CoDi2Model.from_pretrained(tmp_path / "m", components=tiny_components())
    weights.rmdir()
    weights.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: empty \(0 bytes\)"):
        CoDi2Model.from_pretrained(tmp_path / "m", components=tiny_components())


def _hf_llm(directory: Path) -> None:
    from codi2.plugins.llms import hf_causal_lm

    hf_causal_lm.load(hf_causal_lm.HFCausalLMOptions(model=str(directory), device="cpu"))


def _clip(directory: Path) -> None:
    from codi2.evaluation.networks.clip import load_clip

    load_clip(str(directory), device="cpu")


def _dino(directory: Path) -> None:
    from codi2.evaluation.networks.vit import load_dino

    load_dino(str(directory), device="cpu")


def _save_llm(directory: Path) -> None:
    from codi2.plugins.llms.hf_causal_lm_testing import build_tiny_llama

    build_tiny_llama(directory, hidden_size=16, layers=1, heads=2)


def _save_clip(directory: Path) -> None:
    from codi2.evaluation.testing import save_tiny_clip

    save_tiny_clip(directory)


def _save_dino(directory: Path) -> None:
    from codi2.evaluation.testing import save_tiny_dino

    save_tiny_dino(directory)


@pytest.mark.parametrize(
    ("save", "load"), [(_save_llm, _hf_llm), (_save_clip, _clip), (_save_dino, _dino)],
    ids=["hf-causal-lm", "clip", "dino"],
)
def test_pickled_weights_are_refused_in_one_line(tmp_path, save, load):
    save(tmp_path / "net")
    planted = _plant_pickle(tmp_path / "net", tmp_path / "pwned")
    with pytest.raises(ComponentLoadError) as info:
        load(tmp_path / "net")
    message = _one_line(info.value)
    assert str(planted) in message and "convert it to safetensors" in message
    assert "weights_only" not in message  # not torch's advice to turn the safety off
    assert not (tmp_path / "pwned").exists()


def test_pickled_cnn14_is_refused_in_one_line(tmp_path):
    from codi2.evaluation.networks.cnn14 import read_state_dict

    torch.save({"model": _Payload(tmp_path / "pwned")}, tmp_path / "cnn14.pth")
    with pytest.raises(ComponentLoadError, match=r"cnn14\.pth is a pickle.*safetensors") as info:
        read_state_dict(tmp_path / "cnn14.pth")
    _one_line(info.value)
    assert not (tmp_path / "pwned").exists()
