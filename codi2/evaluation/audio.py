"""Audio metrics of the paper's Table 5: LSD, KL and FD, as AudioLDM's evaluation defines them.

References for the definitions (read to match them; the code here is our own):

- **LSD** — ``ssr_eval.metrics.AudioMetrics`` (haoheliu/ssr_eval), which AudioLDM's toolkit
  (haoheliu/audioldm_eval, ``EvaluationHelper.calculate_lsd``) calls on paired clips. At rate
  ``sr``: ``n_fft = int(2048 / (44100 / sr))`` (743 at 16 kHz), hop ``int(sr / 100)`` (160),
  periodic Hann window, centred frames (``librosa.stft`` defaults), magnitudes ``S``; then
  ``LSD = mean_t sqrt(mean_f log10(S_ref^2 / (S_gen + eps)^2 + eps)^2)`` with ``eps = 1e-12``.
  Before that the toolkit drops ``time_offset`` samples from the start of the generated clip
  (1120 = 7 hops, for its HiFi-GAN vocoder's delay; 0 by default here), removes each clip's mean,
  scales each to peak 1 and crops both to the shorter length.
- **KL** — ``audioldm_eval.metrics.kl.calculate_kl``: AudioSet classifier (PANNs CNN14) logits
  of each pair, turned into distributions, then
  ``KL(ref || gen) = sum_c p_ref * log(p_ref / (p_gen + 1e-6))`` averaged over pairs. The
  toolkit's headline ``KL`` uses ``softmax`` over the 527 logits (``activation="softmax"``,
  the default); its ``KL_Sigmoid`` applies ``sigmoid`` per class and the same formula.
- **FD** — ``audioldm_eval.metrics.fid.calculate_fid`` on the classifier's 2048-d embedding:
  the Fréchet distance between Gaussians fitted to the generated and the reference sets
  (:func:`codi2.evaluation.stats.frechet_distance`). Unpaired; needs at least 2 clips a side.

Clips are mono float32 :class:`~codi2.core.types.Media`; they are resampled to the rate each
metric works at. This module imports no torch: the classifier comes in from outside
(:mod:`codi2.evaluation.networks.cnn14` by default, or any registered one).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from codi2.core.types import Media
from codi2.errors import MediaError
from codi2.evaluation.base import MetricResult, check_items
from codi2.evaluation.stats import frechet_distance_features, kl_divergence_rows, sigmoid, softmax
from codi2.evaluation.toolkits import cite

__all__ = ["AudioClassifier", "FADMetric", "FDMetric", "KLMetric", "LSDMetric", "log_spectral_distance",
           "stft_magnitude"]


def stft_magnitude(x: np.ndarray, n_fft: int, hop_length: int, pad_mode: str = "constant") -> np.ndarray:
    """``|STFT|`` as ``[frames, n_fft // 2 + 1]`` — ``librosa.stft`` with its defaults.

    Periodic Hann window of ``n_fft``, frames centred (``n_fft // 2`` padding each side,
    zeros for ``pad_mode="constant"``, librosa >= 0.10's default; ``"reflect"`` was the default
    of earlier librosa).
    """
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    x = np.pad(x, pad, mode=pad_mode)
    if x.size < n_fft:
        raise ValueError(f"signal of {x.size - 2 * pad} samples is too short for n_fft={n_fft}")
    frames = 1 + (x.size - n_fft) // hop_length
    index = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return np.abs(np.fft.rfft(x[index] * window, n=n_fft, axis=-1))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    peak = np.abs(x).max()
    # an all-zero clip stays zero (the toolkit would divide by zero and return NaN)
    return x / peak if peak > 0 else x


def log_spectral_distance(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    sample_rate: int = 16000,
    n_fft: int | None = None,
    hop_length: int | None = None,
    eps: float = 1e-12,
    normalize: bool = True,
    time_offset: int = 0,
    pad_mode: str = "constant",
) -> float:
    """LSD between two clips at ``sample_rate`` (see the module docstring for the definition).

    ``n_fft`` / ``hop_length`` default to ``int(2048 * sr / 44100)`` / ``int(sr / 100)``.
    Identical clips give ~0 (exactly ``log10(1 + eps)``-sized terms); ``g = c * r`` with
    ``normalize=False`` gives ``2 * |log10(c)|``.
    """
    n_fft = n_fft or int(2048 / (44100 / sample_rate))
    hop_length = hop_length or int(sample_rate / 100)
    g = np.asarray(generated, dtype=np.float64)[time_offset:]
    r = np.asarray(reference, dtype=np.float64)
    if normalize:
        g, r = _normalise(g), _normalise(r)
    n = min(g.size, r.size)
    if n == 0:
        raise ValueError("LSD needs two non-empty clips")
    sg = stft_magnitude(g[:n], n_fft, hop_length, pad_mode)
    sr = stft_magnitude(r[:n], n_fft, hop_length, pad_mode)
    d = np.log10(sr**2 / (sg + eps) ** 2 + eps)
    return float(np.mean(np.sqrt(np.mean(d**2, axis=1))))


def _at_rate(item: Media, rate: int) -> np.ndarray:
    from codi2.core.audio import resample

    if not item.sample_rate:
        raise MediaError("audio without a sample rate", item=item.label)
    return resample(np.asarray(item.data, np.float32), int(item.sample_rate), rate)


class LSDMetric:
    """Log-spectral distance of paired clips (lower is better)."""

    name = "lsd"
    higher_is_better = False
    modality = "audio"
    needs = ("references",)

    def __init__(self, *, sample_rate: int = 16000, n_fft: int | None = None, hop_length: int | None = None,
                 eps: float = 1e-12, normalize: bool = True, time_offset: int = 0, pad_mode: str = "constant"):
        self.sample_rate = sample_rate
        self.kwargs = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "eps": eps,
                           "normalize": normalize, "time_offset": time_offset, "pad_mode": pad_mode}
        self.network = None
        self.matches = cite("audioldm-eval", f"EvaluationHelper.calculate_lsd(time_offset={time_offset}) "
                            f"-> ssr-eval AudioMetrics.lsd, at {sample_rate} Hz (the toolkit's main() uses "
                            f"time_offset=1120)")
        if (n_fft, hop_length, eps, normalize, pad_mode) != (None, None, 1e-12, True, "constant"):
            self.matches = "codi2's LSD with non-default options (no toolkit number)"

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, references, texts)
        values = []
        for g, r in zip(generated, references or []):
            try:
                values.append(log_spectral_distance(_at_rate(g, self.sample_rate),
                                                    _at_rate(r, self.sample_rate), **self.kwargs))
            except ValueError as exc:
                raise MediaError(f"lsd against {r.label}: {exc}", item=g.label) from None
        return MetricResult(float(np.mean(values)), values)


@runtime_checkable
class AudioClassifier(Protocol):
    """An audio tagging network for KL and FD.

    ``classify(items) -> (logits [N, C], embeddings [N, D])``: class logits before any
    activation, and the feature vector FD compares. ``sample_rate`` is informative (the
    classifier resamples its input itself).
    """

    name: str
    sample_rate: int

    def classify(self, items: list[Media]) -> tuple[np.ndarray, np.ndarray]: ...


class KLMetric:
    """Mean ``KL(reference || generated)`` of the classifier's class distributions (lower is better)."""

    name = "kl"
    higher_is_better = False
    modality = "audio"
    needs = ("references",)

    def __init__(self, classifier: AudioClassifier, *, activation: str = "softmax", eps: float = 1e-6):
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        self.classifier, self.activation, self.eps = classifier, activation, eps
        self.network = getattr(classifier, "network", None) or getattr(classifier, "name", "classifier")
        self.matches = cite("audioldm-eval", f"calculate_kl -> kullback_leibler_divergence_{activation}")
        if eps != 1e-6:
            self.matches = f"codi2's KL with eps={eps} (audioldm-eval uses 1e-6)"

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, references, texts)
        gen_logits, _ = self.classifier.classify(list(generated))
        ref_logits, _ = self.classifier.classify(list(references or []))
        act = softmax if self.activation == "softmax" else sigmoid
        values = kl_divergence_rows(act(ref_logits), act(gen_logits), eps=self.eps).tolist()
        return MetricResult(float(np.mean(values)), values, {"activation": self.activation})


