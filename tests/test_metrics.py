"""Fréchet distance, KID, cluster metrics and classification scores, against closed forms and torchmetrics."""

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

from flaresynth.errors import FlaresynthError
from flaresynth.metrics.classification import classification_report
from flaresynth.metrics.cluster import cluster_metrics, cluster_scores, fit_reference, resampling_plan
from flaresynth.metrics.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_distance,
    polynomial_mmd2_unbiased,
)


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------------------- Fréchet
def test_fd_of_diagonal_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # commuting covariances
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fd_of_general_gaussians_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 12
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # the textbook (pytorch-fid) route, computed independently
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_from_large_samples_approaches_the_closed_form():
    rng = np.random.default_rng(1)
    n = 40_000
    x = rng.normal(size=(n, 4)) * np.sqrt([1.0, 2.0, 3.0, 4.0])
    y = rng.normal(size=(n, 4)) * np.sqrt([2.0, 2.0, 1.0, 1.0]) + [1.0, 0.0, 0.0, 0.0]
    expected = 1.0 + (1 - np.sqrt(2)) ** 2 + 0.0 + (np.sqrt(3) - 1) ** 2 + (2 - 1) ** 2  # 2.7075
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.05)


def test_fd_of_a_set_with_itself_is_zero_even_rank_deficient():
    rng = np.random.default_rng(2)
    for n, d in ((500, 20), (60, 128)):  # the second has fewer samples than dimensions
        x = 10.0 * rng.normal(size=(n, d)) + 3.0
        assert frechet_distance(x, x) < 1e-6
    # symmetric, and grows with a mean shift
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(x, y + 1.0) > frechet_distance(x, y) + 7.0


def test_fd_sample_space_route_equals_the_covariance_route():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 90)) @ rng.normal(size=(90, 90))  # fewer samples than dimensions: SVD route
    y = 0.8 * rng.normal(size=(55, 90)) @ rng.normal(size=(90, 90)) + 0.5
    direct = frechet_distance_from_stats(*feature_statistics(x), *feature_statistics(y))
    # rel 1e-7: in the (D, D) route the square roots of ~50 zero eigenvalues turn rounding into ~1e-5 each
    assert frechet_distance(x, y) == pytest.approx(direct, rel=1e-7)


def test_feature_statistics_and_bad_input():
    x = np.arange(12.0).reshape(6, 2)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False))
    with pytest.raises(FlaresynthError):
        feature_statistics(x[:1])
    with pytest.raises(FlaresynthError):
        frechet_distance(x, np.ones((6, 3)))


def test_fd_matches_torchmetrics_with_a_custom_feature_module():
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Features(torch.nn.Module):
        """A fixed random projection of the flattened image, with a tanh so the features are not Gaussian."""

        num_features = 16

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3 * 8 * 8, self.num_features)

        def forward(self, x):
            return torch.tanh(self.proj(x.float().flatten(1)))

    torch.manual_seed(0)
    net = Features().eval()
    real = torch.rand(300, 3, 8, 8)
    fake = torch.rand(250, 3, 8, 8) * 0.8 + 0.15
    fid = FrechetInceptionDistance(feature=net, normalize=True)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    theirs = float(fid.compute())
    with torch.no_grad():
        ours = frechet_distance(net(real).double().numpy(), net(fake).double().numpy())
    assert theirs > 0.01
    assert ours == pytest.approx(theirs, rel=1e-3)


# --------------------------------------------------------------------------------------------- KID
def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(800, 16)), rng.normal(size=(700, 16))
    same, same_std = kernel_distance(x, y, subsets=50, subset_size=300, seed=0)
    shifted, _ = kernel_distance(x, y + 0.5, subsets=50, subset_size=300, seed=0)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.02 and shifted > 20 * abs(same)


def test_kid_subsets_are_at_most_half_a_set_so_the_std_is_not_zero():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(40, 8)) + 0.3
    mean, std = kernel_distance(x, y, subsets=30, subset_size=1000, seed=0)  # subset_size above both sets
    assert std > 1e-4 and std < abs(mean) + 1.0


