"""Cluster metrics: cluster error (CE), cluster distance (CD), cluster std (CS) (Hackstein et al. 2023).

Definitions follow S. Hackstein's 2024 ``cluster_loss`` code, whose docstrings cite Hackstein et al. 2023,
Eq. 1-3 (the metrics Ramunno et al. 2024 report), with the *fraction*-based cluster error:

1. k-means (scikit-learn, ``K`` centres, fixed ``random_state``) is fitted on the **reference** set: real
   features. Every other set ("evaluated" set) is assigned to the nearest centre (Euclidean distance ``d_i``
   of each vector to its assigned centre).
2. **CE** = (1/K) Σ_k (1 − f_k / f_k^ref)², with ``f_k`` the fraction of the evaluated set in cluster ``k`` and
   ``f_k^ref`` that of the reference set. Ideal 0. An empty evaluated cluster adds 1/K.
3. **CD_k** = D_k / D_k^ref with ``D_k = sqrt(mean_{i in k} d_i²)`` (the RMS distance to centre ``k`` of the set's
   members of cluster ``k``) and ``D_k^ref`` the same for the reference set. Ideal 1; > 1 means samples lie
   farther from the typical real images than real images do.
4. **CS_k** = S_k / S_k^ref with ``S_k = sqrt(mean_{i in k} (d_i − D_k)²)``: the spread of the distances about
   their RMS ``D_k`` (Hackstein's Eq. 3; this is *not* the usual standard deviation about the mean) divided by
   the reference's. Ideal 1.
5. The headline CD and CS are the means of CD_k and CS_k over the clusters where each is defined. Both are
   undefined (NaN, left out of the mean) where the evaluated set has no member in ``k`` (counted in
   ``n_empty``). CD_k needs 2+ reference members in ``k`` (one member *is* its centre: RMS 0) and CS_k 3+ with
   a non-zero reference spread (two members sit at the same distance from their midpoint: spread 0).
   Clusters that k-means leaves without reference members (duplicate vectors) are dropped from CE too.

"Reference" is always the set k-means was fitted on, so by construction the reference itself scores
CE = 0, CD = CS = 1.

Resampling and the real-vs-real benchmark (the scores mean nothing without it): for each of ``repeats``
resamplings (seed ``seed + r``), the real set is split at random into two disjoint halves. Half A is the
reference (k-means is fitted on it); the evaluated sets are half B (the **benchmark**, real vs real) and the
generated set, both drawn without replacement to the same size ``n = min(|B|, N_generated)``, so both are
compared with the same reference at the same sample size. The metrics are reported as mean ± standard
deviation over the resamplings. With the authors' benchmark of CE 0.002, CD 1.001, CS 0.998, a generated set
should be judged by its distance from the benchmark column, not from the ideal values.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from flaresynth.errors import FlaresynthError


@dataclass
class ClusterReference:
    """k-means centres fitted on a reference set, with that set's per-cluster statistics."""

    centers: np.ndarray  # (K, D)
    counts: np.ndarray  # (K,) reference members per cluster
    fraction: np.ndarray  # (K,) occupancy fraction of the reference set
    rms: np.ndarray  # (K,) RMS distance of reference members to their centre
    spread: np.ndarray  # (K,) spread of those distances about the RMS
    n: int

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])