class FDMetric:
    """Fréchet distance between the classifier embeddings of two sets of clips (lower is better)."""

    name = "fd"
    higher_is_better = False
    modality = "audio"
    needs = ("references",)

    def __init__(self, classifier: AudioClassifier):
        self.classifier = classifier
        self.network = getattr(classifier, "network", None) or getattr(classifier, "name", "classifier")
        self.matches = cite("audioldm-eval", "calculate_fid -> frechet_distance "
                                             "(of the classifier's embedding: the '2048' layer there)")

    def score(self, generated: list[Media], references: list[Media] | None = None,
              texts: list[str] | None = None) -> MetricResult:
        check_items(self, generated, references, texts, paired=False)
        refs = list(references or [])
        for role, items in (("generated", generated), ("reference", refs)):
            if len(items) < 2:
                raise MediaError(f"metric {self.name!r} fits a Gaussian to each set: needs at least 2 "
                                 f"{role} clips, got {len(items)}")
        _, gen_emb = self.classifier.classify(list(generated))
        _, ref_emb = self.classifier.classify(refs)
        value = frechet_distance_features(gen_emb, ref_emb)
        return MetricResult(value, None, {"generated": len(generated), "references": len(refs)})


class FADMetric(FDMetric):
    """Fréchet Audio Distance as ``frechet_audio_distance`` computes it with its PANNs model.

    The same Fréchet distance as :class:`FDMetric`; what differs is how clips reach the network:
    ``frechet_audio_distance`` feeds each clip as read (channels averaged, resampled), without
    AudioLDM's mean removal and 2-second padding — give it a classifier prepared that way (the
    ``fad`` metric's default ``classifier_options``). Its own ``score()`` in 0.3.4 concatenates the
    per-clip PANNs vectors into one long vector and so fits a 1-D Gaussian; this metric is the
    2048-d distance its ``calculate_frechet_distance`` computes on per-clip embeddings.
    """

    name = "fad"

    def __init__(self, classifier: AudioClassifier):
        super().__init__(classifier)
        self.matches = cite("frechet-audio-distance",
                            "FrechetAudioDistance(model_name='pann').get_embeddings per clip -> "
                            "calculate_frechet_distance (not its score(), which flattens the embeddings)")
