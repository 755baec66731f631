"""Drift statistics: is this window of data from the same distribution as the reference?

Why this exists:
    Monitoring compares each window of live data with a reference sample. This module holds the
    statistics as plain numpy functions (no Kafka, no Faust), and :class:`ReferenceSample`, which
    calibrates every statistic's threshold on the reference itself, so that "drift" means "less
    likely than 1 - ``quantile`` under no drift" rather than a guessed constant.

Statistics:
    * ``mmd``: squared maximum mean discrepancy (unbiased) with an RBF kernel whose bandwidth is
      the median pairwise distance of the reference (median heuristic), on embedding vectors.
    * ``centroid``: cosine distance between the window's mean vector and the reference's.
    * ``novel_share``: share of the window's rows whose nearest reference row (cosine) is farther
      than the 0.95 quantile of the reference rows' distances to their nearest other row. A window
      of one known package has near neighbours in a reference that holds every package, while
      text of another kind does not: it finds a 20% mix that the MMD and the centroid, whose null
      must span the differences between whole packages, miss.
    * ``ks``: two-sample Kolmogorov-Smirnov statistic on a numeric feature.
    * ``psi``: population stability index on a numeric feature (deciles of the reference) or a
      categorical one (its categories), with counts smoothed by 0.5.

Calibration (a null distribution drawn from the reference itself):
    ``draws`` times, ``n`` rows of the reference pool play the window and the rest play the
    reference, and every statistic is computed; the sorted values are the statistic's null
    distribution. A statistic's threshold is its ``quantile`` over those draws (KS and PSI
    thresholds are at least 0.1, see THRESHOLD_FLOORS), and each window's value gets a p-value:
    the share of null draws at least as large, ``(1 + #{null >= value}) / (draws + 1)``.

    How the window rows are drawn matters. A stream is not a sample of independent rows: a
    corpus is published in order, so consecutive chunks come from one document and consecutive
    documents from one module, and a window of 200 consecutive chunks is far less diverse than
    200 random ones. A null of independent rows is then too narrow and normal windows fire.
    When the reference knows the block (document or module) of each row, in publication order
    (``groups``), each draw is a block permutation: the blocks are shuffled, their rows kept in
    order and concatenated, and the window is ``n`` consecutive rows of that order from a random
    start; so the null windows are drawn the way the stream is drawn. When the reference holds
    only a share of each block (``drawn_from`` corpus rows, see :meth:`ReferenceSample.span`), a
    null window is ``n * size / drawn_from`` consecutive rows: as few blocks as ``n`` stream rows.
    Without ``groups`` the rows are permuted one by one (windows of independent rows, e.g.
    requests from many users).

    For the MMD the pool's kernel matrix is computed once and each draw only sums rows of it, so
    calibrating 1,000 draws on 1,000 vectors takes about a second; it happens once per reference
    and window size (the worker does it when a reference is loaded), so a window costs only its
    statistics and a binary search in each null distribution.

Usage:
    >>> ref = ReferenceSample(vectors=v, numeric={"length_chars": lengths})
    >>> thresholds = ref.calibrate(n=50)
    >>> stats = ref.compare(WindowSample(vectors=w, numeric={"length_chars": wl}), thresholds)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.floating[Any]]  # float64, or float32 where a kernel row is enough
Ints = npt.NDArray[np.intp]
SMOOTHING = 1e-3  # added to every bin's share (then renormalized) so that an empty bin does not make PSI infinite
PSI_BINS = 10
# Smallest thresholds for the feature tests: a rare feature (PII, unknown tokens) that the reference
# sample happens not to show would otherwise calibrate to 0 and alert on one row. 0.1 is a shift of
# a tenth of the distribution (KS) and the conventional "moderate shift" line (PSI).
THRESHOLD_FLOORS = {"ks": 0.1, "psi": 0.1}
# The novelty statistic: a window row is "novel" when its nearest reference row is farther (cosine)
# than NOVEL_QUANTILE of the reference rows' own nearest other rows. In that null a reference row is
# matched with any other row (NEIGHBOUR_ROWS = 0): leaving out its block's neighbours too (1) made the
# null wider than held-out documents in order are, and a 20% shift was missed (docs/benchmarks.md).
NOVEL_QUANTILE = 0.95
NEIGHBOUR_ROWS = 0


@dataclass(frozen=True)
class DriftStatistic:
    """One statistic of one window against the reference, with its p-value under the null."""

    name: str
    value: float
    threshold: float | None
    method: str
    p_value: float | None = None

    @property
    def drifted(self) -> bool:
        return self.threshold is not None and self.value > self.threshold


# --- the statistics ----------------------------------------------------------------------------


def rbf_gram(x: Floats, y: Floats, bandwidth: float) -> Floats:
    """exp(-||x - y||^2 / (2 bandwidth^2)) for every pair of rows."""
    return rbf_from_dots(x @ y.T, (x * x).sum(1), (y * y).sum(1), bandwidth)


def rbf_from_dots(dots: Floats, x_sq: Floats, y_sq: Floats, bandwidth: float) -> Floats:
    """The RBF kernel of every pair of rows from their dot products and the rows' squared norms."""
    sq = x_sq[:, None] + y_sq[None, :] - 2.0 * dots
    gram: Floats = np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth * bandwidth))
    return gram


