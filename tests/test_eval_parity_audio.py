"""Parity of codi2's audio metrics with the field's own toolkits, on the same weights and files.

References (test-only; installed with ``--no-deps`` as in ``.ci/run``, since their declared
dependencies include torchaudio, laion-clap and a Python-2-only ``wave`` package):

- ``panns-inference`` — PANNs' CNN14 model code, with its torchlibrosa/librosa front end;
- ``audioldm-eval`` (+ ``ssr-eval``) — AudioLDM's evaluation toolkit: LSD, KL, FD;
- ``frechet-audio-distance`` — FAD with its PANNs model.

Each is run through its own loading code on a full-size CNN14 with random weights (the released
16 kHz layout; the toolkits hard-code its widths): ``audioldm_eval`` reads it from
``ckpt/Cnn14_16k_mAP=0.438.pth`` under the working directory, ``frechet_audio_distance`` from its
``ckpt_dir``, so neither downloads. Modules those packages import but these paths never call
(torchaudio, laion_clap, encodec, PANNs' label download) are replaced by small stand-ins during
import only; torchaudio's ``load`` is soundfile, which is how torchaudio reads WAV files.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from _toolkits import require

from codi2.evaluation.networks.cnn14 import Cnn14, Cnn14Config, load_cnn14, save_cnn14

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RATE = 16000

def _stand_in(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _import_with(module: str, stand_ins: dict[str, types.ModuleType]) -> types.ModuleType:
    """Import ``module`` with ``stand_ins`` in ``sys.modules``, which are removed again afterwards
    (a module named torchaudio must not outlive the import: transformers would try to use it)."""
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module(module)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _read_like_torchaudio(path):
    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(wave.T.copy()), rate


def _no_resampling(*args, **kwargs):
    raise AssertionError("the parity clips are 16 kHz: the toolkit must not resample them")


TORCHAUDIO = {"torchaudio": _stand_in("torchaudio", load=_read_like_torchaudio,
                                      functional=_stand_in("torchaudio.functional", resample=_no_resampling))}


# --- weights and clips -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ours() -> Cnn14:
    """A full-size 16 kHz CNN14 (64 mel bins, 2048-d embedding, 527 classes), every tensor random.

    Initialised so that its outputs depend on the clip (PyTorch's default init fades the signal
    over six conv blocks: every clip would get the same embedding to 1e-6 and KL/FD would be ~0)."""
    torch.manual_seed(0)
    model = Cnn14(Cnn14Config())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        model.bn0.running_mean.uniform_(-45, -35)  # log-mel dB of the clips below, roughly
        model.bn0.running_var.uniform_(50, 150)
        for linear in (model.fc1, model.fc_audioset):
            torch.nn.init.normal_(linear.weight, std=(2.0 / linear.in_features) ** 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(ours, tmp_path_factory) -> Path:
    """Our random weights in PANNs' checkpoint format (``{"model": state_dict}``)."""
    return save_cnn14(ours, tmp_path_factory.mktemp("cnn14") / "Cnn14_16k_mAP=0.438.pth")


