"""The depth, thermal and IMU modalities the imagebind plugin registers: reading, validating,
writing, describing, previews, recognising files, and encoding what they read."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from codi2.core.types import Media
from codi2.errors import MediaDecodeError, MediaLimitError, MediaNotFoundError, UnknownModalityError
from codi2.plugins.encoders import imagebind as ib
from codi2.plugins.encoders.imagebind import ImageBindSize
from codi2.plugins.encoders.imagebind.model import TOWERS, ImageBindModel
from codi2.registry import Registry

DIMS = (("embed_dim", 8), ("num_heads", 1), ("num_blocks", 1))
TINY = {"out_embed_dim": 16, **{f"{t}_{k}": v for t in TOWERS for k, v in DIMS}}
NEW = ("depth", "thermal", "imu")


@pytest.fixture(scope="module")
def modalities():
    return Registry.create(entry_points=False).modalities()


def _png(array: np.ndarray, path) -> None:
    Image.fromarray(array).save(path)


def _decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG")
    return np.asarray(Image.open(io.BytesIO(data)))


def test_registered_by_the_imagebind_plugin(modalities):
    registry = Registry.create(entry_points=False)
    owners = {p.name: p.components.get("modality") for p in registry.plugins()}
    assert sorted(owners["codi2.plugins.encoders.imagebind"]) == sorted(NEW)
    assert list(modalities)[-3:] == list(NEW) and set(NEW) <= set(modalities.media)
    for name in NEW:
        spec = modalities[name]
        assert spec.display == "download" and spec.preview is not None and spec.suffix == ".npy"
        assert spec.mime_type == "application/x-npy" and spec.description


def test_depth_files_and_arrays(modalities, tmp_path):
    millimetres = np.full((40, 60), 1500, np.uint16)
    millimetres[:10] = 0  # no reading
    millimetres[10:20] = 750
    _png(millimetres, tmp_path / "scan.png")
    item = modalities.load(tmp_path / "scan.png", "depth")
    assert item.data.dtype == np.float32 and item.data.shape == (40, 60) and item.name == "scan.png"
    assert item.data[15, 0] == pytest.approx(0.75) and item.data[0, 0] == 0 and item.meta["format"] == "png"
    # .npy in metres round-trips exactly through the written file
    written = modalities.save(item, tmp_path / "out")
    assert written.name == "out.npy"
    again = modalities.load(written, "depth")
    np.testing.assert_array_equal(again.data, item.data)
    assert modalities.load(torch.from_numpy(item.data), "depth").data.shape == (40, 60)
    info = modalities.summary(item)
    assert info["min_m"] == pytest.approx(0.75) and info["max_m"] == pytest.approx(1.5) and info["no_reading"] == 0.25
    preview = _decode_png(modalities["depth"].preview(item))
    assert preview.shape == (40, 60) and preview[0, 0] == 0 and preview[15, 0] > preview[30, 0] > 0  # near is bright


def test_depth_rejects_what_is_not_metric_depth(modalities, tmp_path):
    _png(np.zeros((8, 8), np.uint8), tmp_path / "eight.png")
    with pytest.raises(MediaDecodeError, match=r"'eight.png'.*8-bit map holds no metric depth"):
        modalities.load(tmp_path / "eight.png", "depth")
    _png(np.zeros((8, 8, 3), np.uint8), tmp_path / "rgb.png")
    with pytest.raises(MediaDecodeError, match="RGB image is not a depth map"):
        modalities.load(tmp_path / "rgb.png", "depth")
    with pytest.raises(MediaDecodeError, match="negative"):
        modalities.load(np.full((4, 4), -1.0), "depth", name="d")
    with pytest.raises(MediaDecodeError, match="NaN"):
        modalities.load(np.full((4, 4), np.nan), "depth")
    with pytest.raises(MediaDecodeError, match=r"shape \(2, 4, 4\)"):
        modalities.load(np.ones((2, 4, 4)), "depth")
    with open(tmp_path / "objects.npy", "wb") as fh:  # an object array: its body is a pickle
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        fh.write(b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(MediaDecodeError, match="not a readable .npy"):  # never unpickled
        modalities.load(tmp_path / "objects.npy", "depth")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "objects.npy").read_bytes()[:20])
    with pytest.raises(MediaDecodeError, match="not a readable .npy"):
        modalities.load(tmp_path / "cut.npy", "depth")
    with pytest.raises(MediaNotFoundError):
        modalities.load(tmp_path / "nowhere.npy", "depth")
    _png(np.random.default_rng(0).integers(0, 65535, (64, 64), dtype=np.uint16), tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:200])
    with pytest.raises(MediaDecodeError, match="'cut.png'.*corrupt or truncated PNG"):
        modalities.load(tmp_path / "cut.png", "depth")
    (tmp_path / "song.csv").write_text("1,2\n")
    with pytest.raises(MediaDecodeError, match="not a readable image; it looks like text"):
        modalities.load(tmp_path / "song.csv", "depth")
    with pytest.raises(MediaLimitError, match="pixel limit"):
        from codi2.core.media import MediaLimits

        modalities.load(np.ones((100, 100), np.float32), "depth", limits=MediaLimits(max_image_pixels=5000))


def test_thermal_files_and_arrays(modalities, tmp_path):
    frame = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    _png(np.repeat(frame[..., None], 3, axis=-1), tmp_path / "llvip.png")  # 3 equal channels, as LLVIP ships
    item = modalities.load(tmp_path / "llvip.png", "thermal")
    np.testing.assert_allclose(item.data, frame / 255, atol=1e-7)
    counts = (7000 + np.arange(64).reshape(8, 8) * 10).astype(np.uint16)  # radiometric 16-bit frame
    _png(counts, tmp_path / "flir.png")
    stretched = modalities.load(tmp_path / "flir.png", "thermal")
    assert stretched.data.min() == 0 and stretched.data.max() == 1 and stretched.meta["stretched_from"] == [7000, 7630]
    again = modalities.load(modalities.encode(stretched), "thermal")  # bytes of the written .npy
    np.testing.assert_array_equal(again.data, stretched.data)
    assert _decode_png(modalities["thermal"].preview(item))[1, 0] == 32
    with pytest.raises(MediaDecodeError, match=r"must be in \[0, 1\], got \[0, 3\]"):
        modalities.load(np.linspace(0, 3, 16).reshape(4, 4), "thermal")
    assert modalities.summary(item)["max"] == pytest.approx(252 / 255)


def test_imu_files_and_arrays(modalities, tmp_path):
    t = np.arange(600) / 200.0
    rows = np.column_stack([t] + [np.sin(t * (k + 1)) for k in range(6)])
    header = "time,ax,ay,az,gx,gy,gz\n"
    (tmp_path / "walk.csv").write_text(header + "\n".join(",".join(f"{v:.9g}" for v in row) for row in rows))
    item = modalities.load(tmp_path / "walk.csv")  # .csv is the IMU's alone
    assert item.modality == "imu" and item.data.shape == (600, 6) and item.sample_rate == 200
    np.testing.assert_allclose(item.data, rows[:, 1:], atol=1e-6)
    (tmp_path / "plain.csv").write_text("\n".join(",".join(str(v) for v in row[1:]) for row in rows[:50]))
    assert modalities.load(tmp_path / "plain.csv").sample_rate == 400  # no time column: ImageBind's rate
    # CSV bytes (an upload, no file name) are told by their rows; other text stays text
    assert modalities.sniff((tmp_path / "walk.csv").read_bytes()).name == "imu"
    assert modalities.sniff(b"hello, world\nhow are you\n").name == "text"
    with pytest.raises(UnknownModalityError, match=r"application/x-npy is used by several modalities \(depth, thermal, imu\)"):
        modalities.load("data:application/x-npy;base64,AAAA")
    # channels-first arrays are turned round; a (series, rate) pair gives the rate
    np.save(tmp_path / "first.npy", rows[:, 1:].T.astype(np.float32))
    assert modalities.sniff(tmp_path / "first.npy").name == "imu"  # the header's [6, T] tells
    first = modalities.load(tmp_path / "first.npy")
    assert first.data.shape == (600, 6) and first.sample_rate == 400
    assert modalities.load((rows[:, 1:], 100), "imu").sample_rate == 100
    info = modalities.summary(item)
    assert info["samples"] == 600 and info["sample_rate"] == 200 and info["duration"] == 3.0 and info["channels"][3] == "gyro_x"
    plot = _decode_png(modalities["imu"].preview(item))
    assert plot.shape == (320, 640, 3) and (plot != 255).any()
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(MediaDecodeError, match="6 columns.*found rows of 3 columns"):
        modalities.load(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2,3,4,5,6\n1,2,3,4,5,6,7\n")
    with pytest.raises(MediaDecodeError, match="found rows of 6, 7 columns"):
        modalities.load(tmp_path / "ragged.csv")
    (tmp_path / "words.csv").write_text("a,b,c,d,e,f\n1,2,3,4,5,x\n")
    with pytest.raises(MediaDecodeError, match="not a number"):
        modalities.load(tmp_path / "words.csv")
    (tmp_path / "back.csv").write_text("0.1,1,2,3,4,5,6\n0.0,1,2,3,4,5,6\n")
    with pytest.raises(MediaDecodeError, match="must increase"):
        modalities.load(tmp_path / "back.csv")
    with pytest.raises(MediaLimitError, match="3 samples"):
        modalities.load(np.zeros((3, 6)), "imu", name="blip")
    with pytest.raises(MediaDecodeError, match=r"shape \(100, 5\)"):
        modalities.load(np.zeros((100, 5)), "imu")


def test_attachments_named_depth_or_thermal_are_judged_by_their_reader(modalities, tmp_path):
    from codi2.attachments import load_attachment, parse_media_option

    _png(np.full((8, 8), 900, np.uint16), tmp_path / "scan.png")
    name, path, modality = parse_media_option(f"d=depth:{tmp_path / 'scan.png'}")  # as `--media` takes it
    assert load_attachment(path, modality=modality, name=name, modalities=modalities).data[0, 0] == pytest.approx(0.9)
    assert load_attachment(tmp_path / "scan.png", modality="thermal", name="t", modalities=modalities).data.max() == 0
    assert load_attachment(tmp_path / "scan.png", name="i", modalities=modalities).modality == "image"
    with pytest.raises(MediaDecodeError, match="given as imu, but it is image"):  # IMU knows its files
        load_attachment(tmp_path / "scan.png", modality="imu", name="w", modalities=modalities)


def test_npy_maps_must_be_named(modalities, tmp_path):
    np.save(tmp_path / "map.npy", np.ones((48, 64), np.float32))
    with pytest.raises(UnknownModalityError, match="could be depth or thermal or imu"):
        modalities.sniff(tmp_path / "map.npy")
    assert modalities.load(tmp_path / "map.npy", "thermal").modality == "thermal"
    _png(np.zeros((8, 8), np.uint16), tmp_path / "scan.png")
    assert modalities.sniff(tmp_path / "scan.png").name == "image"  # PNGs stay images unless named


def test_encoder_reads_and_encodes_the_new_modalities(modalities, tmp_path):
    from codi2.testing import check_encoder

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = ImageBindModel(ImageBindSize(**TINY))  # all six towers, every weight random
    state = {k: v if k.endswith(("mask", "log_logit_scale")) else torch.randn_like(v) * 0.5
             for k, v in model.state_dict().items()}  # fmt: skip
    torch.save(state, tmp_path / "tiny.pth")
    options = ib.ImageBindOptions(checkpoint=str(tmp_path / "tiny.pth"), size=TINY, device="cpu", modalities=["image", *NEW])
    enc = ib.load(options)
    assert enc.modalities == ("image", *NEW) and set(enc.model.towers) == {"vision", *NEW}
    depth = rng.uniform(0.5, 5, (60, 80)).astype(np.float32)
    samples = {"depth": depth, "thermal": rng.uniform(0, 1, (50, 70)), "imu": (rng.standard_normal((2400, 6)), 200)}
    check_encoder(enc, samples)
    assert enc.load_media(rng.standard_normal((2400, 6)), "imu").sample_rate == 400  # not audio's 16 kHz
    # what the modality reads is what the encoder encodes
    np.save(tmp_path / "d.npy", depth)
    from_file = enc.encode([modalities.load(tmp_path / "d.npy", "depth")], "depth")
    torch.testing.assert_close(from_file, enc.encode([enc.load_media(depth, "depth")], "depth"), rtol=0, atol=0)
    with pytest.raises(UnknownModalityError):
        ib.load(ib.ImageBindOptions(random_init=True, size=TINY, device="cpu")).encode([Media("depth", depth)], "depth")


def test_a_model_reads_depth_thermal_and_imu(tmp_path):
    """A CoDi-2 model whose imagebind encoder serves the three: trains on them, answers about
    them, and saves and reloads with their marker rows."""
    import codi2
    from codi2.assembly import assemble

    registry = Registry.create(entry_points=False)
    served = ["image", *NEW]
    config = {
        "encoders": [{"plugin": "imagebind", "modalities": served,
                      "options": {"size": TINY, "random_init": True, "device": "cpu", "modalities": served}}],
        "llm": {"plugin": "tiny-llm", "options": {}},
    }  # fmt: skip
    torch.manual_seed(0)
    model = assemble(config, registry=registry)
    assert model.markers.modalities == ("image", "audio", "video", "text", *NEW)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "scan.npy", rng.uniform(0.5, 4, (48, 64)).astype(np.float32))
    _png(rng.integers(0, 256, (40, 50), dtype=np.uint8), tmp_path / "heat.png")
    np.save(tmp_path / "walk.npy", rng.standard_normal((2400, 6)).astype(np.float32))
    parts = [{"type": "text", "text": "Compare "}, {"type": "depth", "path": str(tmp_path / "scan.npy")},
             {"type": "thermal", "path": str(tmp_path / "heat.png")}, {"type": "imu", "path": str(tmp_path / "walk.npy")}]
    conversation = [{"role": "user", "content": parts}, {"role": "assistant", "content": "a warm room, walking"}]
    model.set_trainable()
    losses = model(model.collate([conversation]))
    losses["total"].backward()
    touched = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    for modality in NEW:  # each item reached the LLM through its own input projector
        assert any(n.startswith(f"in_proj.{modality}.") for n in touched), modality
    media = {"d": {"type": "depth", "path": str(tmp_path / "scan.npy")}, "w": str(tmp_path / "walk.npy")}
    answer = model.generate("What do {d} and {w} show?", media=media, max_new_tokens=3, seed=0)
    assert isinstance(answer.text, str)
    model.save_pretrained(tmp_path / "saved")
    again = codi2.load(tmp_path / "saved", registry=registry)
    assert again.markers.modalities == model.markers.modalities
    assert again.generate("What do {d} and {w} show?", media=media, max_new_tokens=3, seed=0).text == answer.text
