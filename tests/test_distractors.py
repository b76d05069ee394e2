import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from radvqa.distractors import (
    capped_proportional,
    fit_inclusion,
    inverse_cdf_draw,
    place_answer,
    systematic_draw,
)

counts_strategy = st.lists(st.integers(0, 5000), min_size=5, max_size=30)


@st.composite
def pools(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Counts and an eligibility matrix leaving every name at least 3 wrong options."""
    counts = np.array(draw(counts_strategy), dtype=float)
    n = len(counts)
    eligible = ~np.eye(n, dtype=bool)
    for _ in range(draw(st.integers(0, 3))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if a != b and eligible[a].sum() > 4 and eligible[b].sum() > 4:
            eligible[a, b] = eligible[b, a] = False
    return counts, eligible


@given(st.lists(st.floats(0.001, 1000), min_size=4, max_size=20), st.integers(1, 3))
def test_capped_proportional_sums_to_budget_and_caps_at_one(weights: list[float], k: int) -> None:
    w = np.array([weights])
    probs = capped_proportional(w, np.array([float(k)]))
    assert abs(probs.sum() - k) < 1e-9
    assert (probs <= 1.0).all() and (probs >= 0).all()
    # uncapped entries stay proportional to their weights
    free = probs[0] < 1.0 - 1e-12
    if free.sum() > 1:
        ratios = probs[0][free] / w[0][free]
        assert np.allclose(ratios, ratios[0])


@settings(max_examples=60, deadline=None)
@given(pools(), st.sampled_from([1, 3]))
def test_fitted_rows_are_valid_inclusion_probabilities(pool: tuple[np.ndarray, np.ndarray], k: int) -> None:
    counts, eligible = pool
    probs = fit_inclusion(counts, eligible, k)
    assert np.allclose(probs.sum(axis=1), k)
    assert (probs <= 1.0 + 1e-12).all() and (probs >= 0).all()
    assert (probs[~eligible] == 0).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(50, 200), min_size=6, max_size=25))
def test_feasible_pools_are_matched_exactly(counts_list: list[int]) -> None:
    """Every name is offered as a wrong answer k times as often as it is right."""
    counts = np.array(counts_list, dtype=float)
    eligible = ~np.eye(len(counts), dtype=bool)
    for k in (1, 3):
        if counts.max() > counts.sum() / (k + 1):
            continue
        probs = fit_inclusion(counts, eligible, k)
        offered = counts @ probs
        assert np.allclose(offered, k * counts, rtol=1e-4)


def test_unmatchable_name_spreads_excess_evenly() -> None:
    counts = np.array([100, 200, 300, 400, 500, 6000.0])
    probs = fit_inclusion(counts, ~np.eye(6, dtype=bool), 3)
    ratio = (counts @ probs) / (3 * counts)
    assert np.allclose(ratio[:5], ratio[0], rtol=1e-3)  # every small name equally over-offered
    assert ratio[5] < 1  # the dominant name is offered on every image it can be


def test_fixed_rate_is_respected() -> None:
    counts = np.array([400, 100, 200, 300, 150, 250.0])
    eligible = ~np.eye(6, dtype=bool)
    probs = fit_inclusion(counts, eligible, 3, fixed={0: 0.3})
    assert np.allclose(probs[1:, 0], 0.3) and probs[0, 0] == 0
    assert np.allclose(probs.sum(axis=1), 3)


def test_absent_names_fill_in_only_when_needed() -> None:
    counts = np.array([10, 10, 0, 0, 0, 0.0])
    probs = fit_inclusion(counts, ~np.eye(6, dtype=bool), 3)
    assert np.allclose(probs.sum(axis=1), 3)
    assert np.allclose(probs[0, 1], 1.0)  # the only present wrong name is always offered


@settings(max_examples=40, deadline=None)
@given(pools(), st.integers(0, 2**32 - 1))
def test_systematic_draw_gives_k_distinct_eligible_names(pool: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    counts, eligible = pool
    probs = fit_inclusion(counts, eligible, 3)
    rng = np.random.default_rng(seed)
    rows = probs[rng.integers(0, len(counts), 200)]
    picked = systematic_draw(rows, rng.random(rows.shape), rng.random(len(rows)), 3)
    assert picked.shape == (200, 3)
    assert (np.sort(picked, axis=1)[:, 1:] != np.sort(picked, axis=1)[:, :-1]).all()
    assert (np.take_along_axis(rows, picked, axis=1) > 0).all()


def test_systematic_draw_hits_inclusion_probabilities() -> None:
    row = np.array([1.0, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    rng = np.random.default_rng(0)
    n = 40000
    picked = systematic_draw(np.tile(row, (n, 1)), rng.random((n, len(row))), rng.random(n), 3)
    frequency = np.bincount(picked.ravel(), minlength=len(row)) / n
    assert np.abs(frequency - row).max() < 0.01


def test_inverse_cdf_draw() -> None:
    rng = np.random.default_rng(1)
    row = np.array([0.0, 0.25, 0.75])
    picked = inverse_cdf_draw(np.tile(row, (20000, 1)), rng.random(20000))
    assert (picked != 0).all()
    assert abs((picked == 2).mean() - 0.75) < 0.015


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_place_answer_puts_answer_at_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    answer = rng.integers(0, 5, 100)
    wrong = np.stack([answer + 10, answer + 20, answer + 30], axis=1)
    position = rng.integers(0, 4, 100)
    options = place_answer(answer, wrong, position, rng.random((100, 3)))
    assert (options[np.arange(100), position] == answer).all()
    assert (np.sort(options, axis=1) == np.sort(np.column_stack([answer, wrong]), axis=1)).all()
