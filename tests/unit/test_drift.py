"""Drift statistics and their permutation-calibrated thresholds, on synthetic samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streams.monitor.drift import (
    ReferenceSample,
    Thresholds,
    WindowSample,
    centroid_cosine_distance,
    ks_statistic,
    median_bandwidth,
    mmd2,
    nearest_cosine,
    nearest_outside_neighbours,
    null_windows,
    psi,
)


def unit_rows(rng: np.random.Generator, n: int, shift: float = 0.0, dim: int = 16) -> np.ndarray:
    rows = rng.normal(size=(n, dim))
    rows[:, 0] += shift
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_another() -> None:
    rng = np.random.default_rng(0)
    reference = unit_rows(rng, 300)
    bandwidth = median_bandwidth(reference)
    same = mmd2(unit_rows(rng, 100), reference, bandwidth)
    other = mmd2(unit_rows(rng, 100, shift=3.0), reference, bandwidth)
    assert abs(same) < 0.01 < other


def test_ks_and_psi_of_identical_samples_are_zero_and_grow_with_a_shift() -> None:
    values = np.arange(100, dtype=np.float64)
    assert ks_statistic(values, np.sort(values)) == 0.0
    assert ks_statistic(values + 50, np.sort(values)) == pytest.approx(0.5)
    assert psi(np.array([10.0, 20.0]), np.array([50.0, 100.0])) == pytest.approx(0.0)
    assert psi(np.array([30.0, 0.0]), np.array([15.0, 15.0])) > 1.0


def test_centroid_distance_is_zero_for_the_same_centroid() -> None:
    rows = unit_rows(np.random.default_rng(1), 50)
    assert centroid_cosine_distance(rows, rows.mean(0)) == pytest.approx(0.0, abs=1e-12)


def test_calibrated_thresholds_hold_the_false_alarm_rate_and_catch_a_shift() -> None:
    rng = np.random.default_rng(2)
    reference = ReferenceSample(vectors=unit_rows(rng, 400), numeric={"length_chars": rng.lognormal(5, 1, 400)})
    thresholds = reference.calibrate(40, draws=400, quantile=0.99)
    assert set(thresholds.values) == {
        "embedding.mmd",
        "embedding.centroid_cosine",
        "embedding.novel_share",
        "length_chars.ks",
        "length_chars.psi",
    }
    false_alarms = 0
    for _ in range(40):
        window = WindowSample(vectors=unit_rows(rng, 40), numeric={"length_chars": rng.lognormal(5, 1, 40)})
        false_alarms += any(s.drifted for s in reference.compare(window, thresholds))
    assert false_alarms <= 6  # 4 statistics at 1% each: about 1.6 expected in 40 windows
    shifted = WindowSample(vectors=unit_rows(rng, 40, shift=2.0), numeric={"length_chars": rng.lognormal(7, 1, 40)})
    drifted = {s.name for s in reference.compare(shifted, thresholds) if s.drifted}
    assert {"embedding.mmd", "length_chars.ks"} <= drifted
    assert all("permutations of the reference" in s.method for s in reference.compare(shifted, thresholds))


def test_categorical_psi_and_floors_keep_rare_features_quiet() -> None:
    labels = ["a"] * 200 + ["b"] * 200
    reference = ReferenceSample(categorical={"label": labels}, numeric={"pii": np.zeros(400)})
    thresholds = reference.calibrate(40, draws=200)
    assert thresholds.values["pii.ks"] == 0.1  # the floor: a reference without PII does not alert on one row
    one_hit = WindowSample(categorical={"label": ["a", "b"] * 20}, numeric={"pii": np.r_[np.zeros(39), 1.0]})
    assert not any(s.drifted for s in reference.compare(one_hit, thresholds))
    new_label = WindowSample(categorical={"label": ["c"] * 40}, numeric={"pii": np.zeros(40)})
    assert {s.name for s in reference.compare(new_label, thresholds) if s.drifted} == {"label.psi"}


def test_a_reference_too_small_for_the_window_says_so() -> None:
    with pytest.raises(ValueError, match="set a larger reference"):
        ReferenceSample(numeric={"x": np.zeros(20)}).calibrate(40)


def blocky_rows(rng: np.random.Generator, blocks: int, rows: int, spread: float = 0.6, dim: int = 16) -> np.ndarray:
    """Rows in blocks (documents): each block's rows scatter around its own centre, blocks one after another."""
    centres = rng.normal(size=(blocks, dim))
    data = np.repeat(centres, rows, axis=0) + spread * rng.normal(size=(blocks * rows, dim))
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def test_null_windows_are_rows_one_by_one_or_consecutive_rows_of_shuffled_blocks() -> None:
    plain = null_windows(100, 10, 50, None)
    assert all(len(set(w)) == 10 and max(w) < 100 for w in plain)
    groups = [i // 10 for i in range(100)]  # ten blocks of ten rows, in order
    for window in null_windows(100, 25, 200, groups, seed=3):
        assert len(set(window)) == 25
        labels = [groups[i] for i in window]
        runs = [labels[0]] + [b for a, b in itertools.pairwise(labels) if b != a]
        assert len(runs) == len(set(runs)) <= 4  # each block's rows come together: 25 rows touch 3 or 4 blocks
        for block in set(labels):  # and in their publication order
            rows = [i for i in window if groups[i] == block]
            assert rows == sorted(rows) and rows == list(range(rows[0], rows[0] + len(rows)))
    with pytest.raises(ValueError, match="group labels"):
        null_windows(100, 10, 5, groups[:50])


def test_p_value_is_the_share_of_null_draws_at_least_as_large() -> None:
    reference = ReferenceSample(numeric={"x": np.random.default_rng(4).normal(size=300)})
    thresholds = reference.calibrate(30, draws=199, quantile=0.99)
    null = thresholds.null["x.ks"]
    assert len(null) == 199 and np.all(np.diff(null) >= 0)
    assert thresholds.p_value("x.ks", float(null[-1]) + 1.0) == pytest.approx(1 / 200)
    assert thresholds.p_value("x.ks", -1.0) == 1.0
    median = float(null[99])
    assert thresholds.p_value("x.ks", median) == pytest.approx((1 + np.sum(null >= median)) / 200)
    assert thresholds.p_value("unknown", 1.0) is None
    window = WindowSample(numeric={"x": np.full(30, 9.0)})
    (ks,) = (s for s in reference.compare(window, thresholds) if s.name == "x.ks")
    assert ks.drifted and ks.p_value == pytest.approx(1 / 200)


def test_block_calibration_keeps_an_ordered_stream_quiet_where_row_permutation_cries_wolf() -> None:
    rng = np.random.default_rng(5)
    rows_per_block, window = 20, 50  # windows cut across documents, as a stream's windows do
    pool = blocky_rows(rng, 50, rows_per_block)  # 1,000 reference rows from 50 documents, in order
    groups = [i // rows_per_block for i in range(len(pool))]
    by_row = ReferenceSample(vectors=pool)
    by_block = ReferenceSample(vectors=pool, groups=groups)
    row_thresholds = by_row.calibrate(window, draws=400, quantile=0.99)
    block_thresholds = by_block.calibrate(window, draws=400, quantile=0.99)
    assert (
        block_thresholds.blocks == 50
        and "block permutations" in by_block.methods(window, block_thresholds)["embedding.mmd"]
    )
    assert block_thresholds.values["embedding.mmd"] > 2 * row_thresholds.values["embedding.mmd"]
    stream = blocky_rows(rng, 60, rows_per_block)  # new documents of the same kind, published in order
    windows = [WindowSample(vectors=stream[i : i + window]) for i in range(0, len(stream), window)]

    def flagged(reference: ReferenceSample, thresholds: Thresholds) -> int:
        return sum(
            any(s.drifted for s in reference.compare(w, thresholds) if s.name == "embedding.mmd") for w in windows
        )

    assert flagged(by_row, row_thresholds) >= len(windows) // 2  # the independent-rows null is far too narrow
    assert flagged(by_block, block_thresholds) <= 2  # 24 windows at 1%
    other = blocky_rows(rng, 2, rows_per_block)
    other[:, 0] += 1.5  # documents of another kind
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    stats = by_block.compare(WindowSample(vectors=other), block_thresholds)
    assert {s.name for s in stats if s.drifted} >= {"embedding.mmd"}


def test_nearest_neighbour_null_leaves_out_each_rows_own_neighbourhood() -> None:
    rows = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]])
    groups = [0, 0, 0, 1, 1]
    distances = nearest_outside_neighbours(rows, groups, reach=1)
    # row 0's neighbour of its own block (row 1) is left out; its twin in another block (row 4) is not
    assert distances[0] == pytest.approx(0.0, abs=1e-9)
    # row 1 is matched with row 4 (row 0 is its own neighbour), row 2 with row 3 (another block)
    assert distances[1] == pytest.approx(1 - 1 / np.hypot(1.0, 0.01), abs=1e-9)
    assert distances[2] == pytest.approx(0.2, abs=1e-9)
    # rows 3 and 4 are neighbours of one block: each is matched outside it
    assert distances[3] == pytest.approx(0.2, abs=1e-9) and distances[4] == pytest.approx(0.0, abs=1e-9)
    # without blocks only the row itself is left out
    assert nearest_outside_neighbours(rows, None)[1] == pytest.approx(1 - 1 / np.hypot(1.0, 0.01), abs=1e-9)