def nearest_cosine(dots: Floats, x_norms: Floats, y_norms: Floats) -> Floats:
    """Each x row's cosine distance to its nearest y row, from the dot products and the rows' norms."""
    cosine = dots / np.maximum(x_norms[:, None] * y_norms[None, :], 1e-12)
    distances: Floats = 1.0 - cosine.max(1)
    return distances


def nearest_outside_neighbours(vectors: Floats, groups: Sequence[int] | None, reach: int = NEIGHBOUR_ROWS) -> Floats:
    """Each row's cosine distance to its nearest other row, not counting its neighbours of the same block.

    A row's neighbours are the rows of its own block (package) within ``reach`` positions of it
    in publication order: mostly its own document (a chunk and its overlapping next one). So each
    reference row is matched as a new document of a known package would be, not with itself.
    Without ``groups`` (rows independent) only the row itself is left out.
    """
    norms = np.linalg.norm(vectors, axis=1)
    cosine = (vectors @ vectors.T) / np.maximum(norms[:, None] * norms[None, :], 1e-12)
    size = len(vectors)
    labels = np.asarray(groups) if groups is not None else np.arange(size)
    for offset in range(-reach, reach + 1):
        rows = np.arange(max(0, -offset), min(size, size - offset))
        same = rows[labels[rows] == labels[rows + offset]]
        cosine[same, same + offset] = -np.inf
    distances: Floats = 1.0 - cosine.max(1)
    return distances


def median_bandwidth(x: Floats, max_rows: int = 1000) -> float:
    """Median pairwise Euclidean distance between rows (the median heuristic)."""
    rows = x[:max_rows]
    sq = (rows * rows).sum(1)[:, None] + (rows * rows).sum(1)[None, :] - 2.0 * (rows @ rows.T)
    distances = np.sqrt(np.maximum(sq[np.triu_indices(len(rows), 1)], 0.0))
    median = float(np.median(distances)) if distances.size else 1.0
    return median if median > 0 else 1.0


def mmd2_from_sums(k_ww: float, k_rr: float, k_wr: float, n: int, m: int) -> float:
    """Unbiased MMD^2 from the kernel sums of the window (diagonal excluded), reference and cross terms."""
    return k_ww / (n * (n - 1)) + k_rr / (m * (m - 1)) - 2.0 * k_wr / (n * m)


def mmd2(window: Floats, reference: Floats, bandwidth: float) -> float:
    """Unbiased squared MMD between two samples of row vectors (RBF kernel)."""
    n, m = len(window), len(reference)
    k_ww = rbf_gram(window, window, bandwidth)
    k_rr = rbf_gram(reference, reference, bandwidth)
    k_wr = rbf_gram(window, reference, bandwidth)
    return mmd2_from_sums(
        float(k_ww.sum() - np.trace(k_ww)), float(k_rr.sum() - np.trace(k_rr)), float(k_wr.sum()), n, m
    )


def centroid_cosine_distance(window: Floats, reference_centroid: Floats) -> float:
    """1 - cosine similarity of the window's mean vector and the reference's."""
    centroid = window.mean(0)
    denominator = float(np.linalg.norm(centroid) * np.linalg.norm(reference_centroid))
    return 1.0 - float(centroid @ reference_centroid) / denominator if denominator else 1.0


def ks_statistic(window: Floats, reference_sorted: Floats) -> float:
    """Two-sample Kolmogorov-Smirnov statistic; ``reference_sorted`` must be sorted."""
    if not len(window) or not len(reference_sorted):
        return 0.0
    window_sorted = np.sort(window)
    points = np.concatenate([window_sorted, reference_sorted])
    cdf_w = np.searchsorted(window_sorted, points, side="right") / len(window_sorted)
    cdf_r = np.searchsorted(reference_sorted, points, side="right") / len(reference_sorted)
    return float(np.max(np.abs(cdf_w - cdf_r)))


