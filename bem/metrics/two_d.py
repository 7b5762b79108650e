"""Sample-based metrics between a real and a generated point cloud of shape ``(n, d)``.

Every function takes torch tensors or numpy arrays, converts them to float64 numpy and returns
Python floats. ``evaluate_2d`` bundles them for the 2D experiments. The quadratic metrics work on
uniform subsamples drawn from ``numpy.random.default_rng(seed)``, so results are reproducible:

- Wasserstein-1: exact optimal transport (POT's ``ot.emd2``) between at most
  ``ot_max_points = 2000`` points per set (about 1 s on one CPU core). The empirical W1 of
  2000 points overestimates the population W1 by a few 0.01 times the data scale in 2D.
- MMD: at most ``ot_max_points`` points per set.
- k-NN precision, recall, density and coverage, and PRD: at most ``max_points = 5000`` points per
  set. The tail masses, MSLE and maximal norms use all points.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

logger = logging.getLogger(__name__)

__all__ = [
    "MSLE_LEVELS",
    "as_points",
    "subsample",
    "wasserstein_1",
    "mmd_rbf",
    "knn_radii",
    "precision_recall",
    "density_coverage",
    "prd_curve",
    "prd_scores",
    "tail_masses",
    "msle_quantiles",
    "class_centroids",
    "mode_proportions",
    "per_mode_metrics",
    "evaluate_2d",
]

# Probability levels of the MSLE: 0.95, 0.95005, ..., 0.99995 (1000 levels, step 5e-5, 1 left
# out because the 1-quantile is the sample maximum, a single point).
MSLE_LEVELS = 0.95 + 0.05 * np.arange(1000) / 1000

# Bandwidths of the MMD kernel, as multiples of the median distance between real points.
MMD_BANDWIDTH_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)

# Rows of the distance matrix handled at once in the k-NN ball tests (about 40 MB in float64
# for 5000 columns).
_CHUNK = 1024


def as_points(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return ``x`` as a float64 numpy array of shape ``(n, d)``.

    Raises:
        ValueError: if ``x`` is not two-dimensional or has no points.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty point cloud of shape (n, d), got shape {x.shape}")
    return x


def _nan_as_inf(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), np.inf, values)


def subsample(x: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Return at most ``max_points`` rows of ``x``, drawn uniformly without replacement."""
    if max_points is None or x.shape[0] <= max_points:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(x.shape[0], size=max_points, replace=False))]


def wasserstein_1(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    *,
    max_points: int | None = 2000,
    seed: int = 0,
) -> float:
    """Compute the Wasserstein-1 distance between the empirical measures, Euclidean cost.

    Exact network-simplex optimal transport (``ot.emd2``) with uniform weights on subsamples of
    at most ``max_points`` points per set.

    Returns:
        ``W1 = min over couplings of sum_ij P_ij |x_i - y_j|``.
    """
    x = subsample(as_points(real), max_points, seed)
    y = subsample(as_points(generated), max_points, seed + 1)
    cost = ot.dist(x, y, metric="euclidean")
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


