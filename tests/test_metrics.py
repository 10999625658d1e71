"""The metrics against their definitions, and the feature networks through their real loading path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from codi2.core.types import Media
from codi2.errors import ComponentLoadError, ConfigError, MediaError
from codi2.evaluation.audio import (
    FDMetric,
    KLMetric,
    LSDMetric,
    log_spectral_distance,
    stft_magnitude,
)
from codi2.evaluation.base import Metric, MetricResult
from codi2.evaluation.image import ImageSimilarity, TextImageSimilarity
from codi2.evaluation.stats import (
    frechet_distance,
    frechet_distance_features,
    kl_divergence_rows,
    softmax,
)
from codi2.registry import Registry

RNG = np.random.default_rng(0)


def audio(x, rate=16000, name=None):
    return Media("audio", np.asarray(x, np.float32), sample_rate=rate, name=name)


def image(seed, name=None, size=40):
    rng = np.random.default_rng(seed)
    return Media("image", rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8), name=name or f"img{seed}")


# --- LSD -------------------------------------------------------------------------------------


def test_lsd_is_zero_for_identical_clips():
    x = RNG.standard_normal(16000) * 0.3
    assert log_spectral_distance(x, x) < 1e-9


def test_lsd_of_a_scaled_clip_is_twice_the_log_ratio():
    x = RNG.standard_normal(8000)
    # normalisation removes the gain; without it every bin differs by the same factor
    assert log_spectral_distance(0.5 * x, x) < 1e-9
    assert log_spectral_distance(0.5 * x, x, normalize=False) == pytest.approx(2 * np.log10(2), rel=1e-9)


def test_lsd_matches_a_frame_by_frame_hand_computation():
    sr, n_fft, hop = 16000, 64, 16
    t = np.arange(400) / sr
    ref = np.sin(2 * np.pi * 440 * t) + 0.1 * RNG.standard_normal(t.size)
    gen = np.sin(2 * np.pi * 660 * t) + 0.1 * RNG.standard_normal(t.size)
    # the definition written out with a plain DFT loop: periodic Hann, zero-padded centred frames
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft) for n in range(n_fft)])
    k = np.arange(n_fft // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * np.arange(n_fft)[None, :] / n_fft)

    def mags(x):
        padded = np.concatenate([np.zeros(n_fft // 2), x, np.zeros(n_fft // 2)])
        starts = range(0, padded.size - n_fft + 1, hop)
        return np.array([np.abs(dft @ (padded[s:s + n_fft] * window)) for s in starts])

    g, r = mags(gen), mags(ref)
    per_frame = [np.sqrt(np.mean(np.log10(r[i] ** 2 / (g[i] + 1e-12) ** 2 + 1e-12) ** 2)) for i in range(len(r))]
    got = log_spectral_distance(gen, ref, sample_rate=sr, n_fft=n_fft, hop_length=hop, normalize=False)
    assert got == pytest.approx(float(np.mean(per_frame)), rel=1e-9)
    assert stft_magnitude(gen, n_fft, hop).shape == g.shape


def test_lsd_defaults_follow_the_toolkit_at_16k_and_offset_trims_the_generated_clip():
    x = RNG.standard_normal(4000)
    # n_fft 743 (odd): 371 samples of padding a side, 1 + (4000 + 742 - 743) // 160 frames
    assert stft_magnitude(x, int(2048 / (44100 / 16000)), 160).shape == (25, 372)
    delayed = np.concatenate([np.zeros(1120), x])
    assert log_spectral_distance(delayed, x) > 0.1
    assert log_spectral_distance(delayed, x, time_offset=1120) < 1e-9


def test_lsd_metric_resamples_and_names_bad_items():
    x = np.sin(2 * np.pi * 300 * np.arange(32000) / 32000)
    metric = LSDMetric()
    result = metric.score([audio(x, 32000, "a.wav")], [audio(x[::2], 16000, "a_ref.wav")])
    assert isinstance(metric, Metric) and result.count == 1 and result.mean < 0.5
    with pytest.raises(MediaError, match="b.png"):
        metric.score([Media("image", np.zeros((4, 4, 3), np.uint8), name="b.png")], [audio(x)])
    with pytest.raises(MediaError, match="2 generated but 1 references"):
        metric.score([audio(x), audio(x)], [audio(x)])


# --- FD ----------------------------------------------------------------------------------------


def test_fd_of_diagonal_gaussians_has_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_fd_agrees_with_the_sqrtm_formula_and_is_zero_for_one_set():
    a, b = RNG.standard_normal((200, 6)), RNG.standard_normal((150, 6)) @ RNG.standard_normal((6, 6)) + 1
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance_features(a, b) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-9)
    # a singular covariance (fewer samples than dimensions) still gives a finite, >= 0 value
    assert 0 <= frechet_distance_features(a[:3], b[:4]) < np.inf


def test_fd_of_small_sets_needs_no_d_by_d_matrix_and_equals_the_moment_formula():
    from codi2.evaluation.stats import gaussian_moments

    a, b = RNG.standard_normal((5, 40)), RNG.standard_normal((7, 40)) @ RNG.standard_normal((40, 40)) * 0.3 + 1
    # N < D: the nuclear norm of A B^T; N > D: eigenvalues of the moments — one value (the
    # eigenvalue route takes square roots of ~1e-14 round-off on the 35 null directions)
    assert frechet_distance_features(a, b) == pytest.approx(
        frechet_distance(*gaussian_moments(a), *gaussian_moments(b)), rel=1e-7)
    c, d = RNG.standard_normal((60, 4)), RNG.standard_normal((50, 4)) + 0.5
    assert frechet_distance_features(c, d) == pytest.approx(
        frechet_distance(*gaussian_moments(c), *gaussian_moments(d)), rel=1e-12)
    with pytest.raises(ValueError, match="widths differ"):
        frechet_distance_features(a, c)


# --- KID ---------------------------------------------------------------------------------------


def test_kid_is_the_unbiased_polynomial_mmd_and_subsamples_larger_sets():
    from codi2.evaluation.stats import kernel_distance

    x, y = RNG.standard_normal((6, 5)), RNG.standard_normal((6, 5)) + 0.3
    k = lambda p, q: (p @ q.T / 5 + 1) ** 3  # noqa: E731 - the kernel, written out
    expected = sum(k(x[i:i + 1], x[j:j + 1]).item() + k(y[i:i + 1], y[j:j + 1]).item()
                   for i in range(6) for j in range(6) if i != j) / 30 - 2 * k(x, y).mean()
    mean, std, m = kernel_distance(x, y)
    assert (mean, std, m) == (pytest.approx(expected, rel=1e-12), 0.0, 6)
    big = np.concatenate([y, RNG.standard_normal((4, 5))])
    first, spread, m = kernel_distance(x, big, subsets=20, seed=1)
    assert m == 6 and spread > 0 and first == kernel_distance(x, big, subsets=20, seed=1)[0]
    assert abs(kernel_distance(x, x)[0]) < 1e-9 or kernel_distance(x, x)[0] < 0  # unbiased: ~0 for one set


# --- KL ----------------------------------------------------------------------------------------


def test_kl_matches_scipy_and_is_zero_for_identical_distributions():
    p, q = softmax(RNG.standard_normal((5, 527))), softmax(RNG.standard_normal((5, 527)))
    expected = scipy.special.rel_entr(p, q + 1e-6).sum(axis=1)
    np.testing.assert_allclose(kl_divergence_rows(p, q), expected, rtol=1e-10)
    np.testing.assert_allclose(kl_divergence_rows(p, q, eps=0), scipy.special.rel_entr(p, q).sum(1), rtol=1e-10)
    assert np.all(kl_divergence_rows(p, p, eps=0) == 0)
    assert np.all(np.abs(kl_divergence_rows(p, p)) < 1e-3)  # eps=1e-6 per class, as the toolkit


class FakeClassifier:
    """Logits and embeddings looked up by item name: metrics can be checked exactly."""

    name, sample_rate = "fake", 16000

    def __init__(self, logits, embeddings):
        self.logits, self.embeddings = logits, embeddings

    def classify(self, items):
        return (np.stack([self.logits[m.name] for m in items]),
                np.stack([self.embeddings[m.name] for m in items]))


def test_kl_and_fd_metrics_follow_the_toolkit_formulas():
    import torch

    names = ["g0", "g1", "g2", "r0", "r1", "r2"]
    logits = {n: RNG.standard_normal(7) for n in names}
    emb = {n: RNG.standard_normal(4) for n in names}
    gen = [audio(np.zeros(10), name=n) for n in names[:3]]
    ref = [audio(np.zeros(10), name=n) for n in names[3:]]
    fake = FakeClassifier(logits, emb)
    g = torch.tensor(np.stack([logits[n] for n in names[:3]]))
    r = torch.tensor(np.stack([logits[n] for n in names[3:]]))
    for activation, act in (("softmax", lambda x: x.softmax(1)), ("sigmoid", torch.sigmoid)):
        toolkit = torch.nn.functional.kl_div((act(g) + 1e-6).log(), act(r), reduction="sum") / 3
        got = KLMetric(fake, activation=activation).score(gen, ref)
        assert got.mean == pytest.approx(float(toolkit), rel=1e-9) and got.count == 3
    fd = FDMetric(fake).score(gen, ref)
    assert fd.per_item is None
    assert fd.mean == pytest.approx(frechet_distance_features(np.stack([emb[n] for n in names[:3]]),
                                                              np.stack([emb[n] for n in names[3:]])))
    with pytest.raises(MediaError, match="at least 2"):
        FDMetric(fake).score(gen[:1], ref)


# --- cosine metrics ----------------------------------------------------------------------------


class FakeEmbedder:
    def __init__(self, vectors):
        self.vectors = vectors

    def embed_images(self, items):
        return np.stack([self.vectors[m.name] for m in items])

    def embed_texts(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def test_cosine_metrics_on_constructed_embeddings():
    e = FakeEmbedder({"a": np.array([1.0, 0, 0]), "b": np.array([1.0, 1, 0]), "c": np.array([0, 0, 2.0]),
                      "a cat": np.array([2.0, 0, 0]), "a dog": np.array([0, 3.0, 0])})
    im = lambda n: Media("image", np.zeros((2, 2, 3), np.uint8), name=n)
    sim = ImageSimilarity("dino", e).score([im("a"), im("a")], [im("b"), im("c")])
    assert sim.per_item == pytest.approx([1 / np.sqrt(2), 0.0]) and sim.mean == pytest.approx(0.5 / np.sqrt(2))
    t = TextImageSimilarity("clip-t", e).score([im("a"), im("b")], texts=["a cat", "a dog"])
    assert t.per_item == pytest.approx([1.0, 1 / np.sqrt(2)])
    # torchmetrics' CLIPScore: 100 x cosine per item, the *mean* clamped at 0
    score = TextImageSimilarity("clip-score", e, scale=100, clamp=True)
    assert score.score([im("a"), im("c")], texts=["a cat", "a cat"]).mean == pytest.approx(50.0)
    assert score.score([im("c")], texts=["a dog"]).mean == 0.0 and "torchmetrics" in score.matches
    with pytest.raises(MediaError, match="needs a text"):
        TextImageSimilarity("clip-t", e).score([im("a")])
    assert isinstance(MetricResult(1.0).to_dict(), dict)


# --- feature networks: tiny, saved, reloaded through the real path --------------------------


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    from codi2.evaluation.testing import save_tiny_clip, save_tiny_cnn14, save_tiny_dino

    root = tmp_path_factory.mktemp("nets")
    return {"dino": save_tiny_dino(root / "dino"), "clip": save_tiny_clip(root / "clip"),
            "cnn14": save_tiny_cnn14(root / "cnn14.pth")}


def test_dino_loads_from_a_directory_and_returns_cls_features(nets):
    import torch
    from transformers import ViTImageProcessor, ViTModel

    from codi2.evaluation.networks.vit import load_dino

    items = [image(1), image(2), image(1, name="again")]
    feats = load_dino(str(nets["dino"]), device="cpu").embed_images(items)
    model = ViTModel.from_pretrained(nets["dino"], add_pooling_layer=False).eval()
    pixels = ViTImageProcessor.from_pretrained(nets["dino"])(images=[np.asarray(m.data) for m in items[:2]],
                                                             return_tensors="pt").pixel_values
    with torch.no_grad():
        direct = model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(feats[:2], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(feats[2], feats[0])  # same content, embedded once
    with pytest.raises(ComponentLoadError, match="nowhere/dino"):
        load_dino("/nowhere/dino", device="cpu")


def test_clip_loads_from_a_directory_and_scores_like_the_model(nets):
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from codi2.evaluation.networks.clip import load_clip

    clip = load_clip(str(nets["clip"]), device="cpu")
    texts = ["a dog in the snow", "a red cube"]
    model = CLIPModel.from_pretrained(nets["clip"]).eval()
    tok = AutoTokenizer.from_pretrained(nets["clip"])(texts, padding=True, return_tensors="pt")
    pixels = CLIPImageProcessor.from_pretrained(nets["clip"])(
        images=[np.asarray(image(3).data)], return_tensors="pt").pixel_values
    with torch.no_grad():
        t = model.get_text_features(**tok)
        i = model.get_image_features(pixel_values=pixels)
    t, i = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (t, i))
    np.testing.assert_allclose(clip.embed_texts(texts), t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clip.embed_images([image(3)]), i.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ComponentLoadError, match="no-such-org/clip"):
        load_clip("no-such-org/clip", device="cpu")


def test_open_clip_backend_loads_a_local_weights_file(tmp_path):
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from codi2.evaluation.networks.clip import load_clip

    name = "codi2-tiny-eval-clip"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / f"{name}.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    clip = load_clip(name, backend="open_clip", pretrained=str(tmp_path / "w.safetensors"), device="cpu")
    with torch.no_grad():
        direct = model.encode_text(open_clip.get_tokenizer(name)(["a red cube"])).numpy()
    np.testing.assert_allclose(clip.embed_texts(["a red cube"]), direct, rtol=1e-5, atol=1e-6)
    assert clip.embed_images([image(4)]).shape == (1, 16)
    with pytest.raises(ComponentLoadError, match="not a local file"):
        load_clip(name, backend="open_clip", pretrained="laion2b_s34b_b79k", device="cpu")


def test_cnn14_checkpoint_round_trips_strictly(nets, tmp_path):
    import torch

    from codi2.evaluation.networks.cnn14 import Cnn14, Cnn14Config, convert_checkpoint, load_cnn14

    model = load_cnn14(nets["cnn14"])
    # a PANNs-style checkpoint with numpy training state beside the weights still loads (weights_only)
    state = torch.load(nets["cnn14"], weights_only=True)["model"]
    torch.save({"model": state, "iteration": np.int64(3), "sampler": {"queue": np.arange(4)}}, tmp_path / "x.pth")
    same = load_cnn14(tmp_path / "x.pth")
    safe = load_cnn14(convert_checkpoint(tmp_path / "x.pth", tmp_path / "x.safetensors"))
    wave = torch.randn(1, 24000)
    with torch.no_grad():
        logits, emb = model(wave)
        for other in (same, safe):
            np.testing.assert_allclose(other(wave)[0].numpy(), logits.numpy(), rtol=1e-5)
    assert logits.shape == (1, 10) and emb.shape == (1, 8)
    del state["fc1.bias"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(ComponentLoadError, match="fc1.bias"):
        load_cnn14(tmp_path / "broken.pth")
    with pytest.raises(ComponentLoadError, match="missing.pth.*Download"):
        load_cnn14(tmp_path / "missing.pth")
    # the full-size 16 kHz model has exactly the released checkpoint's tensors
    with torch.device("meta"):
        full = Cnn14(Cnn14Config()).state_dict()
    widths = (1, 64, 128, 256, 512, 1024, 2048)
    expected = {"spectrogram_extractor.stft.conv_real.weight": (257, 1, 512),
                "spectrogram_extractor.stft.conv_imag.weight": (257, 1, 512),
                "logmel_extractor.melW": (257, 64), "fc1.weight": (2048, 2048), "fc1.bias": (2048,),
                "fc_audioset.weight": (527, 2048), "fc_audioset.bias": (527,)}
    for bn, c in [("bn0", 64)] + [(f"conv_block{i}.bn{j}", widths[i]) for i in range(1, 7) for j in (1, 2)]:
        expected.update({f"{bn}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})
        expected[f"{bn}.num_batches_tracked"] = ()
    for i in range(1, 7):
        expected[f"conv_block{i}.conv1.weight"] = (widths[i], widths[i - 1], 3, 3)
        expected[f"conv_block{i}.conv2.weight"] = (widths[i], widths[i], 3, 3)
    assert {k: tuple(v.shape) for k, v in full.items()} == expected


def test_front_end_matches_librosa_definitions():
    import torch
    from transformers.audio_utils import mel_filter_bank

    from codi2.evaluation.networks.frontend import Spectrogram, mel_filters

    # transformers' Slaney filter bank is written to match librosa.filters.mel
    ref = mel_filter_bank(num_frequency_bins=257, num_mel_filters=64, min_frequency=50, max_frequency=8000,
                          sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(16000, 512, 64, 50, 8000), ref.T, atol=1e-7)
    x = torch.randn(2, 4000)
    ours = Spectrogram(512, 160)(x)[:, 0].transpose(1, 2)
    theirs = torch.stft(x, 512, 160, window=torch.hann_window(512), center=True, pad_mode="reflect",
                        return_complex=True).abs() ** 2
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * float(theirs.max()))


# --- the plugin --------------------------------------------------------------------------------


def test_plugin_registers_metrics_without_importing_torch():
    code = ("import sys, codi2.evaluation.plugin, codi2.evaluation.commands;"
            "from codi2.registry import Registry;"
            "assert codi2.evaluation.plugin.default_metrics(Registry.create(entry_points=False), 'audio');"
            "bad = [m for m in ('torch', 'transformers', 'scipy') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_metrics_and_resolves_classifiers(nets):
    from codi2.evaluation import plugin
    from codi2.registry import hookimpl

    registry = Registry()
    registry.register_plugin(plugin, "metrics")
    assert {"dino", "clip-i", "clip-t", "clipsim", "clip-score", "fid", "kid", "lsd", "kl", "fd",
            "fad"} <= set(registry.names("metric"))
    # fad feeds CNN14 the clips as read (frechet_audio_distance's way); fd as AudioLDM does
    fad = plugin.build_metric(registry, "fad", {"classifier_options": {"checkpoint": str(nets["cnn14"]),
                                                                       "device": "cpu"}})
    fd = plugin.build_metric(registry, "fd", {"classifier_options": {"checkpoint": str(nets["cnn14"]),
                                                                     "device": "cpu"}})
    assert (fad.classifier.remove_mean, fad.classifier.min_samples) == (False, 0)
    assert (fd.classifier.remove_mean, fd.classifier.min_samples) == (True, 32000)
    assert fad.classifier.model is fd.classifier.model  # one network in memory
    assert "frechet-audio-distance" in fad.matches and "audioldm-eval" in fd.matches
    assert plugin.build_metric(registry, "lsd", {"time_offset": 1120}).kwargs["time_offset"] == 1120
    with pytest.raises(ConfigError, match="lsd.*pad_mode"):
        plugin.build_metric(registry, "lsd", {"pad_mode": "wrap"})
    kl = plugin.build_metric(registry, "kl", {"classifier_options": {"checkpoint": str(nets["cnn14"]),
                                                                     "device": "cpu"}})
    clip = audio(np.sin(np.arange(20000) / 7.0), name="x.wav")
    assert kl.score([clip], [clip]).mean == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ConfigError, match="audio classifier"):
        plugin.build_metric(registry, "panns-cnn14")

    fake = FakeClassifier({"x.wav": np.zeros(3)}, {"x.wav": np.zeros(2)})

    class Tagger:  # a third-party classifier, found through the caller's registry
        @hookimpl
        def codi2_register_metrics(self, register):
            register("tagger", load=lambda options: fake, role=plugin.CLASSIFIER_ROLE)

    registry.register_plugin(Tagger(), "tagger")
    assert plugin.build_metric(registry, "kl", {"classifier": "tagger"}).classifier is fake
    with pytest.raises(ConfigError, match="'lsd' is not an audio classifier"):
        plugin.build_metric(registry, "fd", {"classifier": "lsd"})