def test_polynomial_mmd_matches_a_direct_double_loop():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


# ---------------------------------------------------------------------------------------- clusters
def blobs(rng, n, centers, scale=1.0, only=None):
    """Gaussian blobs around fixed centres (std 1 × scale); ``only`` restricts to one blob."""
    which = rng.integers(0, len(centers), n) if only is None else np.full(n, only)
    return centers[which] + scale * rng.normal(size=(n, centers.shape[1]))


@pytest.fixture(scope="module")
def mixture():
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(10, 8)) * 12.0  # well separated, so k-means finds the blobs
    return rng, centers, blobs(rng, 4000, centers)


def test_cluster_metrics_real_vs_real_halves_are_ideal(mixture):
    rng, centers, real = mixture
    generated = blobs(rng, 1500, centers)  # a perfect generator: the same distribution
    res = cluster_metrics(real, generated, k=10, repeats=3, seed=0)
    for which in ("benchmark", "generated"):
        assert res[which]["CE"]["mean"] < 0.02
        assert res[which]["CD"]["mean"] == pytest.approx(1.0, abs=0.05)
        assert res[which]["CS"]["mean"] == pytest.approx(1.0, abs=0.1)
    assert res["k"] == 10 and res["n_evaluated"] == 1500 and res["n_reference"] == 2000


def test_cluster_metrics_catch_a_one_cluster_generator_and_a_too_wide_one(mixture):
    rng, centers, real = mixture
    collapsed = blobs(rng, 1000, centers, only=3)
    res = cluster_metrics(real, collapsed, k=10, repeats=2, seed=0)
    # nine empty clusters (1 each) and one ~10× over-full one ((1 - 10)² = 81): CE ≈ 9
    assert res["generated"]["CE"]["mean"] > 5.0
    assert min(res["generated"]["n_empty"]) == 9
    assert res["benchmark"]["CE"]["mean"] < 0.05
    wide = blobs(rng, 1000, centers, scale=1.5)
    res = cluster_metrics(real, wide, k=10, repeats=2, seed=0)
    assert res["generated"]["CD"]["mean"] == pytest.approx(1.5, abs=0.1)
    assert res["generated"]["CE"]["mean"] < 0.05  # right occupancy, wrong spread


def test_cluster_scores_follow_hacksteins_definitions_by_hand():
    # one cluster on the line: reference distances 1, 1, 3, 3 (centre 0)
    ref = fit_reference(np.array([[-1.0], [1.0], [-3.0], [3.0]]), k=1)
    rms_ref = np.sqrt(5.0)
    spread_ref = np.sqrt(np.mean((np.array([1, 1, 3, 3]) - rms_ref) ** 2))  # about the RMS (Eq. 3), not the mean
    s = cluster_scores(ref, np.array([[2.0], [-2.0], [4.0]]))  # distances 2, 2, 4
    rms = np.sqrt((4 + 4 + 16) / 3)
    assert s["CE"] == 0.0
    assert s["CD"] == pytest.approx(rms / rms_ref, rel=1e-12)
    assert s["CS"] == pytest.approx(np.sqrt(np.mean((np.array([2, 2, 4]) - rms) ** 2)) / spread_ref, rel=1e-12)


def test_cluster_error_uses_fractions_and_counts_empty_clusters():
    ref = fit_reference(np.array([[0.0], [0.1], [10.0], [10.1]]), k=2)  # two clusters, half each
    s = cluster_scores(ref, np.array([[0.05]] * 3 + [[10.05]]))  # fractions 3/4 and 1/4
    assert s["CE"] == pytest.approx(((1 - 1.5) ** 2 + (1 - 0.5) ** 2) / 2)
    s = cluster_scores(ref, np.array([[0.0], [0.2]]))  # second cluster empty
    assert s["n_empty"] == 1 and s["CE"] == pytest.approx(((1 - 2) ** 2 + 1) / 2)
    assert np.isnan(s["CD_k"]).sum() == 1 and np.isfinite(s["CD"])
    # two reference members sit at the same distance from their centre: no spread to divide by, so CS is
    # undefined rather than a huge number
    assert np.isnan(s["CS"]) and np.isnan(s["CS_k"]).all()


