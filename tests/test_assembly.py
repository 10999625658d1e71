"""The one assembly path: how a name resolves (directory, preset, packaged model, hub id through
huggingface_hub's cache), the config read once, each component loaded once, save_pretrained
refusing a config that would not load back, push_to_hub with its model card."""

import json
import shutil

import pytest
import torch

import codi2
import codi2.core.config
from codi2.assembly import assemble, resolve_model
from codi2.core.model import CoDi2Model
from codi2.errors import ConfigError
from codi2.registry import Registry, hookimpl
from codi2.testing import TinyDecoder, TinyEncoder, TinyLLM, tiny_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = {
    "encoders": [{"plugin": "tiny-encoder", "options": {"embed_dim": 12}}],
    "llm": {"plugin": "tiny-llm"},
    "decoders": {"image": {"plugin": "tiny-decoder", "options": {"modality": "image"}}},
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def registry():
    return Registry.create(entry_points=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, registry):
    """A tiny model with trained (non-initial) core weights, saved."""
    torch.manual_seed(0)
    model = assemble(CONFIG, registry=registry)
    with torch.no_grad():
        model.slots["image"].add_(1.5)
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    model.save_pretrained(folder)
    return folder, model.trained_state_dict()


def same_weights(model, state):
    for key, value in state.items():
        torch.testing.assert_close(model.trained_state_dict()[key], value)


def test_a_saved_directory_restores_its_trained_weights(saved, registry):
    folder, state = saved
    model = codi2.load(folder, registry=registry)
    same_weights(model, state)
    assert model.source_name == "tiny" and not model.training


def test_config_is_read_once_and_each_component_loaded_once(saved, registry, monkeypatch):
    folder, _ = saved
    reads, loads = [], []
    real_read, real_load = codi2.core.config.read_config_file, registry.load
    monkeypatch.setattr(codi2.core.config, "read_config_file", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setattr(registry, "load", lambda kind, cfg: loads.append(kind) or real_load(kind, cfg))
    codi2.load(folder, registry=registry)
    assert len(reads) == 1 and sorted(loads) == ["decoder", "encoder", "llm"]


def test_presets_and_packaged_models_come_from_the_registry(registry):
    assert {"toy", "codi2-paper", "codi2-paper-openclip"} <= set(registry.names("preset"))
    assert resolve_model("toy", registry).kind == "packaged"
    paper = resolve_model("codi2-paper", registry)
    assert paper.kind == "preset" and paper.read_config().llm.plugin == "hf-causal-lm"


def test_a_third_party_preset_resolves_like_a_builtin(saved):
    folder, state = saved

    class Plugin:
        @hookimpl
        def codi2_register_presets(self, register):
            register("my-model", load=lambda options: folder)
            register("my-config", load=lambda options: CONFIG)
            register("broken", load=lambda options: 42)

    registry = Registry.create(entry_points=False)
    registry.register_plugin(Plugin(), name="mine")
    same_weights(codi2.load("my-model", registry=registry), state)
    assert resolve_model("my-config", registry).kind == "preset"
    with pytest.raises(ConfigError, match="preset 'broken'.*returned int"):
        resolve_model("broken", registry)


def test_a_folder_named_like_a_preset_without_config_does_not_shadow_it(tmp_path, monkeypatch, registry):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    assert resolve_model("toy", registry).kind == "packaged"
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model("./toy", registry)  # spelled as a path, it is that folder
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError, match="model directory other: no config.json"):
        resolve_model("other", registry)


def test_unknown_names_are_one_clear_line(registry):
    with pytest.raises(ConfigError, match="unknown model 'nope'.*known presets: .*toy") as info:
        resolve_model("nope", registry)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no such model directory './runs/x'"):
        resolve_model("./runs/x", registry)


def lay_out_hub_cache(cache, repo_id, folder):
    """A local cache exactly as huggingface_hub writes it: blobs, a snapshot of symlinks, refs/main."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for k, file in enumerate(sorted(folder.iterdir())):
        blob = root / "blobs" / f"{k:040x}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(f"../../blobs/{blob.name}")


def test_a_hub_id_loads_offline_from_the_local_cache(saved, registry, tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder, state = saved
    lay_out_hub_cache(tmp_path, "org/codi2-model", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest: no test reaches the hub
    source = resolve_model("org/codi2-model", registry)
    assert source.kind == "hub" and source.path.name == COMMIT
    same_weights(codi2.load("org/codi2-model", registry=registry), state)
    with pytest.raises(ConfigError, match="'org/missing'.*not in the local Hugging Face cache") as info:
        resolve_model("org/missing", registry)
    assert "\n" not in str(info.value)


def test_save_pretrained_refuses_a_config_that_cannot_load_back(tmp_path):
    class Unnamed(TinyEncoder):
        name = None

    class NoOptions(TinyDecoder):
        def __init__(self):
            super().__init__("image")
            del self.options

    cases = [
        ({"encoders": [Unnamed()], "llm": TinyLLM()}, "encoder #0 \\(Unnamed\\) has no `name`"),
        ({"encoders": [TinyEncoder()], "llm": TinyLLM(), "decoders": {"image": NoOptions()}}, "image decoder .* has no `options`"),
    ]
    for components, message in cases:
        model = CoDi2Model.from_components(**components)
        with pytest.raises(ConfigError, match=message):
            model.save_pretrained(tmp_path / "x")
        assert not (tmp_path / "x").exists()  # nothing half-written
    model = CoDi2Model.from_components(**tiny_components())
    model.config.llm.options["weights"] = torch.zeros(2)  # not JSON: would not load back
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        model.save_pretrained(tmp_path / "y")


def test_from_pretrained_takes_components_not_a_registry(saved, registry):
    folder, state = saved
    with pytest.raises(ConfigError, match="codi2.load"):
        CoDi2Model.from_pretrained(folder, registry)
    built = {"encoders": [registry.load("encoder", CONFIG["encoders"][0])], "llm": registry.load("llm", "tiny-llm"),
             "decoders": {"image": registry.load("decoder", CONFIG["decoders"]["image"])}}
    same_weights(CoDi2Model.from_pretrained(folder, built), state)


def test_push_to_hub_uploads_the_model_with_a_model_card(saved, monkeypatch):
    import huggingface_hub
    from huggingface_hub import ModelCard

    folder, _ = saved
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = (repo_id, private, exist_ok)

        def create_commit(self, repo_id, operations, commit_message):
            calls["files"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
            return type("Commit", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = codi2.load(folder, registry=Registry.create(entry_points=False))
    model.config.llm.options["model"] = "meta-llama/Llama-2-7b-chat-hf"  # a backbone named by hub id
    url = codi2.push_to_hub(model, "me/codi2-tiny", private=True)
    assert url == "https://hub/me/codi2-tiny/commit/1" and calls["repo"] == ("me/codi2-tiny", True, True)
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    card = ModelCard(calls["files"]["README.md"].decode())
    assert card.data.library_name == "codi2" and card.data.base_model == ["meta-llama/Llama-2-7b-chat-hf"]
    assert 'codi2.load("me/codi2-tiny")' in card.text and "`tiny-decoder`" in card.text
    # a saved directory goes up as it is, plus the card
    codi2.push_to_hub(folder, "me/codi2-dir")
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    with pytest.raises(ConfigError, match="expected 'namespace/name'"):
        codi2.push_to_hub(folder, "no-namespace")


def test_push_offline_is_one_clear_line(saved):
    folder, _ = saved
    with pytest.raises(ConfigError, match="push to 'me/x' failed") as info:
        codi2.push_to_hub(folder, "me/x")  # HF_HUB_OFFLINE=1: huggingface_hub refuses to connect
    assert "\n" not in str(info.value)


def test_train_presets_find_their_recipe_through_the_registry(monkeypatch, tmp_path):
    import codi2.registry
    from codi2.cli import main
    from pydantic import BaseModel, ConfigDict

    ran = {}

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        out: str | None = None
        minutes: float | None = None

    class Plugin:
        @hookimpl
        def codi2_register_presets(self, register):
            register("mine", load=lambda options: CONFIG, train=lambda options: ran.setdefault("options", options) and 0,
                     train_options=Options)

    registry = Registry.create(entry_points=False)
    registry.register_plugin(Plugin(), name="mine")
    monkeypatch.setattr(codi2.registry, "default_registry", lambda: registry)
    assert main(["train", "--preset", "mine", "--out", str(tmp_path), "--minutes", "2"]) == 0
    assert ran["options"] == Options(out=str(tmp_path), minutes=2.0)
    assert main(["train", "--preset", "mine", "--ship"]) == 2  # an option this recipe does not take
    assert main(["train", "--preset", "codi2-paper"]) == 2  # a preset without a recipe


def test_the_default_model_reads_and_answers(registry):
    model = codi2.load(registry=registry)
    assert model.source_name == "toy" and set(model.decoders) == {"image", "audio"}
    json.dumps(codi2.api.model_info(model))


def test_a_config_file_builds_an_untrained_model(tmp_path, registry):
    (tmp_path / "model.yaml").write_text(json.dumps(CONFIG))  # JSON is YAML
    source = resolve_model(tmp_path / "model.yaml", registry)
    assert source.kind == "file" and source.path is None  # nothing trained to restore
    assert codi2.load(tmp_path / "model.yaml", registry=registry).in_proj["image"][0].in_features == 12


def test_training_configs_keep_hub_ids_and_resolve_paths(tmp_path):
    from codi2.training.config import TrainConfig

    def model_of(value):
        data = {"model": value, "data": {"train": "d.jsonl"}, "max_steps": 1}
        return TrainConfig.from_dict(data, base=tmp_path).model

    assert model_of("org/codi2-model") == "org/codi2-model"  # a hub id stays one
    assert model_of("codi2-paper") == "codi2-paper"  # so does a preset name
    assert model_of("runs/align/final") == str(tmp_path / "runs/align/final")  # a relative path
    (tmp_path / "runs").mkdir()
    assert model_of("runs") == str(tmp_path / "runs")  # an existing folder is a path


def test_every_shipped_preset_file_is_registered(registry):
    from importlib import resources

    files = {p.name[: -len(".json")] for p in (resources.files("codi2") / "presets").iterdir() if p.name.endswith(".json")}
    assert files <= set(registry.names("preset")), files - set(registry.names("preset"))
