"""The statistics behind the metrics: cosine similarity, KL divergence, Fréchet distance.

numpy and scipy only (no torch), so the definitions can be read, tested and reused on their own.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "cosine_rows",
    "frechet_distance",
    "frechet_distance_features",
    "gaussian_moments",
    "kl_divergence_rows",
    "l2_normalize",
    "sigmoid",
    "softmax",
]


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` in float64 (a zero row stays zero instead of becoming NaN)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` arrays: ``[N]`` values in [-1, 1]."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape != b.shape:
        raise ValueError(f"cosine_rows needs arrays of one shape, got {a.shape} and {b.shape}")
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)  # shift for stability; softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)) without overflow warnings


def kl_divergence_rows(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``KL(p_i || q_i) = sum_c p_ic * log(p_ic / (q_ic + eps))`` for each row ``i``.

    This is ``torch.nn.functional.kl_div(log(q + eps), p, reduction="sum")`` per row — the form
    AudioLDM's evaluation toolkit uses (``p`` = reference, ``q`` = generated); terms with
    ``p_ic = 0`` are 0. ``eps`` keeps ``log`` finite; it also makes the KL of two identical
    distributions slightly negative (about ``-eps`` per class), as in the toolkit.
    """
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    q = np.atleast_2d(np.asarray(q, dtype=np.float64))
    if p.shape != q.shape:
        raise ValueError(f"KL needs distributions of one shape, got {p.shape} and {q.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q + eps)), 0.0)
    return terms.sum(axis=-1)


def gaussian_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of ``[N, D]`` features (``np.cov``)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The trace of the matrix square root is computed as ``sum(sqrt(eig(A sigma2 A)))`` with
    ``A = sigma1^(1/2)``: ``A sigma2 A`` is similar to ``sigma1 sigma2``, so the two square roots
    have the same eigenvalues, but ``A sigma2 A`` is symmetric PSD, so ``eigh`` is exact and
    real — no complex round-off to discard and no diagonal offset for a singular product
    (``scipy.linalg.sqrtm(sigma1 @ sigma2)``, what the FID/AudioLDM code calls, agrees to
    round-off on well-conditioned inputs; see ``tests/test_metrics.py``).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"Fréchet distance needs matching moments, got mu {mu1.shape} / {mu2.shape}, "
            f"sigma {s1.shape} / {s2.shape}"
        )
    a = _sqrt_psd(s1)
    eig = np.linalg.eigvalsh((a @ s2 @ a + (a @ s2 @ a).T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)  # the distance is >= 0; a negative value is round-off


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted (mean, ``np.cov``) to two feature sets."""
    mu1, s1 = gaussian_moments(features1)
    mu2, s2 = gaussian_moments(features2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]} and {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2)
