"""The evaluation's columns and bootstrap intervals on hand-made scores with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from radvqa.metrics import (
    COLUMNS,
    Scored,
    chance_levels,
    columns,
    count_matrix,
    draws,
    leakage,
    measure,
)


def value(scored: list[Scored], column: str) -> float:
    images = list(dict.fromkeys(s.image for s in scored))
    return float(columns(count_matrix(scored, images).sum(axis=0))[0, COLUMNS.index(column)])


# Four images, worked by hand:
#   i1 abnormal: abnormality "yes" right; anatomy yes right, anatomy no right  -> pair right
#   i2 abnormal: abnormality "yes" wrong; anatomy yes right, anatomy no wrong  -> pair wrong
#   i3 normal:   abnormality "no" right;  anatomy yes wrong, anatomy no right  -> pair wrong
#   i4 abnormal: abnormality "yes" right; no anatomy closed questions          -> no pair
HAND = [
    Scored("i1", "abnormality_closed", "yes", True),
    Scored("i1", "anatomy_closed_yes", "yes", True),
    Scored("i1", "anatomy_closed_no", "no", True),
    Scored("i2", "abnormality_closed", "yes", False),
    Scored("i2", "anatomy_closed_yes", "yes", True),
    Scored("i2", "anatomy_closed_no", "no", False),
    Scored("i3", "abnormality_closed", "no", True),
    Scored("i3", "anatomy_closed_yes", "yes", False),
    Scored("i3", "anatomy_closed_no", "no", True),
    Scored("i4", "abnormality_closed", "yes", True),
]


def test_raw_and_balanced_abnormality_accuracy() -> None:
    assert value(HAND, "abnormality_closed") == pytest.approx(75.0)  # 3 of 4
    # sensitivity 2/3 (i1, i4 of i1, i2, i4), specificity 1/1 (i3): (66.67 + 100) / 2
    assert value(HAND, "abnormality_balanced") == pytest.approx((200 / 3 + 100) / 2)


def test_always_yes_has_balanced_accuracy_50_whatever_the_prevalence() -> None:
    scored = [Scored(f"a{i}", "abnormality_closed", "yes", True) for i in range(86)]
    scored += [Scored(f"n{i}", "abnormality_closed", "no", False) for i in range(14)]
    assert value(scored, "abnormality_closed") == pytest.approx(86.0)
    assert value(scored, "abnormality_balanced") == pytest.approx(50.0)


def test_balanced_accuracy_is_undefined_with_one_class() -> None:
    scored = [Scored("a", "abnormality_closed", "yes", True)]
    assert np.isnan(value(scored, "abnormality_balanced"))


def test_paired_closed_accuracy() -> None:
    # pairs: i1 (both right), i2 (no wrong), i3 (yes wrong); i4 has none -> 1 of 3
    assert value(HAND, "anatomy_paired") == pytest.approx(100 / 3)
    assert value(HAND, "anatomy_closed_yes") == pytest.approx(200 / 3)
    assert np.isnan(value(HAND, "pathology_paired"))


def test_average_is_the_mean_of_slots_with_questions() -> None:
    # anatomy yes 66.67, anatomy no 66.67, abnormality 75 -> 69.44
    assert value(HAND, "average") == pytest.approx((200 / 3 + 200 / 3 + 75) / 3)


def test_bootstrap_resamples_whole_images() -> None:
    # One image with nine right answers in a slot, one with nine wrong: drawn by image, a replicate
    # can only be 0, 50 or 100 (by question it would take many more values).
    scored = [Scored("good", "anatomy_mc", "A", True) for _ in range(9)]
    scored += [Scored("bad", "anatomy_mc", "A", False) for _ in range(9)]
    counts = count_matrix(scored, ["good", "bad"])
    run = measure(counts, draws(2, 4000, seed=0))
    replicate = run.replicates[:, COLUMNS.index("anatomy_mc")]
    assert set(np.unique(replicate)) <= {0.0, 50.0, 100.0}
    # multinomial(2, 1/2): 0 and 100 a quarter of the time each, 50 half the time
    assert abs((replicate == 50.0).mean() - 0.5) < 0.03
    estimate = run.estimates()["anatomy_mc"]
    assert (estimate.value, estimate.low, estimate.high) == (50.0, 0.0, 100.0)


def test_bootstrap_is_seeded() -> None:
    counts = count_matrix(HAND, ["i1", "i2", "i3", "i4"])
    a = measure(counts, draws(4, 200, seed=7)).estimates()
    b = measure(counts, draws(4, 200, seed=7)).estimates()
    c = measure(counts, draws(4, 200, seed=8)).replicates
    assert a == b
    assert not np.array_equal(measure(counts, draws(4, 200, seed=7)).replicates, c)
    assert all(e.low is None or e.low <= e.value <= e.high for e in a.values() if e.value is not None)  # type: ignore[operator]


def test_paired_difference_of_identical_runs_has_a_zero_width_interval() -> None:
    counts = count_matrix(HAND, ["i1", "i2", "i3", "i4"])
    weights = draws(4, 500, seed=0)
    difference = measure(counts, weights).minus(measure(counts.copy(), weights))
    assert difference["abnormality_closed"].value == 0.0
    assert (difference["abnormality_closed"].low, difference["abnormality_closed"].high) == (0.0, 0.0)


def test_paired_difference_by_hand() -> None:
    # Model A right on all 4 abnormality questions, model B on 3 (i2 wrong): difference 25 points;
    # a replicate's difference is 100 * (draws of i2) / 4, so it is never negative.
    a = [Scored(s.image, s.slot, s.answer, True) for s in HAND if s.slot == "abnormality_closed"]
    b = [s for s in HAND if s.slot == "abnormality_closed"]
    images = ["i1", "i2", "i3", "i4"]
    weights = draws(4, 2000, seed=0)
    difference = measure(count_matrix(a, images), weights).minus(measure(count_matrix(b, images), weights))
    estimate = difference["abnormality_closed"]
    assert estimate.value == pytest.approx(25.0)
    assert estimate.low == 0.0 and estimate.high is not None and 50.0 <= estimate.high <= 75.0


def test_gain_and_leakage_by_hand() -> None:
    # With the image: 4 of 4 multiple-choice right. Blind: 2 of 4 right (50%); a random guess over
    # four options gets 25%, so leakage is 25 points and the multimodal gain 50.
    images = ["i1", "i2", "i3", "i4"]
    seen = [Scored(i, "pathology_mc", "A", True) for i in images]
    blind = [Scored(i, "pathology_mc", "A", i in ("i1", "i2")) for i in images]
    weights = draws(4, 0, seed=0)
    with_image, without = measure(count_matrix(seen, images), weights), measure(count_matrix(blind, images), weights)
    assert with_image.minus(without)["pathology_mc"].value == pytest.approx(50.0)
    chance = chance_levels({"pathology_mc": 4, "anatomy_mc": 4})
    assert chance["pathology_mc"] == 25.0 and chance["pathology_closed_yes"] == 50.0 and chance["anatomy_paired"] == 25.0
    assert leakage(without.estimates(), chance)["pathology_mc"].value == pytest.approx(25.0)
    # A blind run below chance leaks nothing.
    worse = [Scored(i, "pathology_mc", "A", False) for i in images]
    low = measure(count_matrix(worse, images), weights).estimates()
    assert leakage(low, chance)["pathology_mc"].value == 0.0
