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
    "kernel_distance",
    "kl_divergence_rows",
    "l2_normalize",
    "polynomial_mmd2",
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
    """Fréchet distance between the Gaussians fitted (mean, ``np.cov``) to two feature sets.

    With fewer vectors than dimensions (a few hundred clips of 2048-d CNN14 embeddings) it never
    forms a ``D x D`` matrix: with ``A = (X1 - mu1) / sqrt(n1 - 1)`` and ``B`` likewise,
    ``sigma1 = A^T A`` and ``sigma2 = B^T B``, so ``tr(sigma_i) = ||A||_F^2`` and the non-zero
    eigenvalues of ``sigma1 sigma2`` are the squared singular values of ``A B^T``
    (``n1 x n2``): ``tr((sigma1 sigma2)^(1/2))`` is the nuclear norm of ``A B^T``. Same value,
    milliseconds instead of the seconds an eigendecomposition of two 2048 x 2048 matrices takes.
    """
    x1 = np.asarray(features1, dtype=np.float64)
    x2 = np.asarray(features2, dtype=np.float64)
    for x in (x1, x2):
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature widths differ: {x1.shape[1]} and {x2.shape[1]}")
    if min(x1.shape[0], x2.shape[0]) > x1.shape[1]:
        return frechet_distance(*gaussian_moments(x1), *gaussian_moments(x2))
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    a = (x1 - mu1) / np.sqrt(x1.shape[0] - 1)
    b = (x2 - mu2) / np.sqrt(x2.shape[0] - 1)
    tr_covmean = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * tr_covmean)
    return max(value, 0.0)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0) -> float:
    """Unbiased MMD² of two ``[m, D]`` samples of one size with ``k(a, b) = (gamma a·b + coef0)^degree``
    (``gamma`` defaults to ``1 / D``): the mean off-diagonal ``k(x, x')`` and ``k(y, y')`` minus
    twice the mean ``k(x, y)`` — KID's estimator (Bińkowski et al. 2018)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = x.shape[0]
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (gamma * x @ x.T + coef0) ** degree
    kyy = (gamma * y @ y.T + coef0) ** degree
    kxy = (gamma * x @ y.T + coef0) ** degree
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kernel_distance(features1: np.ndarray, features2: np.ndarray, *, subsets: int = 100,
                    subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0, seed: int = 0) -> tuple[float, float, int]:
    """KID: ``(mean, std, m)`` of :func:`polynomial_mmd2` over ``subsets`` random subsets of
    ``m = min(subset_size, N1, N2)`` rows a side (drawn with ``numpy`` from ``seed``). When both
    sets have exactly ``m`` rows every subset is the whole set: one exact value, std 0."""
    x1, x2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"KID needs two [N, D] feature sets of one width, got {x1.shape} and {x2.shape}")
    m = min(subset_size, x1.shape[0], x2.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors a side, got {x1.shape[0]} and {x2.shape[0]}")
    if x1.shape[0] == x2.shape[0] == m:
        return polynomial_mmd2(x1, x2, degree, gamma, coef0), 0.0, m
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(x1[rng.choice(x1.shape[0], m, replace=False)],
                              x2[rng.choice(x2.shape[0], m, replace=False)], degree, gamma, coef0)
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values)), m
