"""Configuration: every invalid config is an error that names the file and the field."""

import json

import pytest

from codi2.core.config import ModelConfig
from codi2.errors import ConfigError

GOOD = {
    "encoders": [{"plugin": "imagebind", "options": {"size": "huge"}}],
    "llm": {"plugin": "hf-causal-lm", "options": {"model": "meta-llama/Llama-2-7b-chat-hf"}},
    "decoders": {"image": {"plugin": "sd-unclip"}},
}


def test_json_and_yaml_files_load(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(GOOD))
    (tmp_path / "m.yaml").write_text(
        "encoders:\n  - plugin: imagebind\n    options: {size: huge}\n"
        "llm: {plugin: hf-causal-lm, options: {model: meta-llama/Llama-2-7b-chat-hf}}\n"
        "decoders:\n  image: {plugin: sd-unclip}\n"
    )
    assert ModelConfig.from_file(tmp_path / "m.json") == ModelConfig.from_file(tmp_path / "m.yaml")
    config = ModelConfig.from_dict(GOOD)
    config.to_file(tmp_path / "again.json")
    assert ModelConfig.from_file(tmp_path / "again.json") == config
    assert config.loss.alpha == 1.0 and config.loss.diffusion


@pytest.mark.parametrize("change, field", [
    ({"encoders": []}, "encoders: List should have at least 1 item"),
    ({"llm": {"plugin": "x", "optoins": {}}}, "llm.optoins: Extra inputs are not permitted"),
    ({"decoders": {"Smell!": {"plugin": "x"}}}, "decoders: Value error, output modality 'Smell!' is not a modality name"),
    ({"loss": {"alpha": -1}}, "loss.alpha: Input should be greater than or equal to 0"),
    ({"generation": {"temperature": "hot"}}, "generation.temperature: Input should be a valid number"),
    ({"encoders": [{"plugin": "imagebind", "modalities": ["sm ell"]}]}, "encoders.0.modalities: Value error, modality 'sm ell' is not a modality name"),
    ({"modalities": ["image", "image"]}, "modalities: Value error, modalities named twice"),
    ({"colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_invalid_configs_name_the_field(tmp_path, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_file(path)
    assert str(err.value).startswith(f"{path}: ") and field in str(err.value)


def test_unparsable_files_name_the_position(tmp_path):
    (tmp_path / "bad.json").write_text('{"llm": ')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON at line 1, column 9"):
        ModelConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("llm: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        ModelConfig.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        ModelConfig.from_file(tmp_path / "missing.json")


def test_marker_modalities_follow_the_config():
    config = ModelConfig.from_dict(GOOD)
    assert config.marker_modalities() == ("image", "audio", "video", "text")  # every older checkpoint
    extra = ModelConfig.from_dict({**GOOD, "encoders": [{"plugin": "x", "modalities": ["image", "depth"]}],
                                   "decoders": {"pointcloud": {"plugin": "y"}}})
    assert extra.marker_modalities() == ("image", "audio", "video", "text", "depth", "pointcloud")
    named = ModelConfig.from_dict({**GOOD, "modalities": ["depth", "text"]})
    assert named.marker_modalities() == ("depth", "text")
