"""Fréchet distance and kernel (MMD) distance between two sets of feature vectors.

Fréchet distance (Heusel et al. 2017; the formula on Ramunno's AGU slide)::

    FD = ||mu_1 - mu_2||² + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

with ``mu``, ``S`` the mean and the (ddof = 1) covariance of each set. The trace of the matrix square root
is computed without ``sqrtm`` of the non-symmetric product: ``Tr (S_1 S_2)^{1/2} = Tr (A S_2 A)^{1/2}`` with
``A = S_1^{1/2}`` (both symmetric positive semi-definite, so ``A S_2 A`` is too and its eigenvalues are the
eigenvalues of ``S_1 S_2``). Two symmetric eigen-decompositions in float64, tiny negative eigenvalues from
rounding clipped to zero: stable for rank-deficient covariances (fewer samples than dimensions), where
``scipy.linalg.sqrtm`` of the product may return complex parts or fail. The same value as torchmetrics'
``_compute_fid`` (eigenvalues of ``S_1 S_2``) to rounding.

The name "FID" belongs to Inception-v3 features only; with other encoders this is "FD_<encoder>".

Kernel distance (KID, Bińkowski et al. 2018): the unbiased estimate of the squared maximum mean discrepancy
with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``, averaged over random subsets of both sets
(100 subsets of up to 1000 vectors, as torch-fidelity and clean-fid do). Unbiased, so its expectation is 0
for two samples of one distribution whatever their size (it can come out slightly negative), unlike FD,
whose estimate is biased upwards for small sets.
"""

from __future__ import annotations

import numpy as np

from flaresynth.errors import FlaresynthError


def _as_features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise FlaresynthError(f"{name}: features of shape {x.shape}: expected (N, D)")
    if not np.isfinite(x).all():
        raise FlaresynthError(f"{name}: features contain NaN or inf")
    return x


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) with ddof = 1, float64, of features (N, D); N >= 2."""
    x = _as_features(features, "feature_statistics")
    if x.shape[0] < 2:
        raise FlaresynthError(f"feature_statistics: {x.shape[0]} vector(s): need at least 2 for a covariance")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr (S_1 S_2)^{1/2}`` for symmetric PSD ``S_1``, ``S_2`` (see the module docstring)."""
    a = _psd_sqrt(np.asarray(sigma1, dtype=np.float64))
    m = a @ np.asarray(sigma2, dtype=np.float64) @ a
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in squared feature units.

    Clipped at 0: rounding can leave ``-1e-13`` for identical statistics.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise FlaresynthError(
            f"frechet_distance: statistics of shapes {mu1.shape} {sigma1.shape} and {mu2.shape} {sigma2.shape} do not match"
        )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def frechet_distance(features1, features2) -> float:
    """Fréchet distance between two sets of feature vectors (N1, D) and (N2, D).

    With fewer vectors than dimensions (common: 200 images, 1280-d EfficientNet features) the work moves
    to sample space: with centred data ``X_i`` and ``S_i = X_iᵀ X_i / (n_i - 1)``, the non-zero eigenvalues of
    ``S_1 S_2`` are the squared singular values of ``M = X_1 X_2ᵀ / sqrt((n_1 - 1)(n_2 - 1))``, so
    ``Tr (S_1 S_2)^{1/2}`` is the sum of M's singular values: an (n_1, n_2) SVD instead of two (D, D)
    eigen-decompositions. Same number, to rounding.
    """
    x = _as_features(features1, "frechet_distance")
    y = _as_features(features2, "frechet_distance")
    if x.shape[1] != y.shape[1]:
        raise FlaresynthError(f"frechet_distance: feature dimensions {x.shape[1]} and {y.shape[1]} differ")
    (n1, d), n2 = x.shape, y.shape[0]
    if min(n1, n2) >= d:
        return frechet_distance_from_stats(*feature_statistics(x), *feature_statistics(y))
    if min(n1, n2) < 2:
        raise FlaresynthError("frechet_distance: need at least 2 vectors in each set")
    mu1, mu2 = x.mean(0), y.mean(0)
    xc, yc = x - mu1, y - mu2
    trace1, trace2 = (xc**2).sum() / (n1 - 1), (yc**2).sum() / (n2 - 1)
    nuclear = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(max(diff @ diff + trace1 + trace2 - 2.0 * nuclear, 0.0))


def _poly_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    return (a @ b.T / a.shape[1] + coef0) ** degree


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = kxx.shape[0], kyy.shape[0]
    # unbiased: the diagonal (self-similarity) terms are left out of the within-set means
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD² between samples ``x`` (m, D) and ``y`` (n, D), kernel ``(x·y / D + coef0) ** degree``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return _mmd2_from_kernels(_poly_kernel(x, x, degree, coef0), _poly_kernel(y, y, degree, coef0), _poly_kernel(x, y, degree, coef0))


def kernel_distance(
    features1, features2, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation over ``subsets`` random subsets of the unbiased polynomial MMD².

    Each subset draws ``min(subset_size, N1 // 2, N2 // 2)`` vectors (at least 2) from each set without
    replacement: at most half of each set, so that the subsets differ and the std says how much the estimate
    moves (with subsets as large as a whole set every subset is that set and the std is 0 up to rounding).
    Returns ``(mean, std)`` in squared (feature/√D) units; ideal value 0.
    """
    x = _as_features(features1, "kernel_distance")
    y = _as_features(features2, "kernel_distance")
    if x.shape[1] != y.shape[1]:
        raise FlaresynthError(f"kernel_distance: feature dimensions {x.shape[1]} and {y.shape[1]} differ")
    size = max(2, min(subset_size, x.shape[0] // 2, y.shape[0] // 2))
    if min(x.shape[0], y.shape[0]) < 2:
        raise FlaresynthError("kernel_distance: need at least 2 vectors in each set")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(x.shape[0], size, replace=False), rng.choice(y.shape[0], size, replace=False)) for _ in range(subsets)]
    if x.shape[0] + y.shape[0] <= 6000:
        # the kernels once, then each subset is a sub-block: the same numbers at a fraction of the cost
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        values = [_mmd2_from_kernels(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)]) for i, j in draws]
    else:
        values = [polynomial_mmd2_unbiased(x[i], y[j]) for i, j in draws]
    values = np.asarray(values)
    return float(values.mean()), float(values.std())