def test_nearest_cosine_is_each_rows_distance_to_its_closest_reference_row() -> None:
    window = np.array([[1.0, 0.0], [0.0, 2.0]])
    reference = np.array([[0.0, 1.0], [0.6, 0.8]])
    distances = nearest_cosine(window @ reference.T, np.linalg.norm(window, axis=1), np.linalg.norm(reference, axis=1))
    assert distances == pytest.approx([0.4, 0.0])


def test_nearest_neighbours_catch_a_fifth_of_foreign_rows_among_known_blocks() -> None:
    """Windows of one known block at a time stay quiet; a fifth of rows of an unseen kind fire.

    The reference holds rows of every block (as a stratified reference of every package does), so
    a window of new documents of one block has near neighbours, while the MMD and centroid see a
    window of one block as far from the whole reference: their block null is wide and a 20% mix
    hides in it.
    """
    rng = np.random.default_rng(7)
    dim, blocks = 16, 40
    centres = rng.normal(size=(blocks, dim))
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)  # blocks equally tight

    def rows_of(block: int, n: int) -> np.ndarray:
        data = centres[block] + 0.3 * rng.normal(size=(n, dim))
        return data / np.linalg.norm(data, axis=1, keepdims=True)

    # the corpus has 100 rows per block, the reference half of each: a stream window of 100 rows
    # covers the blocks of 50 consecutive reference rows
    pool = np.concatenate([rows_of(b, 50) for b in range(blocks)])
    reference = ReferenceSample(vectors=pool, groups=[i // 50 for i in range(len(pool))], drawn_from=100 * blocks)
    thresholds = reference.calibrate(100, draws=400, quantile=0.99)
    assert reference.span(100) == thresholds.span == 50
    assert "the blocks 100 stream rows cover" in reference.methods(100, thresholds)["embedding.novel_share"]
    quiet = [WindowSample(vectors=rows_of(b, 100)) for b in range(0, blocks, 2)]
    fired = [
        any(s.drifted for s in reference.compare(w, thresholds) if s.name == "embedding.novel_share") for w in quiet
    ]
    assert sum(fired) <= 1
    foreign = rng.normal(size=(20, dim))
    foreign /= np.linalg.norm(foreign, axis=1, keepdims=True)
    mixed = WindowSample(vectors=np.concatenate([rows_of(3, 80), foreign]))
    stats = {s.name: s for s in reference.compare(mixed, thresholds)}
    assert stats["embedding.novel_share"].drifted and stats["embedding.novel_share"].p_value == pytest.approx(1 / 401)
