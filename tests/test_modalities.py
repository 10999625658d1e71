"""Modalities as registered components: the hook, the Modalities collection, `codi2 plugins`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codi2.core.messages import normalize_messages
from codi2.core.modality import Modalities, ModalitySpec
from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError, PluginError, UnknownModalityError
from codi2.registry import Registry, hookimpl

REPO = Path(__file__).resolve().parents[1]


def _npy_spec(name: str, description: str = "") -> ModalitySpec:
    def load(source, *, name=None, limits=None, **_):
        return Media(name_, np.load(source, allow_pickle=False), name=name)

    name_ = name
    return ModalitySpec(
        name=name, description=description, load=load, encode=lambda m: m.data.tobytes(),
        suffixes=(".npy",), mime_type="application/x-npy", sniff=lambda head: head.startswith(b"\x93NUMPY"),
    )  # fmt: skip


class NpyPlugin:
    def __init__(self, *names: str):
        self.names = names

    @hookimpl
    def codi2_register_modalities(self, register):
        for name in self.names:
            register(name, load=lambda options, n=name: _npy_spec(n), description=f"{name} arrays")


#: the core four; the imagebind plugin adds depth, thermal and imu (tests/test_imagebind_modalities.py)
CORE = ("image", "audio", "video", "text")


@pytest.fixture(scope="module")
def builtin() -> Modalities:
    return Registry.create(entry_points=False).modalities().subset(CORE)


def test_builtin_modalities_come_through_the_hook(builtin):
    registry = Registry.create(entry_points=False)
    assert list(registry.modalities()) == [*CORE, "depth", "thermal", "imu"]
    assert builtin.media == ("image", "audio", "video")
    owners = {p.name: p.components.get("modality") for p in registry.plugins() if "modality" in p.components}
    assert owners == {**{f"codi2.plugins.modalities.{m}": [m] for m in CORE},
                      "codi2.plugins.encoders.imagebind": ["depth", "imu", "thermal"]}  # listed sorted
    assert builtin["image"].display == "image" and builtin["text"].is_text
    assert builtin["audio"].mime_type == "audio/wav" and builtin["video"].suffix == ".mp4"


def test_a_plugin_adds_a_modality():
    registry = Registry.create(entry_points=False)
    registry.register_plugin(NpyPlugin("sonar"), name="sonar-plugin")
    modalities = registry.modalities()
    assert list(modalities)[-1] == "sonar" and modalities.get("sonar").mime_type == "application/x-npy"
    assert {p.name: p.components for p in registry.plugins()}["sonar-plugin"] == {"modality": ["sonar"]}


def test_broken_and_clashing_modalities_are_reported_not_fatal():
    class Broken:
        @hookimpl
        def codi2_register_modalities(self, register):
            register("bad", load=lambda options: "not a spec")

    registry = Registry.create(entry_points=False)
    registry.register_plugin(Broken(), name="broken")
    registry.register_plugin(NpyPlugin("image"), name="clash")
    assert list(registry.modalities()) == [*CORE, "depth", "thermal", "imu"]
    errors = {p.name: p.error for p in registry.plugins() if p.error}
    assert "not a codi2.core.modality.ModalitySpec" in errors["broken"]
    assert "modality 'image' is registered by both" in errors["clash"]
    strict = Registry(strict=True)
    strict.register_plugin(Broken(), name="broken")
    with pytest.raises(PluginError, match="plugin 'broken': modality 'bad'"):
        strict.modalities()


def test_spec_checks_its_fields():
    with pytest.raises(ValueError, match="suffixes"):
        ModalitySpec(name="x", load=print, encode=bytes, suffixes=("npy",), mime_type="a/b")
    with pytest.raises(ValueError, match="display"):
        ModalitySpec(name="x", load=print, encode=bytes, suffixes=(".x",), mime_type="a/b", display="hologram")


def test_unknown_modality_names_the_registered_ones(builtin):
    with pytest.raises(UnknownModalityError, match=r"part 3: unknown modality 'depth'; registered: image, audio, video, text"):
        builtin.get("depth", where="part 3")


def test_sniffing_never_returns_none(tmp_path, builtin):
    junk = tmp_path / "scan.npy"
    np.save(junk, np.zeros(3))
    with pytest.raises(UnknownModalityError, match=r"'scan.npy'.*not a file of any registered modality \(image, audio, video, text\)"):
        builtin.sniff(junk)
    with pytest.raises(MediaLimitError, match="empty"):
        builtin.sniff(b"")
    with pytest.raises(UnknownModalityError, match=r"cannot tell the modality from suffix \.npy and there is no such file"):
        builtin.sniff(tmp_path / "missing.npy")
    assert builtin.sniff(tmp_path / "missing.flac").name == "audio"  # the suffix speaks when no file
    assert builtin.sniff(b"plain words").name == "text"
    with_npy = builtin.union([_npy_spec("depth")])
    assert with_npy.sniff(junk).name == "depth" and with_npy.sniff(junk.read_bytes()).name == "depth"


def test_ambiguous_suffix_and_magic_ask_which(tmp_path, builtin):
    both = builtin.union([_npy_spec("depth"), _npy_spec("thermal")])
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(UnknownModalityError, match="could be depth or thermal; say which.*MODALITY:PATH"):
        both.sniff(path)
    with pytest.raises(UnknownModalityError, match=r"suffix \.npy is used by several modalities \(depth, thermal\)"):
        both.by_suffix(".npy")
    assert both.load(path, "thermal").modality == "thermal"


def test_infer_and_load_in_memory_items(builtin):
    assert builtin.infer(np.zeros((4, 5, 3), np.uint8)).name == "image"
    assert builtin.infer((np.zeros(800, np.float32), 16000)).name == "audio"
    assert builtin.infer(np.zeros((2, 4, 4, 3), np.uint8)).name == "video"
    assert builtin.infer("data:audio/wav;base64,AAAA").name == "audio"
    with pytest.raises(UnknownModalityError, match="cannot tell the modality of a dict"):
        builtin.infer({"x": 1})
    item = builtin.load(np.zeros((4, 5, 3), np.uint8), name="a")
    assert item.modality == "image" and builtin.summary(item)["width"] == 5


def test_save_writes_the_modalitys_suffix(tmp_path, builtin):
    image = Media("image", np.zeros((4, 4, 3), np.uint8))
    assert builtin.save(image, tmp_path / "out").name == "out.png"
    depth = builtin.union([_npy_spec("depth")])
    assert depth.save(Media("depth", np.zeros(2)), tmp_path / "d").name == "d.npy"
    with pytest.raises(UnknownModalityError, match="unknown modality 'depth'"):
        builtin.save(Media("depth", np.zeros(2)), tmp_path / "d")


def test_a_modality_writes_the_formats_its_registration_lists(tmp_path, builtin):
    from codi2.core.media import media_to_bytes, sniff_format

    image = Media("image", np.zeros((4, 4, 3), np.uint8))
    assert builtin["image"].writes[0] == ".png" and ".jpg" in builtin["image"].writes
    assert sniff_format(builtin.save(image, tmp_path / "a.jpg").read_bytes()) == "jpeg"
    assert builtin.save(image, tmp_path / "b.mp3").name == "b.mp3.png"  # read, never written: default appended
    clip = Media("video", np.zeros((2, 4, 4, 3), np.uint8), fps=4.0)
    assert sniff_format(media_to_bytes(clip, "gif", modalities=builtin)) == "gif"
    with pytest.raises(MediaDecodeError, match="cannot encode video as 'png'; choose from mp4, gif"):
        media_to_bytes(clip, "png", modalities=builtin)
    # a spec that writes one format (encode only) never puts its bytes under another suffix
    imu_like = dataclasses.replace(_npy_spec("imu_like"), suffixes=(".npy", ".csv"))
    assert imu_like.writes == (".npy",)
    assert imu_like.write(Media("imu_like", np.zeros(2)), tmp_path / "x.csv").name == "x.csv.npy"
    with pytest.raises(ValueError, match="writes"):
        ModalitySpec(name="x", load=print, encode=bytes, suffixes=(".x",), mime_type="a/b", writes=("y",))


def test_named_modality_reads_what_its_reader_takes(tmp_path, builtin):
    from codi2.attachments import load_attachment
    from codi2.core.media import save_media

    frames = np.stack([np.full((6, 6, 3), 40 * i, np.uint8) for i in range(3)])
    gif = save_media(Media("video", frames, fps=4.0), tmp_path / "clip.gif", modalities=builtin)
    assert load_attachment(gif, name="g", modalities=builtin).modality == "image"  # a .gif is an image...
    assert load_attachment(gif, name="g", modality="video", modalities=builtin).data.shape == (3, 6, 6, 3)  # ...or a clip
    png = save_media(Media("image", frames[0]), tmp_path / "still.png", modalities=builtin)
    with pytest.raises(MediaDecodeError, match="given as video, but it is image"):
        load_attachment(png, name="p", modality="video", modalities=builtin)
    with pytest.raises(MediaDecodeError, match="given as audio, but it is image"):
        load_attachment(png.read_bytes(), name="p", modality="audio", modalities=builtin)


def test_cli_plugins_lists_modalities_and_options():
    env = {"PYTHONPATH": str(REPO), "CODI2_NO_PLUGINS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "codi2", "plugins", "--json"], capture_output=True, text=True, env=env, check=True)
    data = json.loads(out.stdout)
    assert set(data["components"]["modality"]) >= {"image", "audio", "video", "text"}
    owner = next(p for p in data["plugins"] if p["name"] == "codi2.plugins.modalities.audio")
    assert owner["components"] == {"modality": ["audio"]}
    options = data["components"]["encoder"]["imagebind"]["options"]
    assert options["properties"]["video_frames"]["default"] == 2
    table = subprocess.run([sys.executable, "-m", "codi2", "plugins", "--options"], capture_output=True, text=True, env=env, check=True)
    assert "    modality: image\n" in table.stdout and "        video_frames: int = 2" in table.stdout


def test_a_model_names_its_modalities_and_refuses_others(builtin):
    import torch

    from codi2.core.model import CoDi2Model
    from codi2.core.sequence import Markers
    from codi2.testing import tiny_components

    torch.manual_seed(0)
    model = CoDi2Model.from_components(**tiny_components(), modalities=builtin)
    assert model.config.modalities is None and model.markers.modalities == ("image", "audio", "video", "text")
    assert model.marker_embeddings.num_embeddings == 8  # the layout of every checkpoint before modality plugins
    with pytest.raises(UnknownModalityError, match=r"unknown modality 'depth'; registered: image, audio, video, text"):
        model.generate("What is {d}?", media={"d": Media("depth", np.zeros((4, 4), np.float32))})
    with pytest.raises(UnknownModalityError, match=r"no markers for 'depth'; it has: image, audio, video, text"):
        Markers(10, model.markers.modalities).open("depth")
    depth = builtin.union([_npy_spec("depth")])
    messages = normalize_messages("{d}", {"d": Media("depth", np.zeros(2))}, depth)  # known to the collection
    with pytest.raises(UnknownModalityError, match="no encoder for depth input; this model reads audio, image, text, video"):
        model.sequence(messages, training=False)  # ... but not to this model


def test_media_option_names_a_modality_when_asked(tmp_path, builtin, monkeypatch):
    from codi2.attachments import load_attachment, parse_media_option

    assert parse_media_option("a=cat.png") == ("a", "cat.png", None)
    assert parse_media_option("d=depth:scan.npy") == ("d", "scan.npy", "depth")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "depth:scan.npy").write_bytes(b"")  # a file that exists as written wins over the prefix form
    assert parse_media_option("d=depth:scan.npy") == ("d", "depth:scan.npy", None)
    (tmp_path / "x:y.png").write_bytes(b"")
    with pytest.raises(UnknownModalityError, match="unknown modality 'smell'; known: image, audio, video"):
        load_attachment(tmp_path / "x:y.png", name="a", modality="smell", modalities=builtin)