def mmd_rbf(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    *,
    bandwidths: Sequence[float] | None = None,
    max_points: int | None = 2000,
    seed: int = 0,
) -> float:
    """Compute the unbiased estimate of the squared MMD with a mixture of Gaussian kernels.

    ``k(x, y) = mean_s exp(-|x - y|**2 / (2 s**2))`` over the bandwidths ``s``, and MMD^2_u of
    Gretton et al. (JMLR 2012, Lemma 6): the means of ``k`` over distinct pairs within each set
    minus twice the mean over cross pairs. The estimate is unbiased, so it can be slightly
    negative when both sets come from one distribution (order ``1/n``).

    Args:
        bandwidths: kernel bandwidths ``s``; default ``MMD_BANDWIDTH_FACTORS`` times the median
            distance between real points, so the value does not depend on the data's unit.
        max_points: size of the subsample of each set (at least 2 points are needed).

    Returns:
        MMD^2_u, in [-2, 2] because the kernel lies in [0, 1].
    """
    x = subsample(as_points(real), max_points, seed)
    y = subsample(as_points(generated), max_points, seed + 1)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"mmd_rbf needs 2 points per set, got {x.shape[0]} and {y.shape[0]}")
    if bandwidths is None:
        median = float(np.median(cdist(x, x)[np.triu_indices(x.shape[0], k=1)]))
        bandwidths = [f * max(median, 1e-12) for f in MMD_BANDWIDTH_FACTORS]

    def kernel_mean(u: np.ndarray, v: np.ndarray, exclude_diagonal: bool) -> float:
        sq = cdist(u, v, "sqeuclidean")
        k = np.mean([np.exp(-sq / (2.0 * s * s)) for s in bandwidths], axis=0)
        if exclude_diagonal:
            n = u.shape[0]
            return float((k.sum() - np.trace(k)) / (n * (n - 1)))
        return float(k.mean())

    return kernel_mean(x, x, True) + kernel_mean(y, y, True) - 2.0 * kernel_mean(x, y, False)


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Return the distance from each point of ``x`` to its ``k``-th nearest other point."""
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k must lie in [1, n - 1] = [1, {x.shape[0] - 1}], got {k}")
    # The first neighbour returned is the point itself, at distance 0.
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return distances[:, k]


def _ball_counts(points: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Count, for each point, the balls ``B(centers[j], radii[j])`` that contain it."""
    counts = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], _CHUNK):
        d = cdist(points[start : start + _CHUNK], centers)
        counts[start : start + _CHUNK] = (d <= radii[None, :]).sum(axis=1)
    return counts


def precision_recall(
    real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray, *, k: int = 5
) -> tuple[float, float]:
    """Compute the k-NN manifold precision and recall of Kynkaanniemi et al. (NeurIPS 2019).

    The real manifold is the union of the balls around each real point with radius the distance
    to its k-th nearest real neighbour (Eq. 1 and 2 of the paper); likewise for the generated
    manifold.

    Returns:
        ``(precision, recall)``: the fraction of generated points inside the real manifold and
        the fraction of real points inside the generated manifold.
    """
    x, y = as_points(real), as_points(generated)
    precision = float(np.mean(_ball_counts(y, x, knn_radii(x, k)) > 0))
    recall = float(np.mean(_ball_counts(x, y, knn_radii(y, k)) > 0))
    return precision, recall


def density_coverage(
    real: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray, *, k: int = 5
) -> tuple[float, float]:
    """Compute density and coverage of Naeem et al. (ICML 2020, Eq. 3 and 4).

    ``density = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]`` and
    ``coverage = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))]`` with ``X`` the ``N`` real
    and ``Y`` the ``M`` generated points. Density is about 1 when both sets come from one
    distribution and can exceed 1. Coverage lies in [0, 1].
    """
    x, y = as_points(real), as_points(generated)
    radii = knn_radii(x, k)
    density = float(_ball_counts(y, x, radii).sum() / (k * y.shape[0]))
    nearest_generated, _ = NearestNeighbors(n_neighbors=1).fit(y).kneighbors(x)
    coverage = float(np.mean(nearest_generated[:, 0] <= radii))
    return density, coverage