def psi(window_counts: Floats, reference_counts: Floats) -> float:
    """Population stability index of two histograms over the same bins (shares smoothed by 0.001).

    Shares, not counts, are smoothed, so two samples of different sizes with the same shares have
    a PSI of exactly 0.
    """
    bins = len(window_counts)
    w = (window_counts / max(window_counts.sum(), 1.0) + SMOOTHING) / (1 + SMOOTHING * bins)
    r = (reference_counts / max(reference_counts.sum(), 1.0) + SMOOTHING) / (1 + SMOOTHING * bins)
    return float(np.sum((w - r) * np.log(w / r)))


def quantile_edges(values: Floats, bins: int = PSI_BINS) -> Floats:
    """Inner bin edges at the reference's quantiles (duplicates dropped for discrete features)."""
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def histogram(values: Floats, edges: Floats) -> Floats:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype(np.float64)


def category_counts(values: Sequence[str], categories: Sequence[str]) -> Floats:
    """Counts per known category, plus one bin for anything the reference never saw."""
    counts = Counter(values)
    known = [counts.get(c, 0) for c in categories]
    return np.array([*known, sum(counts.values()) - sum(known)], dtype=np.float64)


# --- reference and windows ---------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSample:
    """What one window holds: vectors (optional), numeric features, categorical features."""

    vectors: Floats | None = None
    numeric: Mapping[str, Floats] = field(default_factory=dict)
    categorical: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        if self.vectors is not None:
            return len(self.vectors)
        for values in (*self.numeric.values(), *self.categorical.values()):
            return len(values)
        return 0


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds for windows of ``n`` rows, and the sorted null draws behind them."""

    n: int
    quantile: float
    draws: int
    values: Mapping[str, float]
    null: Mapping[str, Floats] = field(default_factory=dict)
    blocks: int = 0  # blocks the null windows were drawn from; 0 = rows drawn one by one
    span: int = 0  # reference rows in each null window (fewer than n when the reference is a share of each block)

    def p_value(self, name: str, value: float) -> float | None:
        """Share of null draws at least as large as ``value`` (with the +1 that keeps it above 0)."""
        null = self.null.get(name)
        if null is None or not len(null):
            return None
        at_least = len(null) - int(np.searchsorted(null, value, side="left"))
        return (1 + at_least) / (len(null) + 1)


def null_windows(
    size: int, n: int, draws: int, groups: Sequence[int] | None, seed: int = 0, span: int | None = None
) -> list[Ints]:
    """Row indices of ``draws`` null windows of ``n`` rows out of a pool of ``size``.

    Without ``groups``, each window is ``n`` rows drawn without replacement. With ``groups`` (the
    block of each row, rows in publication order), each window is ``n`` consecutive rows of the
    pool after its blocks were shuffled (block permutation): the way an ordered stream is drawn.
    ``span`` (default ``n``) is the number of consecutive rows a window covers when the pool holds
    only a share of each block (see :attr:`ReferenceSample.drawn_from`).
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.permutation(size)[:n] for _ in range(draws)]
    labels = np.asarray(groups)
    if len(labels) != size:
        raise ValueError(f"{len(labels)} group labels for a reference of {size} rows")
    _, first = np.unique(labels, return_index=True)
    blocks = [np.flatnonzero(labels == labels[i]) for i in np.sort(first)]
    windows = []
    for _ in range(draws):
        order = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        length = n if span is None else span
        start = int(rng.integers(0, size - length + 1))
        windows.append(order[start : start + length])
    return windows


