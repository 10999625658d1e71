"""Loading, validating and saving media: good files come back right, bad ones fail by name."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from codi2.core.media import (
    MediaLimits,
    audio_bytes,
    load_media,
    media_to_bytes,
    save_media,
    sniff_format,
)
from codi2.core.modality import resolve_modalities
from codi2.core.types import Media
from codi2.errors import (
    MediaDecodeError,
    MediaError,
    MediaLimitError,
    MediaNotFoundError,
    UnknownModalityError,
)

RNG = np.random.default_rng(0)


def _rgb(h=24, w=32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _wav(path: Path, seconds=0.5, sr=44100, channels=2, subtype="PCM_16") -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone, 0.5 * tone][:channels], axis=1).astype(np.float32)
    sf.write(str(path), data, sr, subtype=subtype)
    return data


def _mp4(path: Path, frames=10, fps=8.0, h=32, w=48) -> np.ndarray:
    import imageio.v3 as iio

    # smooth frames so that lossy H.264 keeps them close
    y, x = np.mgrid[0:h, 0:w]
    video = np.stack(
        [
            np.stack([(x * 5 + i * 10) % 256, (y * 7) % 256, np.full_like(x, 128)], -1)
            for i in range(frames)
        ]
    ).astype(np.uint8)
    iio.imwrite(path, video, fps=fps, codec="libx264")
    return video


# --- images ---------------------------------------------------------------------------------


def test_png_path_bytes_pil_and_array_agree(tmp_path):
    arr = _rgb()
    path = tmp_path / "photo.png"
    path.write_bytes(_png_bytes(arr))
    from_path = load_media(path, "image")
    assert from_path.modality == "image" and from_path.name == "photo.png"
    assert from_path.data.dtype == np.uint8 and from_path.data.shape == (24, 32, 3)
    assert np.array_equal(from_path.data, arr)
    for source in (
        str(path),
        path.read_bytes(),
        Image.fromarray(arr),
        arr,
        arr.astype(np.float32) / 255,
    ):
        assert np.array_equal(load_media(source, "image").data, arr)
    chw = load_media(np.moveaxis(arr, -1, 0), "image")  # channels-first, as torch keeps images
    assert np.array_equal(chw.data, arr)


def test_image_from_torch_tensor_and_media():
    import torch

    arr = _rgb()
    tensor = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert np.array_equal(load_media(tensor, "image", name="t").data, arr)
    again = load_media(Media("image", arr, name="orig"), "image")
    assert again.name == "orig" and np.array_equal(again.data, arr)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, format="JPEG", exif=exif, quality=95)
    loaded = load_media(path, "image").data
    assert loaded.shape == (40, 20, 3)  # portrait after the transpose
    assert loaded[:15].mean() > 200 and loaded[-15:].mean() < 50  # white half now on top


def test_alpha_greyscale_and_palette_become_rgb(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :4, 3] = 255  # left opaque red, right fully transparent
    out = load_media(_png_bytes(rgba, "RGBA"), "image").data
    assert (out[:, :4] == [255, 0, 0]).all() and (out[:, 4:] == 255).all()  # composited on white
    assert np.array_equal(load_media(rgba, "image").data, out)

    grey = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    assert np.array_equal(
        load_media(_png_bytes(grey, "L"), "image").data, np.repeat(grey[..., None], 3, -1)
    )
    assert np.array_equal(load_media(grey, "image").data, np.repeat(grey[..., None], 3, -1))

    grey16 = grey.astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, format="PNG")
    assert np.array_equal(load_media(buf.getvalue(), "image").data[..., 0], grey)

    palette = Image.fromarray(_rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    path = tmp_path / "pal.gif"
    palette.save(path)
    assert load_media(path, "image").data.shape == (8, 8, 3)


def test_truncated_png_is_an_error_not_a_grey_image(tmp_path):
    data = _png_bytes(_rgb(64, 64))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaDecodeError, match="cut.png") as info:
        load_media(path, "image")
    assert "PNG" in str(info.value)
    with pytest.raises(MediaDecodeError, match="'b'"):
        load_media(data[: len(data) // 2], "image", name="b")


def test_bad_image_files(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaNotFoundError, match="nope.png"):
        load_media(missing, "image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(MediaLimitError, match="empty"):
        load_media(empty, "image")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image at all\n")
    with pytest.raises(MediaDecodeError, match=r"notes\.png.*looks like text"):
        load_media(text, "image")
    with pytest.raises(MediaDecodeError, match="unknown format"):
        load_media(RNG.integers(0, 256, 1000, dtype=np.uint8).tobytes(), "image", name="noise")
    with pytest.raises(MediaDecodeError, match="looks like audio"):
        buf = io.BytesIO()
        sf.write(buf, np.zeros(1600, np.float32), 16000, format="WAV")
        load_media(buf.getvalue(), "image")
    with pytest.raises(MediaDecodeError, match="not a regular file"):
        load_media(tmp_path, "image")


def test_image_limits_and_bad_arrays():
    big = _png_bytes(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(MediaLimitError, match="10000 pixels"):
        load_media(big, "image", limits=MediaLimits(max_image_pixels=5000))
    with pytest.raises(MediaLimitError, match="byte limit"):
        load_media(big, "image", limits=MediaLimits(max_bytes=100))
    with pytest.raises(MediaLimitError, match="minimum side"):
        load_media(np.zeros((4, 100, 3), np.uint8), "image", limits=MediaLimits(min_image_side=8))
    with pytest.raises(MediaLimitError, match="empty"):
        load_media(np.zeros((0, 5, 3), np.uint8), "image")
    with pytest.raises(MediaDecodeError, match=r"in \[0, 1\]"):
        load_media(np.full((4, 4, 3), 2.0), "image", name="hot")
    with pytest.raises(MediaDecodeError, match="NaN"):
        load_media(np.full((4, 4, 3), np.nan), "image")
    with pytest.raises(MediaDecodeError, match="channels"):
        load_media(np.zeros((6, 6, 5), np.uint8), "image")
    with pytest.raises(MediaDecodeError, match="shape"):
        load_media(np.zeros(5, np.uint8), "image")
    with pytest.raises(MediaDecodeError, match="dtype"):
        load_media(np.full((4, 4, 3), 1000, np.int32), "image")
    with pytest.raises(MediaDecodeError, match="source type"):
        load_media(object(), "image")


# --- audio ----------------------------------------------------------------------------------


def test_stereo_44k_wav_becomes_mono_16k(tmp_path):
    path = tmp_path / "tone.wav"
    data = _wav(path, seconds=0.5, sr=44100, channels=2)
    media = load_media(path, "audio", sample_rate=16000)
    assert media.sample_rate == 16000 and media.data.dtype == np.float32 and media.data.ndim == 1
    assert len(media.data) == 8000 and media.duration == pytest.approx(0.5)
    assert media.meta["source_sample_rate"] == 44100
    assert np.abs(media.data).max() <= 1.0
    # the mix-down of a 0.5 and a 0.25 amplitude tone has amplitude 0.375
    assert np.abs(media.data[1000:-1000]).max() == pytest.approx(0.375, abs=0.01)
    native = load_media(path, "audio", sample_rate=None)
    assert native.sample_rate == 44100 and len(native.data) == len(data)


def test_audio_arrays_tuples_and_tensors():
    import torch

    x = (0.3 * np.sin(np.linspace(0, 100, 8000))).astype(np.float32)
    assert np.array_equal(load_media(x, "audio").data, x)  # bare array: already at sample_rate
    pair = load_media((x, 8000), "audio", sample_rate=16000)
    assert pair.sample_rate == 16000 and len(pair.data) == 16000
    stereo = np.stack([x, x])  # [channels, samples]
    assert np.allclose(load_media(stereo, "audio").data, x)
    assert np.allclose(load_media(stereo.T, "audio").data, x)  # [samples, channels]
    assert np.allclose(load_media(torch.from_numpy(x).half(), "audio").data, x, atol=1e-3)
    pcm = (x * 32767).astype(np.int16)
    assert np.allclose(load_media(pcm, "audio").data, x, atol=1e-4)
    loud = load_media(x * 4, "audio")
    assert np.abs(loud.data).max() == pytest.approx(1.0) and loud.meta["peak_normalized_from"] > 1
    resampled = load_media(
        Media("audio", x, sample_rate=8000, name="m"), "audio", sample_rate=16000
    )
    assert resampled.name == "m" and resampled.sample_rate == 16000 and len(resampled.data) == 16000
    with pytest.raises(MediaDecodeError, match="sample rate"):
        load_media(x, "audio", sample_rate=None)


def test_bad_audio(tmp_path):
    path = tmp_path / "cut.wav"
    _wav(path, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaDecodeError, match=r"cut\.wav.*truncated WAV"):
        load_media(path, "audio")
    with pytest.raises(MediaDecodeError, match="NaN"):
        load_media(np.array([0.0, np.nan] * 1000, np.float32), "audio", name="nan")
    nan_file = tmp_path / "nan.wav"
    sf.write(str(nan_file), np.full(1600, np.inf, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(MediaDecodeError, match=r"nan\.wav.*NaN or infinite"):
        load_media(nan_file, "audio")
    with pytest.raises(MediaLimitError, match="longer than 1.0 s"):
        load_media(np.zeros(32000, np.float32), "audio", limits=MediaLimits(max_audio_seconds=1.0))
    long_file = tmp_path / "long.wav"
    _wav(long_file, seconds=2.0, sr=16000, channels=1)
    with pytest.raises(MediaLimitError, match=r"long\.wav.*longer than"):
        load_media(long_file, "audio", limits=MediaLimits(max_audio_seconds=1.0))
    with pytest.raises(MediaLimitError, match="shorter than"):
        load_media(np.zeros(100, np.float32), "audio")
    with pytest.raises(MediaLimitError, match="empty"):
        load_media(np.zeros(0, np.float32), "audio")
    with pytest.raises(MediaDecodeError, match="looks like image"):
        load_media(_png_bytes(_rgb()), "audio", name="pic")
    with pytest.raises(MediaDecodeError, match="dtype"):
        load_media(np.zeros(1600, bool), "audio")
    with pytest.raises(MediaDecodeError, match="shape"):
        load_media(np.zeros((2, 2, 1600), np.float32), "audio")


# --- video ----------------------------------------------------------------------------------


def test_mp4_frames_and_fps(tmp_path):
    path = tmp_path / "clip.mp4"
    video = _mp4(path, frames=10, fps=8.0)
    media = load_media(path, "video")
    assert media.data.shape == (10, 32, 48, 3) and media.data.dtype == np.uint8
    assert media.fps == pytest.approx(8.0) and media.name == "clip.mp4"
    assert np.abs(media.data.astype(int) - video).mean() < 8  # lossy, but the same picture
    sub = load_media(path.read_bytes(), "video", video_frames=4)
    assert sub.data.shape == (4, 32, 48, 3) and sub.meta["frame_indices"] == [0, 3, 6, 9]
    assert sub.fps == pytest.approx(8.0 * 4 / 10)
    assert np.array_equal(sub.data[1], media.data[3])


def test_video_arrays_and_lists():
    frames = RNG.integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
    media = load_media(frames, "video")
    assert media.fps == 8.0 and np.array_equal(media.data, frames)
    assert load_media((frames, 24), "video").fps == 24.0
    listed = load_media([Image.fromarray(f) for f in frames], "video", fps=12)
    assert listed.fps == 12.0 and np.array_equal(listed.data, frames)
    fchw = np.moveaxis(frames, -1, 1).astype(np.float32) / 255  # [F, C, H, W] floats
    assert np.array_equal(load_media(fchw, "video").data, frames)
    sub = load_media(frames, "video", video_frames=3)
    assert sub.meta["frame_indices"] == [0, 2, 5] and sub.fps == pytest.approx(4.0)
    with pytest.raises(MediaDecodeError, match="differ in size"):
        load_media([frames[0], frames[0][:4]], "video", name="v")
    with pytest.raises(MediaLimitError, match="frame limit"):
        load_media(frames, "video", limits=MediaLimits(max_video_frames=5))
    with pytest.raises(MediaLimitError, match="pixel limit"):
        load_media(frames, "video", limits=MediaLimits(max_video_pixels=50))
    with pytest.raises(MediaLimitError, match="empty"):
        load_media([], "video")


def test_bad_video(tmp_path):
    path = tmp_path / "clip.mp4"
    _mp4(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:200])
    with pytest.raises(MediaDecodeError, match=r"cut\.mp4.*not a readable video"):
        load_media(cut, "video")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaDecodeError, match=r"junk\.mp4"):
        load_media(junk, "video")
    # the index at the front (as save_media writes it), the frames cut off half way
    whole = save_media(
        Media("video", RNG.integers(0, 256, (12, 16, 16, 3), np.uint8)), tmp_path / "w"
    )
    half = tmp_path / "half.mp4"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(MediaDecodeError, match=r"half\.mp4.*corrupt or truncated video"):
        load_media(half, "video")
    with pytest.raises(MediaDecodeError, match="not a video.*image"):
        load_media(_png_bytes(_rgb()), "video")
    with pytest.raises(MediaLimitError, match="longer than"):
        load_media(path, "video", limits=MediaLimits(max_video_seconds=0.5))
    with pytest.raises(MediaLimitError, match="frame limit"):
        load_media(path, "video", limits=MediaLimits(max_video_frames=4))
    assert (
        load_media(
            path, "video", video_frames=4, limits=MediaLimits(max_video_frames=4)
        ).data.shape[0]
        == 4
    )


# --- text, modality, sniffing ---------------------------------------------------------------


def test_text_and_unknown_modality(tmp_path):
    assert load_media("hello", "text").data == "hello"
    (tmp_path / "a.txt").write_text("from file", encoding="utf-8")
    assert load_media(tmp_path / "a.txt", "text").data == "from file"
    with pytest.raises(MediaDecodeError, match="UTF-8"):
        load_media(b"\xff\xfe\x00bad", "text")
    with pytest.raises(UnknownModalityError, match="unknown modality 'smell'; registered: image, audio, video, text"):
        load_media("x.png", "smell")
    with pytest.raises(MediaDecodeError, match="is an audio item, expected image"):
        load_media(Media("audio", np.zeros(10, np.float32), sample_rate=16000), "image")


def test_odd_sources(tmp_path):
    data = _png_bytes(_rgb(64, 64))
    cut = tmp_path / "lazy.png"
    cut.write_bytes(data[: len(data) // 2])
    # Pillow decodes only when asked, inside load_media: the error must still be ours
    with Image.open(cut) as lazy, pytest.raises(MediaDecodeError, match="truncated"):
        load_media(lazy, "image", name="lazy")
    with pytest.raises(MediaNotFoundError, match="not a usable path"):
        load_media("x" * 5000, "image")
    with pytest.raises(MediaNotFoundError, match="URLs are not fetched"):
        load_media("https://example.com/cat.png", "image")
    loud = tmp_path / "loud.wav"
    sf.write(str(loud), np.full(1600, 3.0, np.float32), 16000, subtype="FLOAT")
    media = load_media(loud, "audio")
    assert media.meta["peak_normalized_from"] == pytest.approx(3.0) and media.data.max() == 1.0
    with pytest.raises(UnknownModalityError):
        save_media(Media("smell", b""), tmp_path / "s")


def test_errors_share_one_base(tmp_path):
    for source, modality in ((tmp_path / "x.wav", "audio"), (b"junk", "image"), (b"", "video")):
        with pytest.raises(MediaError):
            load_media(source, modality)


def test_sniffing(tmp_path):
    def sniff_modality(source):  # the registered modalities' specs recognise files
        return resolve_modalities().sniff(source).name

    png = _png_bytes(_rgb())
    assert sniff_format(png) == "png" and sniff_modality(png) == "image"
    wav = tmp_path / "t.wav"
    _wav(wav, seconds=0.1)
    assert sniff_modality(wav) == "audio" and sniff_modality(wav.read_bytes()) == "audio"
    mp4 = tmp_path / "c.mp4"
    _mp4(mp4, frames=2)
    assert sniff_modality(mp4.read_bytes()) == "video"
    disguised = tmp_path / "really_a_wav.png"
    disguised.write_bytes(wav.read_bytes())
    assert sniff_modality(disguised) == "audio"  # magic bytes beat the suffix
    assert sniff_modality(tmp_path / "not_there.flac") == "audio"  # suffix when no file
    assert sniff_modality(b"plain words") == "text"
    with pytest.raises(UnknownModalityError, match="not a file of any registered modality"):
        sniff_modality(b"\x00\x01\x02\x03")  # never None


def test_data_uri():
    import base64

    arr = _rgb(4, 4)
    uri = "data:image/png;base64," + base64.b64encode(_png_bytes(arr)).decode()
    assert np.array_equal(load_media(uri, "image").data, arr)


# --- saving ---------------------------------------------------------------------------------


def test_save_round_trips(tmp_path):
    arr = _rgb()
    image = Media("image", arr, name="i")
    assert np.array_equal(load_media(image.save(tmp_path / "out" / "i.png"), "image").data, arr)
    smooth = np.broadcast_to(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (24, 32, 3))
    jpg = save_media(Media("image", smooth), tmp_path / "i.jpg")
    assert sniff_format(jpg.read_bytes()) == "jpeg"
    assert np.abs(load_media(jpg, "image").data.astype(int) - smooth).mean() < 3
    assert save_media(image, tmp_path / "noext") == tmp_path / "noext.png"
    assert save_media(image, tmp_path / "odd.xyz").name == "odd.xyz.png"

    x = (0.5 * np.sin(np.linspace(0, 200, 16000))).astype(np.float32)
    audio = Media("audio", x, sample_rate=16000)
    back = load_media(save_media(audio, tmp_path / "a.wav"), "audio")
    assert back.sample_rate == 16000 and np.allclose(back.data, x, atol=1e-4)
    exact = load_media(audio_bytes(audio, "wav", subtype="FLOAT"), "audio")
    assert np.array_equal(exact.data, x)
    assert np.allclose(
        load_media(save_media(audio, tmp_path / "a.flac"), "audio").data, x, atol=1e-4
    )
    assert save_media(audio, tmp_path / "a").suffix == ".wav"

    y, xx = np.mgrid[0:31, 0:45]  # odd sides: padded to even for H.264
    frames = np.stack(
        [np.stack([(xx * 5 + i * 20) % 256, y * 8, np.full_like(y, 90)], -1) for i in range(5)]
    )
    video = Media("video", frames.astype(np.uint8), fps=10.0)
    mp4 = save_media(video, tmp_path / "v.mp4")
    back = load_media(mp4, "video")
    assert back.data.shape == (5, 32, 46, 3) and back.fps == pytest.approx(10.0)
    assert np.abs(back.data[:, :31, :45].astype(int) - frames).mean() < 8
    gif = load_media(save_media(video, tmp_path / "v.gif"), "video")
    assert gif.data.shape == (5, 31, 45, 3) and gif.fps == pytest.approx(10.0)

    text = Media("text", "héllo")
    assert save_media(text, tmp_path / "t").read_text(encoding="utf-8") == "héllo"


def test_media_to_bytes():
    arr = _rgb(6, 6)
    png = media_to_bytes(Media("image", arr))
    assert sniff_format(png) == "png" and np.array_equal(load_media(png, "image").data, arr)
    assert sniff_format(media_to_bytes(Media("image", arr), "jpg")) == "jpeg"
    wav = media_to_bytes(Media("audio", np.zeros(1600, np.float32), sample_rate=16000))
    assert sniff_format(wav) == "wav"
    mp4 = media_to_bytes(Media("video", np.zeros((2, 8, 8, 3), np.uint8), fps=4.0))
    assert sniff_format(mp4) == "mp4"
    with pytest.raises(MediaDecodeError, match="cannot encode image as 'wav'; choose from png, jpg, jpeg"):
        media_to_bytes(Media("image", arr), "wav")
    assert sniff_format(media_to_bytes(Media("video", np.zeros((2, 8, 8, 3), np.uint8), fps=4.0), ".gif")) == "gif"


def test_importing_media_does_not_import_torch():
    code = (
        "import sys, codi2.core.media, codi2.core.audio; "
        "heavy = [m for m in ('torch', 'PIL', 'soundfile', 'imageio_ffmpeg') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_gif_video_decodes_without_ffmpeg_losslessly_and_names_damage(tmp_path):
    frames = np.stack([np.full((8, 10, 3), (40 * i, 200 - 30 * i, 90), np.uint8) for i in range(6)])
    path = save_media(Media("video", frames, fps=4.0), tmp_path / "clip.gif")
    back = load_media(path, "video")
    assert np.array_equal(back.data, frames) and back.fps == pytest.approx(4.0)
    three = load_media(path, "video", video_frames=3)
    assert np.array_equal(three.data, frames[[0, 2, 5]]) and three.meta["frame_indices"] == [0, 2, 5]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MediaDecodeError, match="clip.gif.*not a readable GIF"):
        load_media(path, "video")