def prd_curve(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    *,
    num_clusters: int = 20,
    num_angles: int = 1001,
    num_runs: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the PRD curve of Sajjadi et al. (NeurIPS 2018) by k-means clustering.

    Each run clusters the union of both sets with scikit-learn's ``KMeans`` and compares the
    cluster histograms ``P`` (real) and ``Q`` (generated): for slopes ``lambda = tan(angle)``
    with ``num_angles`` angles in (0, pi/2), ``precision = sum_i min(lambda P_i, Q_i)`` and
    ``recall = precision / lambda`` (Theorem 2 of the paper). The curves of ``num_runs``
    clusterings with different seeds are averaged. Give both sets the same size, as the paper
    does, because the clustering weighs each set by its point count.

    NOTE: squared-distance k-means spends its clusters on far outliers. When generated points
    lie orders of magnitude beyond the data, the bulk of both sets shares one cluster and the
    curve reads as a good fit (prd_f1 near 1 with a Wasserstein distance of 1e11 at alpha
    0.5). Read it next to ``wasserstein`` and the k-NN ``f1``.

    Returns:
        ``(precision, recall)``, two arrays of shape ``(num_angles,)`` in [0, 1].
    """
    x, y = as_points(real), as_points(generated)
    if num_clusters > x.shape[0] + y.shape[0]:
        raise ValueError(f"num_clusters={num_clusters} exceeds the number of points")
    points = np.concatenate([x, y])
    angles = np.linspace(1e-6, np.pi / 2 - 1e-6, num_angles)
    slopes = np.tan(angles)

    precision = np.zeros(num_angles)
    for run in range(num_runs):
        kmeans = KMeans(n_clusters=num_clusters, n_init=1, random_state=seed + run)
        assignment = kmeans.fit_predict(points)
        p = np.bincount(assignment[: x.shape[0]], minlength=num_clusters) / x.shape[0]
        q = np.bincount(assignment[x.shape[0] :], minlength=num_clusters) / y.shape[0]
        precision += np.minimum(slopes[:, None] * p[None, :], q[None, :]).sum(axis=1)
    precision /= num_runs
    recall = precision / slopes
    return np.clip(precision, 0.0, 1.0), np.clip(recall, 0.0, 1.0)


def prd_scores(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """Summarise a PRD curve by F-beta scores.

    Returns:
        ``prd_precision``: max of ``F_{1/8}`` along the curve and ``prd_recall``: max of ``F_8``
        (the summary of Sajjadi et al. 2018, Section 4). ``prd_f1``: max of
        ``2 P R / (P + R)`` along the curve. ``prd_f1_summary``: ``2 P R / (P + R)`` of
        ``prd_precision`` and ``prd_recall``. The DLPM authors' released evaluation code computes
        its PRD "F1" this last way.
    """

    def f_beta(beta: float) -> np.ndarray:
        denominator = beta**2 * precision + recall
        safe = np.where(denominator > 0, denominator, 1.0)
        return np.where(denominator > 0, (1 + beta**2) * precision * recall / safe, 0.0)

    p_summary, r_summary = float(f_beta(1 / 8).max()), float(f_beta(8).max())
    total = p_summary + r_summary
    return {
        "prd_precision": p_summary,
        "prd_recall": r_summary,
        "prd_f1": float(f_beta(1.0).max()),
        "prd_f1_summary": 2 * p_summary * r_summary / total if total > 0 else 0.0,
    }


def tail_masses(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    quantiles: Sequence[float] = (0.9, 0.99, 0.999),
) -> dict[str, float]:
    """Compute the fraction of points whose Euclidean norm exceeds the real norm's quantiles.

    Returns:
        For each ``q``: ``tail_mass_real_q{q}`` (about ``1 - q``) and ``tail_mass_gen_q{q}``,
        the fractions of real and generated points with norm strictly above the empirical
        ``q``-quantile of the real norms (numpy's linear interpolation). Non-finite generated
        rows count as beyond the threshold.
    """
    real_norm = np.linalg.norm(as_points(real), axis=1)
    if not np.isfinite(real_norm).all():
        raise ValueError("real contains non-finite values; remove them before tail_masses")
    # A NaN row of the generated set counts as beyond every threshold, as an infinite one does.
    gen_norm = _nan_as_inf(np.linalg.norm(as_points(generated), axis=1))
    out = {}
    for q in quantiles:
        if not 0.0 < q < 1.0:
            raise ValueError(f"tail quantiles must lie in (0, 1), got {q}")
        threshold = np.quantile(real_norm, q)
        out[f"tail_mass_real_q{q:g}"] = float(np.mean(real_norm > threshold))
        out[f"tail_mass_gen_q{q:g}"] = float(np.mean(gen_norm > threshold))
    return out


def msle_quantiles(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    levels: np.ndarray = MSLE_LEVELS,
) -> dict[str, float]:
    """Compute the mean squared log error between upper quantiles.

    The DLPM paper (Shariatian, Simsekli and Durmus, ICLR 2025) scores heavy tails this way.

    ``MSLE = mean_p (log q_real(p) - log q_gen(p))**2`` over the levels ``p`` (default
    ``MSLE_LEVELS``: 1000 levels evenly spaced on [0.95, 1)), with ``q(p)`` the empirical
    quantile (numpy's linear interpolation). A quantile of 0 is raised to the smallest positive
    float64 before the logarithm. Scaling ``generated`` by ``c`` gives exactly ``(log c)**2``.

    NOTE: the paper's exact set of levels is not known here, so its MSLE values compare with
    these only approximately.

    Returns:
        ``msle_norm`` on the Euclidean norms and ``msle_coord``, the MSLE of each coordinate's
        absolute value, averaged over coordinates.
    """
    x, y = as_points(real), as_points(generated)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and generated dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    tiny = np.finfo(np.float64).tiny

    def msle(u: np.ndarray, v: np.ndarray) -> float:
        log_u = np.log(np.maximum(np.quantile(u, levels), tiny))
        log_v = np.log(np.maximum(np.quantile(v, levels), tiny))
        return float(np.mean((log_u - log_v) ** 2))

    per_coordinate = [msle(np.abs(x[:, j]), np.abs(y[:, j])) for j in range(x.shape[1])]
    return {
        "msle_norm": msle(np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)),
        "msle_coord": float(np.mean(per_coordinate)),
    }


def class_centroids(x: np.ndarray, labels: np.ndarray, n_modes: int) -> np.ndarray:
    """Return the coordinate-wise median of each class, shape ``(n_modes, d)``.

    The median rather than the mean, so that alpha-stable components (``sas_grid``) still give
    their centre. A class without points gets NaN.
    """
    x, labels = as_points(x), np.asarray(labels)
    centroids = np.full((n_modes, x.shape[1]), np.nan)
    for i in range(n_modes):
        if np.any(labels == i):
            centroids[i] = np.median(x[labels == i], axis=0)
    return centroids


def mode_proportions(
    points: torch.Tensor | np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Assign each point to its nearest centre.

    Returns:
        ``(assignment, proportions)``: the index of the nearest centre for each point, shape
        ``(n,)``, and the fraction of points per centre, shape ``(n_modes,)``.
    """
    centers = np.asarray(centers, dtype=np.float64)
    _, nearest = NearestNeighbors(n_neighbors=1).fit(centers).kneighbors(as_points(points))
    assignment = nearest[:, 0]
    proportions = np.bincount(assignment, minlength=centers.shape[0]) / assignment.shape[0]
    return assignment, proportions


def per_mode_metrics(
    real: torch.Tensor | np.ndarray,
    real_labels: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    *,
    n_modes: int | None = None,
    k: int = 5,
) -> dict[str, float]:
    """Compare a mixture with its generated counterpart mode by mode.

    Generated points go to the mode of the nearest real class centroid (``class_centroids``).
    Per mode ``i`` this reports the weights of the mode in both sets, and the k-NN precision
    and recall (``precision_recall``) between the real points of class ``i`` and the generated
    points assigned to it. Points generated between modes lower the precision of their nearest
    mode.

    Returns:
        ``mode{i}_weight_real``, ``mode{i}_weight_gen``, ``mode{i}_precision`` (NaN when no
        generated point is assigned), ``mode{i}_recall`` (0 when at most ``k`` generated points
        are assigned, too few for k-NN balls), and ``mode_tv``, the total variation distance
        ``0.5 * sum_i |weight_real_i - weight_gen_i|``.
    """
    x, y = as_points(real), as_points(generated)
    labels = np.asarray(real_labels.cpu() if isinstance(real_labels, torch.Tensor) else real_labels)
    n_modes = int(labels.max()) + 1 if n_modes is None else n_modes
    weight_real = np.bincount(labels, minlength=n_modes) / labels.shape[0]
    centroids = class_centroids(x, labels, n_modes)
    present = ~np.isnan(centroids).any(axis=1)
    assignment, weight_present = mode_proportions(y, centroids[present])
    modes = np.flatnonzero(present)
    assignment = modes[assignment]
    weight_gen = np.zeros(n_modes)
    weight_gen[modes] = weight_present

    out = {}
    for i in range(n_modes):
        real_i, gen_i = x[labels == i], y[assignment == i]
        precision, recall = np.nan, 0.0
        if gen_i.shape[0] > 0 and real_i.shape[0] > k:
            precision = float(np.mean(_ball_counts(gen_i, real_i, knn_radii(real_i, k)) > 0))
        if gen_i.shape[0] > k:
            recall = float(np.mean(_ball_counts(real_i, gen_i, knn_radii(gen_i, k)) > 0))
        out[f"mode{i}_weight_real"] = float(weight_real[i])
        out[f"mode{i}_weight_gen"] = float(weight_gen[i])
        out[f"mode{i}_precision"] = precision
        out[f"mode{i}_recall"] = recall
    out["mode_tv"] = float(0.5 * np.abs(weight_real - weight_gen).sum())
    return out


def evaluate_2d(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    *,
    quantiles: Sequence[float] = (0.9, 0.99, 0.999),
    k: int = 5,
    seed: int = 0,
    max_points: int | None = 5000,
    ot_max_points: int | None = 2000,
    prd_clusters: int = 20,
    prd_runs: int = 10,
) -> dict[str, float]:
    """Compute every metric of this module between a real and a generated sample.

    Generated rows with a NaN or infinite coordinate are dropped before all metrics except the
    tail masses and ``max_norm_gen``, where they count as infinitely far, and their fraction is
    reported as ``nonfinite_gen``.

    Args:
        real, generated: point clouds of shape ``(n, d)`` and ``(m, d)``.
        quantiles: levels of the tail masses.
        k: neighbour rank of the k-NN precision, recall, density and coverage.
        seed: seed of the subsamples and of the k-means runs.
        max_points: subsample size per set for the k-NN metrics and PRD (PRD uses the same
            number of points from both sets).
        ot_max_points: subsample size per set for Wasserstein-1 and MMD.
        prd_clusters, prd_runs: k-means clusters and clusterings of the PRD curve.

    Returns:
        ``wasserstein``, ``mmd``, ``precision``, ``recall``, ``f1``, ``density``, ``coverage``,
        ``prd_precision``, ``prd_recall``, ``prd_f1``, ``prd_f1_summary``,
        ``tail_mass_real_q{q}``, ``tail_mass_gen_q{q}``, ``msle_norm``, ``msle_coord``,
        ``max_norm_real``, ``max_norm_gen`` and ``nonfinite_gen``.

    Raises:
        ValueError: if ``real`` is not finite, the dimensions differ, or no generated row is
            finite.
    """
    x, y_all = as_points(real), as_points(generated)
    if x.shape[1] != y_all.shape[1]:
        raise ValueError(f"real and generated dimensions differ: {x.shape[1]} vs {y_all.shape[1]}")
    if not np.isfinite(x).all():
        raise ValueError("real contains non-finite values; drop those rows before evaluate_2d")
    finite = np.isfinite(y_all).all(axis=1)
    if not finite.any():
        raise ValueError(f"all {y_all.shape[0]} generated points are non-finite")
    y = y_all[finite]

    out = {"nonfinite_gen": float(1.0 - finite.mean())}
    out["wasserstein"] = wasserstein_1(x, y, max_points=ot_max_points, seed=seed)
    out["mmd"] = mmd_rbf(x, y, max_points=ot_max_points, seed=seed)

    x_sub, y_sub = subsample(x, max_points, seed), subsample(y, max_points, seed + 1)
    precision, recall = precision_recall(x_sub, y_sub, k=k)
    out["precision"], out["recall"] = precision, recall
    out["f1"] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    out["density"], out["coverage"] = density_coverage(x_sub, y_sub, k=k)

    n_prd = min(x_sub.shape[0], y_sub.shape[0])
    prd = prd_curve(
        subsample(x_sub, n_prd, seed + 2),
        subsample(y_sub, n_prd, seed + 3),
        num_clusters=prd_clusters,
        num_runs=prd_runs,
        seed=seed,
    )
    out.update(prd_scores(*prd))

    out.update(tail_masses(x, y_all, quantiles))
    out.update(msle_quantiles(x, y))
    out["max_norm_real"] = float(np.linalg.norm(x, axis=1).max())
    out["max_norm_gen"] = float(_nan_as_inf(np.linalg.norm(y_all, axis=1)).max())
    return out