@dataclass(frozen=True)
class ReferenceSample(WindowSample):
    """A reference pool, with what every comparison needs precomputed once.

    ``groups`` is the block (document, module) of each row, rows in publication order; with it
    the null windows are drawn in order (see the module docstring), without it row by row.
    """

    groups: Sequence[int] | None = None
    drawn_from: int = 0

    def span(self, n: int) -> int:
        """Reference rows that hold the blocks of a stream window of ``n`` rows.

        A reference drawn as a share of every block (``drawn_from`` rows in the corpus, ``size`` in
        the reference, each block in proportion) holds ``size / drawn_from`` of each block, so a
        stream window of ``n`` consecutive rows covers as many blocks as ``n * size / drawn_from``
        consecutive reference rows do: its null windows are that long (at least 2 rows), so that
        they hold as few blocks (packages) as the stream's windows. 0 = blocks whole (``n``).
        """
        if self.groups is None or self.drawn_from <= self.size:
            return n
        return max(2, min(n, round(n * self.size / self.drawn_from)))

    @cached_property
    def bandwidth(self) -> float:
        return median_bandwidth(self.vectors) if self.vectors is not None else 1.0

    @cached_property
    def _vectors32(self) -> Floats:
        assert self.vectors is not None
        return np.asarray(self.vectors, dtype=np.float32)

    @cached_property
    def centroid(self) -> Floats:
        assert self.vectors is not None
        return np.asarray(self.vectors.mean(0))

    @cached_property
    def _norms32(self) -> Floats:
        norms: Floats = np.linalg.norm(self._vectors32, axis=1)
        return norms

    @cached_property
    def _nearest_null(self) -> Floats:
        """Each row's nearest-neighbour cosine distance within the pool (itself left out)."""
        assert self.vectors is not None
        return nearest_outside_neighbours(self.vectors, self.groups)

    @cached_property
    def novel_distance(self) -> float:
        """The cosine distance beyond which a row is novel: NOVEL_QUANTILE of the pool's own nearest distances."""
        return float(np.quantile(self._nearest_null, NOVEL_QUANTILE))

    @cached_property
    def _gram(self) -> Floats:
        assert self.vectors is not None
        return rbf_gram(self.vectors, self.vectors, self.bandwidth)

    @cached_property
    def _k_rr(self) -> float:
        gram = self._gram
        return float(gram.sum() - np.trace(gram))

    @cached_property
    def _sorted(self) -> dict[str, Floats]:
        return {name: np.sort(values) for name, values in self.numeric.items()}

    @cached_property
    def _edges(self) -> dict[str, Floats]:
        return {name: quantile_edges(values) for name, values in self.numeric.items()}

    @cached_property
    def _categories(self) -> dict[str, list[str]]:
        return {name: sorted(set(values)) for name, values in self.categorical.items()}

    def methods(self, n: int, thresholds: Thresholds | None) -> dict[str, str]:
        """A line per statistic saying how it is computed and how its threshold was set."""
        drawn = (
            f"block permutations of the reference ({self.size} rows in {thresholds.blocks} blocks, publication "
            f"order) into windows of {thresholds.span or thresholds.n} consecutive rows"
            + (
                f" (the blocks {thresholds.n} stream rows cover: the reference is {self.size} of {self.drawn_from} "
                "rows, a share of every block)"
                if thresholds.span and thresholds.span < thresholds.n
                else ""
            )
            if thresholds and thresholds.blocks
            else f"permutations of the reference ({self.size} rows) into windows of {thresholds.n if thresholds else n}"
        )
        how = (
            f"threshold = {thresholds.quantile:.3f} quantile of {thresholds.draws} {drawn} (KS and PSI at least "
            f"0.1); p = share of those draws at least as large"
            if thresholds
            else "no threshold (window too small to test)"
        )
        methods = {}
        if self.vectors is not None:
            methods["embedding.mmd"] = (
                f"unbiased MMD^2, RBF kernel, median-heuristic bandwidth {self.bandwidth:.3f}; {how}"
            )
            methods["embedding.centroid_cosine"] = f"cosine distance of mean vectors; {how}"
            methods["embedding.novel_share"] = (
                f"share of the window's rows whose nearest reference row is farther (cosine) than "
                f"{self.novel_distance:.3f}, the {NOVEL_QUANTILE:.2f} quantile of the reference rows' distances to "
                f"their nearest other row; {how}"
            )
        for name in self.numeric:
            methods[f"{name}.ks"] = f"two-sample Kolmogorov-Smirnov D; {how}"
            methods[f"{name}.psi"] = f"PSI over reference deciles, shares +0.001; {how}"
        for name in self.categorical:
            methods[f"{name}.psi"] = f"PSI over reference categories (+1 unseen bin), shares +0.001; {how}"
        return methods

    def statistics(self, window: WindowSample) -> dict[str, float]:
        """Every statistic of ``window`` against this reference."""
        values: dict[str, float] = {}
        if self.vectors is not None and window.vectors is not None and len(window.vectors) > 1:
            # float32 halves the cost of the window's kernel rows; sums are taken in float64.
            # One product of the window with the reference serves the MMD and the nearest neighbours.
            w = np.asarray(window.vectors, dtype=np.float32)
            w_norms = np.linalg.norm(w, axis=1)
            dots = w @ self._vectors32.T
            k_ww = rbf_gram(w, w, self.bandwidth).astype(np.float64)
            k_wr = rbf_from_dots(dots, w_norms**2, self._norms32**2, self.bandwidth)
            values["embedding.mmd"] = mmd2_from_sums(
                float(k_ww.sum() - np.trace(k_ww)), self._k_rr, float(k_wr.sum(dtype=np.float64)), len(w), self.size
            )
            values["embedding.centroid_cosine"] = centroid_cosine_distance(w.astype(np.float64), self.centroid)
            nearest = nearest_cosine(dots, w_norms, self._norms32)
            values["embedding.novel_share"] = float(np.mean(nearest > self.novel_distance))
        for name, sorted_ref in self._sorted.items():
            if name in window.numeric and len(window.numeric[name]):
                data = np.asarray(window.numeric[name], dtype=np.float64)
                values[f"{name}.ks"] = ks_statistic(data, sorted_ref)
                edges = self._edges[name]
                values[f"{name}.psi"] = psi(histogram(data, edges), histogram(self.numeric[name], edges))
        for name, categories in self._categories.items():
            if name in window.categorical and len(window.categorical[name]):
                values[f"{name}.psi"] = psi(
                    category_counts(window.categorical[name], categories),
                    category_counts(self.categorical[name], categories),
                )
        return values

    def calibrate(self, n: int, draws: int = 1000, quantile: float = 0.995, seed: int = 0) -> Thresholds:
        """Thresholds and null distributions for windows of ``n`` rows, drawn from the reference pool.

        Raises:
            ValueError: when the pool is too small to split into a window and a reference.
        """
        size = self.size
        if n < 2 or size < n + 10:
            raise ValueError(f"a reference of {size} rows cannot calibrate windows of {n}; set a larger reference")
        samples: dict[str, list[float]] = {}
        gram = self._gram if self.vectors is not None else None
        label_arrays = {name: np.asarray(labels, dtype=object) for name, labels in self.categorical.items()}
        span = self.span(n)
        for w in null_windows(size, n, draws, self.groups, seed, span):
            r = np.setdiff1d(np.arange(size), w, assume_unique=True)
            if gram is not None and self.vectors is not None:
                k_w_all = gram[w]  # n x size
                k_ww_full = float(k_w_all[:, w].sum())
                k_ww = k_ww_full - span  # diagonal of an RBF gram is 1
                k_wr = float(k_w_all.sum()) - k_ww_full
                k_rr = self._k_rr - 2.0 * k_wr - k_ww  # pool minus window rows and columns
                samples.setdefault("embedding.mmd", []).append(mmd2_from_sums(k_ww, k_rr, k_wr, span, size - span))
                ref_centroid = self.vectors[r].mean(0)
                samples.setdefault("embedding.centroid_cosine", []).append(
                    centroid_cosine_distance(self.vectors[w], ref_centroid)
                )
                novel = self._nearest_null[w] > self.novel_distance
                samples.setdefault("embedding.novel_share", []).append(float(novel.mean()))
            for name, values in self.numeric.items():
                window_values, ref_values = values[w], values[r]
                samples.setdefault(f"{name}.ks", []).append(ks_statistic(window_values, np.sort(ref_values)))
                edges = quantile_edges(ref_values)
                samples.setdefault(f"{name}.psi", []).append(
                    psi(histogram(window_values, edges), histogram(ref_values, edges))
                )
            for name, labels_array in label_arrays.items():
                ref_labels = list(labels_array[r])
                categories = sorted(set(ref_labels))
                samples.setdefault(f"{name}.psi", []).append(
                    psi(category_counts(list(labels_array[w]), categories), category_counts(ref_labels, categories))
                )
        null = {name: np.sort(np.asarray(v, dtype=np.float64)) for name, v in samples.items()}
        return Thresholds(
            n=n,
            quantile=quantile,
            draws=draws,
            values={
                name: max(float(np.quantile(v, quantile)), THRESHOLD_FLOORS.get(name.rsplit(".", 1)[-1], 0.0))
                for name, v in null.items()
            },
            null=null,
            blocks=len(set(self.groups)) if self.groups is not None else 0,
            span=span,
        )

    def compare(self, window: WindowSample, thresholds: Thresholds | None) -> list[DriftStatistic]:
        """Every statistic of ``window``, each with its threshold (None when not calibrated) and method."""
        methods = self.methods(window.size, thresholds)
        return [
            DriftStatistic(
                name,
                value,
                thresholds.values.get(name) if thresholds else None,
                methods.get(name, "unknown"),
                thresholds.p_value(name, value) if thresholds else None,
            )
            for name, value in self.statistics(window).items()
        ]