def test_resampling_plan_uses_disjoint_real_halves_of_equal_evaluated_size():
    plan = resampling_plan(101, 30, repeats=3, seed=7)
    for p in plan:
        assert len(p["reference"]) == 51 and len(np.intersect1d(p["reference"], p["benchmark"])) == 0
        assert len(p["benchmark"]) == len(p["generated"]) == 30
        assert len(np.unique(p["generated"])) == 30
    assert not np.array_equal(plan[0]["reference"], plan[1]["reference"])
    with pytest.raises(FlaresynthError):
        resampling_plan(3, 10)


# ---------------------------------------------------------------------------------- classification
def test_classification_report_by_hand():
    rep = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["A", "B", "C", "D"])
    assert rep["per_class"]["A"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rep["per_class"]["B"]["precision"] == pytest.approx(2 / 3) and rep["per_class"]["B"]["recall"] == 1.0
    assert rep["per_class"]["C"]["f1"] == 0.0
    assert rep["macro_over"] == ["A", "B", "C"]  # D was never a true label
    assert rep["f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert rep["accuracy"] == pytest.approx(3 / 5)
    assert rep["confusion"][0] == [1, 1, 0, 0] and rep["confusion"][2] == [1, 0, 0, 0]


def test_classification_report_counts_unclassifiable_predictions_as_wrong():
    rep = classification_report([0, 1, 1], [0, -1, 1], ["A", "B"])
    assert rep["per_class"]["B"]["recall"] == 0.5 and rep["accuracy"] == pytest.approx(2 / 3)


def test_resampling_plan_matches_generated_classes_to_the_real_half():
    from flaresynth.metrics.cluster import resampling_plan

    real_labels = np.array([1] * 50 + [2] * 45 + [0] * 5)
    generated_labels = np.repeat(np.arange(5), 40)  # a generator sampled uniformly over 5 classes
    for r in resampling_plan(100, 200, repeats=3, seed=0, real_labels=real_labels, generated_labels=generated_labels):
        gen_counts = np.bincount(generated_labels[r["generated"]], minlength=5)
        real_counts = np.bincount(real_labels[r["benchmark"]], minlength=5)
        np.testing.assert_array_equal(gen_counts, real_counts)
    unmatched = resampling_plan(100, 200, repeats=1, seed=0)[0]["generated"]
    assert len(np.unique(generated_labels[unmatched])) == 5


def test_grouped_benchmark_halves_share_no_day():
    """The real-vs-real halves are made of whole days (days of one flare event merged): no day in both."""
    from flaresynth.experiments.stats import day_groups

    times = pd.date_range("2024-05-01", periods=240, freq="2h").strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    events = np.array([""] * 240, dtype=object)
    events[11:14] = "ev1"  # 22:00 on day 1 to 02:00 on day 2: one event over midnight
    groups = day_groups(times, events)
    assert len(np.unique(groups)) == 20
    assert len(set(groups[11:14])) == 1 and groups[13] == groups[0]  # the event's frames join its first day
    plan = resampling_plan(240, 50, repeats=4, seed=3, groups=groups)
    days = np.array([t[:10] for t in times])
    days[12:14] = "2024-05-01"  # the event's day
    for entry in plan:
        assert entry["grouped"]
        a, b = set(days[entry["reference"]]), set(days[entry["benchmark"]])
        assert not a & b  # no day (and no event) in both halves
        assert abs(len(entry["reference"]) - 120) <= 12
    # a split within a single day cannot be grouped: random halves, and the plan says so
    assert not resampling_plan(20, 10, groups=np.zeros(20))[0]["grouped"]