def _assign(features: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each vector and the Euclidean distance to it."""
    # |x - c|² = |x|² - 2 x·c + |c|², clipped because rounding can make it slightly negative
    d2 = (features**2).sum(1)[:, None] - 2.0 * features @ centers.T + (centers**2).sum(1)[None, :]
    idx = np.argmin(d2, axis=1)
    return idx, np.sqrt(np.clip(d2[np.arange(len(idx)), idx], 0.0, None))


def _per_cluster(assign: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cluster counts, RMS distance and spread about the RMS (NaN for empty clusters)."""
    counts = np.bincount(assign, minlength=k).astype(np.float64)
    rms = np.full(k, np.nan)
    spread = np.full(k, np.nan)
    for c in np.flatnonzero(counts):
        d = dist[assign == c]
        rms[c] = np.sqrt(np.mean(d**2))
        spread[c] = np.sqrt(np.mean((d - rms[c]) ** 2))
    return counts, rms, spread


def fit_reference(features, k: int = 10, seed: int = 0) -> ClusterReference:
    """Fit k-means (``n_init=10``, ``random_state=seed``) on reference features (N, D), N >= k."""
    from sklearn.cluster import KMeans

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < k:
        raise FlaresynthError(f"cluster metrics: {x.shape[0]} reference vectors for K = {k} clusters: need at least K")
    with warnings.catch_warnings():
        # duplicate vectors make k-means find fewer distinct clusters; handled below (empty reference clusters)
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    centers = km.cluster_centers_.astype(np.float64)
    assign, dist = _assign(x, centers)
    counts, rms, spread = _per_cluster(assign, dist, k)
    return ClusterReference(centers=centers, counts=counts, fraction=counts / counts.sum(), rms=rms, spread=spread, n=x.shape[0])


def cluster_scores(ref: ClusterReference, features) -> dict:
    """CE, CD, CS of an evaluated set against a reference (see the module docstring).

    Returns ``CE``, ``CD``, ``CS`` (floats; NaN when no cluster is defined) and per-cluster arrays
    ``fraction``, ``CD_k``, ``CS_k``, with ``n_empty`` (clusters without evaluated members).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != ref.centers.shape[1]:
        raise FlaresynthError(f"cluster metrics: features {x.shape} do not match centres {ref.centers.shape}")
    assign, dist = _assign(x, ref.centers)
    counts, rms, spread = _per_cluster(assign, dist, ref.k)
    fraction = counts / max(counts.sum(), 1.0)
    live = ref.fraction > 0
    ce = float(np.mean((1.0 - fraction[live] / ref.fraction[live]) ** 2))
    # A cluster of one reference member has its centre on it (RMS 0 up to rounding), one of two has both
    # members at the same distance (spread 0): neither gives a scale to divide by.
    with np.errstate(divide="ignore", invalid="ignore"):
        cd_k = np.where((ref.counts >= 2) & (ref.rms > 0), rms / ref.rms, np.nan)
        cs_k = np.where((ref.counts >= 3) & (ref.spread > 1e-6 * ref.rms), spread / ref.spread, np.nan)
    return {
        "CE": ce,
        "CD": float(np.nanmean(cd_k)) if np.isfinite(cd_k).any() else float("nan"),
        "CS": float(np.nanmean(cs_k)) if np.isfinite(cs_k).any() else float("nan"),
        "fraction": fraction,
        "CD_k": cd_k,
        "CS_k": cs_k,
        "n_empty": int((live & (counts == 0)).sum()),
    }


def resampling_plan(n_real: int, n_generated: int, repeats: int = 5, seed: int = 0,
                    real_labels=None, generated_labels=None, groups=None) -> list[dict]:
    """Index sets of each resampling: ``reference`` (real half A), ``benchmark`` (real half B) and ``generated``.

    ``benchmark`` and ``generated`` have the same size ``min(|B|, n_generated)``. Without labels the generated
    images are drawn uniformly without replacement. With ``real_labels`` and ``generated_labels`` (class indices,
    -1 for none) the generated draw is **class-matched** to the benchmark half: each class gets the share it has
    among the real images (largest-remainder quotas over the classes the generator produced; with replacement
    inside a class only when its quota exceeds what was generated). Otherwise a generator sampled uniformly over
    classes would be compared with a real split dominated by the common classes, and the distribution metrics
    would measure the class imbalance rather than the images.

    With ``groups`` (one id per real image: its UTC day, days of one flare event merged) the halves are made of
    **whole groups**: the groups are shuffled and taken into half A up to the count closest to half of the images, the rest
    form B, so no day (and no event) lies in both halves and the real-vs-real benchmark compares independent
    samples rather than near-copies of the same disk. With fewer than 2 groups the halves are random
    (``"grouped": False`` in each entry says so).
    """
    if n_real < 4 or n_generated < 2:
        raise FlaresynthError(f"evaluation needs at least 4 real and 2 generated images (got {n_real} and {n_generated})")
    if repeats < 1:
        raise FlaresynthError(f"--repeats {repeats}: expected at least 1")
    plan = []
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        grouped = groups is not None and len(np.unique(groups)) >= 2
        if grouped:
            a, b = _group_halves(rng, np.asarray(groups))
            b = rng.permutation(b)
        else:
            perm = rng.permutation(n_real)
            half = (n_real + 1) // 2
            a, b = perm[:half], perm[half:]
        n = min(len(b), n_generated)
        plan.append(
            {
                "grouped": bool(grouped),
                "reference": np.sort(a),
                "benchmark": np.sort(b[:n]),
                "generated": np.sort(
                    rng.choice(n_generated, n, replace=False)
                    if real_labels is None or generated_labels is None
                    else _class_matched_draw(rng, np.asarray(generated_labels), np.asarray(real_labels)[b[:n]], n)
                ),
            }
        )
    return plan


def _group_halves(rng, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two halves made of whole groups (A: the shuffled groups up to the count closest to half)."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    sizes = np.bincount(inverse)
    order = rng.permutation(len(uniq))
    cum = np.cumsum(sizes[order])
    n_a = int(np.clip(np.argmin(np.abs(cum - len(groups) / 2)) + 1, 1, len(uniq) - 1))  # A closest to half
    in_a = np.zeros(len(uniq), dtype=bool)
    in_a[order[:n_a]] = True
    return np.flatnonzero(in_a[inverse]), np.flatnonzero(~in_a[inverse])


def _class_matched_draw(rng, generated_labels: np.ndarray, target_labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` generated indices whose class shares follow ``target_labels`` (see :func:`resampling_plan`)."""
    classes, counts = np.unique(target_labels[target_labels >= 0], return_counts=True)
    pools = {int(c): np.flatnonzero(generated_labels == c) for c in classes}
    keep = [i for i, c in enumerate(classes) if len(pools[int(c)])]
    if not keep:
        return rng.choice(len(generated_labels), n, replace=False)
    classes, counts = classes[keep], counts[keep]
    exact = counts / counts.sum() * n
    quotas = np.floor(exact).astype(int)
    quotas[np.argsort(exact - quotas)[::-1][: n - quotas.sum()]] += 1
    drawn = [rng.choice(pools[int(c)], q, replace=q > len(pools[int(c)])) for c, q in zip(classes, quotas) if q]
    return np.concatenate(drawn)


def effective_k(n_reference: int, k: int) -> int:
    """K actually used: at most a tenth of the reference set, so a cluster holds ~10 real vectors or more
    (with fewer, the per-cluster RMS and spread are too noisy to divide by)."""
    return int(max(1, min(k, n_reference // 10)))


def cluster_metrics(real, generated, k: int = 10, repeats: int = 5, seed: int = 0, plan: list[dict] | None = None) -> dict:
    """Cluster metrics of generated features against real features, with the real-vs-real benchmark.

    Parameters
    ----------
    real, generated : feature arrays (N_real, D), (N_gen, D).
    k : number of k-means clusters (reduced to a tenth of the reference half when that is smaller).
    repeats, seed : resamplings (see the module docstring); ``plan`` overrides them with explicit index sets
        from :func:`resampling_plan`, so several metrics can share the same halves.

    Returns a dict with ``generated`` and ``benchmark`` entries, each holding ``CE``, ``CD``, ``CS`` as
    ``{"mean", "std"}`` over the resamplings, the per-cluster lists ``CD_k``, ``CS_k``, ``fraction`` of the
    first resampling (None where undefined) and ``n_empty`` per resampling; plus ``reference_fraction``, ``k`` (used), ``k_requested``, ``repeats``, ``n_reference`` and ``n_evaluated``.
    """
    real = np.asarray(real, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    plan = plan if plan is not None else resampling_plan(len(real), len(generated), repeats, seed)
    k_used = effective_k(len(plan[0]["reference"]), k)
    runs: dict[str, list[dict]] = {"generated": [], "benchmark": []}
    first_ref = None
    for p in plan:
        ref = fit_reference(real[p["reference"]], k_used, seed=seed)
        first_ref = first_ref or ref
        runs["generated"].append(cluster_scores(ref, generated[p["generated"]]))
        runs["benchmark"].append(cluster_scores(ref, real[p["benchmark"]]))
    out = {
        "k": k_used,
        "k_requested": int(k),
        "repeats": len(plan),
        "n_reference": int(len(plan[0]["reference"])),
        "n_evaluated": int(len(plan[0]["generated"])),
        "reference": "k-means fitted on a random half of the real features in each resampling",
    }
    for which, scores in runs.items():
        entry = {}
        for name in ("CE", "CD", "CS"):
            v = np.array([s[name] for s in scores], dtype=np.float64)
            v = v[np.isfinite(v)]
            entry[name] = {"mean": float(v.mean()) if v.size else float("nan"), "std": float(v.std()) if v.size else float("nan")}
        # cluster numbers differ between resamplings (each has its own k-means), so per-cluster values are
        # those of the first resampling, beside its reference occupancy
        for name in ("CD_k", "CS_k", "fraction"):
            entry[name] = [None if not np.isfinite(v) else float(v) for v in scores[0][name]]
        entry["n_empty"] = [s["n_empty"] for s in scores]
        out[which] = entry
    out["reference_fraction"] = first_ref.fraction.tolist()
    return out