def _clip(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    tones = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) for _ in range(3))
    return (tones + 0.05 * rng.standard_normal(t.size) + rng.uniform(-0.05, 0.05)).astype(np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Generated and reference folders paired by name; 16 kHz PCM WAV, one clip under 2 s (padded),
    clips with a DC offset (removed) and generated clips longer than their references (cropped)."""
    root = tmp_path_factory.mktemp("audio")
    gen, ref = root / "generated", root / "references"
    gen.mkdir(), ref.mkdir()
    for i, (name, seconds) in enumerate((("a", 2.5), ("b", 1.5), ("c", 3.0), ("d", 2.2))):
        reference = _clip(i, seconds)
        n = round(0.9 * reference.size)
        generated = 0.6 * reference[:n] + 0.4 * _clip(100 + i, seconds)[:n]
        sf.write(ref / f"{name}.wav", reference, RATE)
        sf.write(gen / f"{name}.wav", np.concatenate([np.zeros(1120, np.float32), generated]), RATE)
    return gen, ref


# --- PANNs' model code ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def panns() -> types.ModuleType:
    """``panns_inference.models`` without the package ``__init__`` (which fetches AudioSet's label
    list at import time)."""
    require("panns-inference")
    require("torchlibrosa")
    root = Path(importlib.util.find_spec("panns_inference").submodule_search_locations[0])
    package = types.ModuleType("panns_inference")
    package.__path__ = [str(root)]  # a package whose __init__ never runs
    saved = sys.modules.get("panns_inference")
    sys.modules["panns_inference"] = package
    try:
        return importlib.import_module("panns_inference.models")
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "panns_inference"]:
            del sys.modules[name]
        if saved is not None:
            sys.modules["panns_inference"] = saved


FRONT_END = ("spectrogram_extractor.", "logmel_extractor.")
VARIANTS = {16000: dict(window_size=512, hop_size=160, fmax=8000),
            32000: dict(window_size=1024, hop_size=320, fmax=14000)}


@pytest.mark.parametrize("rate", [16000, 32000])
def test_cnn14_equals_panns_model_code_front_end_included(panns, ours, rate, tmp_path):
    """The same body weights in both networks; each builds its own mel front end (PANNs' with
    torchlibrosa and librosa), so the STFT kernels and mel bank are compared too."""
    v = VARIANTS[rate]
    ref = panns.Cnn14(sample_rate=rate, window_size=v["window_size"], hop_size=v["hop_size"], mel_bins=64,
                      fmin=50, fmax=v["fmax"], classes_num=527).eval()
    body = {k: t for k, t in ours.state_dict().items() if not k.startswith(FRONT_END)}
    missing, unexpected = ref.load_state_dict(body, strict=False)
    assert sorted(missing) == sorted(k for k in ref.state_dict() if k.startswith(FRONT_END)) and not unexpected
    mine = Cnn14(Cnn14Config(sample_rate=rate, n_fft=v["window_size"], hop_length=v["hop_size"],
                             fmax=v["fmax"])).eval()
    mine.load_state_dict(body, strict=False)  # our own front end, built by our code
    for key in [k for k in ref.state_dict() if k.startswith(FRONT_END)]:
        torch.testing.assert_close(mine.state_dict()[key], ref.state_dict()[key], rtol=0, atol=1e-6)

    logits = {}
    ref.fc_audioset.register_forward_hook(lambda module, args, out: logits.update(ref=out))
    wave = torch.from_numpy(np.stack([_clip(7, 1.0), _clip(8, 1.0)]))
    with torch.no_grad():
        our_logits, our_embedding = mine(wave)
        out = ref(wave)
    assert our_embedding.shape == (2, 2048) and (our_embedding > 0).float().mean() > 0.2
    torch.testing.assert_close(our_logits, logits["ref"], rtol=0, atol=1e-5)
    torch.testing.assert_close(our_embedding, out["embedding"], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.sigmoid(our_logits), out["clipwise_output"], rtol=0, atol=1e-5)

    # a checkpoint written from PANNs' own model (its front-end tensors included) loads strictly
    path = tmp_path / "panns.pth"
    torch.save({"model": ref.state_dict()}, path)
    loaded = load_cnn14(path)
    assert loaded.config.sample_rate == rate
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave)[1], out["embedding"], rtol=0, atol=1e-5)


# --- AudioLDM's evaluation toolkit ------------------------------------------------------------


class _NoVGGish:
    """audioldm_eval's EvaluationHelper builds a VGGish FAD from torch.hub in its constructor; its
    number is not one codi2 reports, so it is left out (score() returns no entry)."""

    def __init__(self, *args, **kwargs):
        self.model = torch.nn.Identity()

    def score(self, *args, **kwargs):
        return {}


@pytest.fixture(scope="module")
def audioldm_numbers(folders, checkpoint, tmp_path_factory):
    """``EvaluationHelper(16000).main(generated, references)``: the toolkit end to end."""
    require("audioldm-eval")
    require("ssr-eval")
    toolkit = _import_with("audioldm_eval.eval", TORCHAUDIO)
    # its mel for PSNR/SSIM (not LSD, KL or FD) calls librosa < 0.10's positional signatures
    import librosa

    stft = importlib.import_module("audioldm_eval.audio.stft")
    stft.pad_center = lambda data, size, **kw: librosa.util.pad_center(data, size=size, **kw)
    stft.librosa_mel_fn = lambda sr, n_fft, n_mels, fmin, fmax: librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    work = tmp_path_factory.mktemp("audioldm_cwd")
    (work / "ckpt").mkdir()
    # the toolkit loads ckpt/<name> relative to the working directory (downloading the pair
    # only when the 32 kHz file is absent); at 16 kHz it reads the 16 kHz file
    (work / "ckpt" / "Cnn14_16k_mAP=0.438.pth").symlink_to(checkpoint)
    (work / "ckpt" / "Cnn14_mAP=0.431.pth").write_bytes(b"")
    cwd, fad = Path.cwd(), toolkit.FrechetAudioDistance
    os.chdir(work)
    toolkit.FrechetAudioDistance = _NoVGGish
    try:
        helper = toolkit.EvaluationHelper(16000, "cpu")
        return helper.main(str(folders[0]), str(folders[1]))
    finally:
        toolkit.FrechetAudioDistance = fad
        os.chdir(cwd)


def _score(folders, checkpoint, names, **options):
    from codi2.evaluation import plugin
    from codi2.evaluation.tasks import score_folders
    from codi2.registry import Registry

    registry = Registry()
    registry.register_plugin(plugin, "metrics")
    classifier = {"classifier_options": {"checkpoint": str(checkpoint), "device": "cpu"}}
    opts = {n: {**(classifier if n in ("kl", "fd", "fad") else {}), **options.get(n, {})}
            for n in names}
    return score_folders(*folders, registry=registry, metrics=names, metric_options=opts)


@pytest.mark.slow  # the toolkit's scipy sqrtm of a 2048 x 2048 product alone takes 10-60 s
def test_lsd_kl_fd_equal_audioldm_eval_on_the_same_folders(audioldm_numbers, folders, checkpoint):
    result = _score(folders, checkpoint, ["lsd", "kl", "fd"], lsd={"time_offset": 1120})
    sigmoid = _score(folders, checkpoint, ["kl"], kl={"activation": "sigmoid"})
    ours = result.scores["all"]
    theirs = audioldm_numbers
    assert ours["lsd"] == pytest.approx(theirs["lsd"], rel=1e-5)
    # the toolkit sums 527 float32 terms; codi2 works in float64
    assert ours["kl"] == pytest.approx(theirs["kullback_leibler_divergence_softmax"], rel=1e-4, abs=5e-5)
    assert sigmoid.scores["all"]["kl"] == pytest.approx(theirs["kullback_leibler_divergence_sigmoid"],
                                                        rel=1e-4, abs=5e-5)
    assert ours["fd"] == pytest.approx(theirs["frechet_distance"], rel=1e-4)
    assert ours["kl"] > 0.01 and ours["fd"] > 0.1 and ours["lsd"] > 0.1  # the sets do differ
    # the report cites the toolkit version and the network for every number
    assert "audioldm-eval 0.0.3" in result.sources["fd"]["matches"]
    assert "CNN14 16 kHz" in result.sources["fd"]["network"]
    assert "time_offset=1120" in result.sources["lsd"]["matches"]


# --- frechet_audio_distance ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fad_toolkit(checkpoint, tmp_path_factory):
    require("frechet-audio-distance")
    stand_ins = {**TORCHAUDIO, "laion_clap": _stand_in("laion_clap", CLAP_Module=None),
                 "encodec": _stand_in("encodec", EncodecModel=None)}
    module = _import_with("frechet_audio_distance", stand_ins)
    ckpt_dir = tmp_path_factory.mktemp("fad_ckpt")
    (ckpt_dir / "Cnn14_16k_mAP%3D0.438.pth").symlink_to(checkpoint)  # the name it downloads to
    hub_dir = torch.hub.get_dir()
    try:  # its constructor points torch.hub at ckpt_dir for the whole process: put it back
        fad = module.FrechetAudioDistance(ckpt_dir=str(ckpt_dir), model_name="pann", sample_rate=16000,
                                          audio_load_worker=1, verbose=False)
    finally:
        torch.hub.set_dir(hub_dir)
    fad.model.to("cpu")
    fad.device = torch.device("cpu")
    return types.SimpleNamespace(fad=fad, load=importlib.import_module("frechet_audio_distance.utils").load_audio_task)


@pytest.mark.slow  # 16 full-size CNN14 passes
def test_fad_features_and_distance_equal_frechet_audio_distance(fad_toolkit, folders, checkpoint):
    from codi2.core.media import load_media
    from codi2.evaluation.plugin import load_classifier
    from codi2.evaluation.stats import frechet_distance_features

    fad = fad_toolkit.fad
    names = sorted(p.name for p in folders[0].iterdir())
    # per clip, through the toolkit's own reading and model: [2048] each
    theirs = {side: np.stack([fad.get_embeddings([fad_toolkit.load(str(d / n), 16000, 1)], 16000)
                              for n in names])
              for side, d in zip(("gen", "ref"), folders)}
    classifier = load_classifier("panns-cnn14", {"checkpoint": str(checkpoint), "device": "cpu",
                                                 "remove_mean": False, "min_seconds": 0.0})
    mine = {side: classifier.classify([load_media(d / n, "audio") for n in names])[1]
            for side, d in zip(("gen", "ref"), folders)}
    for side in mine:
        np.testing.assert_allclose(mine[side], theirs[side], rtol=0, atol=1e-5)

    result = _score(folders, checkpoint, ["fad"])
    value = result.scores["all"]["fad"]
    assert value == pytest.approx(frechet_distance_features(theirs["gen"], theirs["ref"]), rel=1e-6)
    # its Fréchet formula on the same statistics (64 of the 2048 dimensions: scipy's sqrtm of a
    # 2048 x 2048 complex matrix alone takes half a minute; audioldm_eval's test above runs it in full)
    stats = [fad.calculate_embd_statistics(theirs[s][:, :64]) for s in ("gen", "ref")]
    assert frechet_distance_features(theirs["gen"][:, :64], theirs["ref"][:, :64]) == pytest.approx(
        float(np.real(fad.calculate_frechet_distance(*stats[0], *stats[1]))), rel=1e-6)
    # why codi2 does not use its score() for PANNs (0.3.4): get_embeddings concatenates the
    # per-clip [2048] vectors into one 1-D array, so score() fits a 1-D Gaussian to all values
    # (and with scipy 1.17, whose sqrtm of a 1 x 1 matrix returns no error estimate, it fails and
    # returns -1)
    flat = fad.get_embeddings([fad_toolkit.load(str(folders[0] / n), 16000, 1) for n in names], 16000)
    assert flat.shape == (len(names) * 2048,)
    assert np.ndim(fad.calculate_embd_statistics(flat)[1]) == 0  # one variance, not a covariance
    assert "frechet-audio-distance 0.3.4" in result.sources["fad"]["matches"]
