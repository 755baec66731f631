"""Drift statistics and their permutation-calibrated thresholds, on synthetic samples."""

from __future__ import annotations

import numpy as np
import pytest

from streams.monitor.drift import (
    ReferenceSample,
    WindowSample,
    centroid_cosine_distance,
    ks_statistic,
    median_bandwidth,
    mmd2,
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
