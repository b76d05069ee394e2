"""Exchangeable option sets: exact where the pool allows it, checked exactly and by simulation."""

from collections import Counter
from itertools import combinations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from radvqa.distractors import DrawTable, exclusions, fit_sets, place_answer, valid_sets


@st.composite
def pools(draw: st.DrawFn, low: int = 0, high: int = 5000) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    """Random counts and conflict groups (up to three, of two or three names) over 6-24 names."""
    n = draw(st.integers(6, 24))
    counts = np.array(draw(st.lists(st.integers(low, high), min_size=n, max_size=n)), dtype=float)
    if counts.sum() == 0:
        counts[0] = 1
    groups = []
    for _ in range(draw(st.integers(0, 3))):
        size = draw(st.integers(2, 3))
        groups.append(set(draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size, unique=True))))
    return counts, exclusions([f"name {i}" for i in range(n)], groups, False), groups


def _clique_shares_below(counts: np.ndarray, groups: list[set[int]], bound: float) -> bool:
    share = counts / counts.sum()
    return share.max() < bound and all(share[list(g)].sum() < bound for g in groups)


@settings(max_examples=80, deadline=None)
@given(pools(), st.sampled_from([2, 4]))
def test_fit_is_a_distribution_over_valid_sets(pool, k: int) -> None:
    counts, excluded, _ = pool
    fit = fit_sets(counts, k, excluded)
    assert (fit.q >= 0).all() and abs(fit.q.sum() - 1) < 1e-12
    for i, j in combinations(range(k), 2):
        assert not excluded[fit.sets[:, i], fit.sets[:, j]].any()
    assert (np.sort(fit.sets, axis=1) == fit.sets).all() and len(np.unique(fit.sets, axis=0)) == len(fit.sets)
    assert abs(fit.inclusion.sum() - k) < 1e-9
    # The exact text-only reader never does worse than chance, and exactness means no leak.
    assert fit.leak >= 0
    if fit.exact:
        assert fit.leak < 1e-9


@settings(max_examples=80, deadline=None)
@given(pools(low=20, high=200), st.sampled_from([2, 4]))
def test_exact_fit_gives_one_in_k_for_every_member_of_every_set(pool, k: int) -> None:
    """P(answer = o | S) = p_o Q(S) / pi_o / P(S) is 1/k to 1e-9 whenever no group is above 1/k."""
    counts, excluded, groups = pool
    fit = fit_sets(counts, k, excluded)
    if _clique_shares_below(counts, groups, 1.0 / k - 1e-6):
        assert fit.exact, (fit.inclusion, fit.target)
    if fit.exact:
        assert np.abs(fit.inclusion - k * counts / counts.sum()).max() < 1e-9
        assert np.abs(fit.posterior() - 1.0 / k).max() < 1e-9


@settings(max_examples=25, deadline=None)
@given(pools(low=20, high=200), st.integers(0, 2**32 - 1))
def test_realised_draws_are_exchangeable_given_the_set(pool, seed: int) -> None:
    """Simulate answers in proportion to the counts and draw each image's set: every frequent set's
    members are right as often as the exact posterior says (1/4 where the fit is exact)."""
    counts, excluded, _ = pool
    fit = fit_sets(counts, 4, excluded)
    assume(set(fit.sets.ravel().tolist()) == set(range(len(counts))))  # the taxonomy check rejects the rest
    table = DrawTable.build([fit.conditional(t) for t in range(len(counts))], 4)
    rng = np.random.default_rng(seed)
    n = 60_000
    answers = rng.choice(len(counts), size=n, p=counts / counts.sum())
    others = table.draw(answers, rng.random(n))
    assert (others >= 0).all()
    shown = np.sort(np.column_stack([answers, others]), axis=1)
    lookup = {tuple(s): r for r, s in enumerate(fit.sets.tolist())}
    rows = np.array([lookup[tuple(s)] for s in shown.tolist()])
    posterior = fit.posterior()
    for r, m in Counter(rows.tolist()).items():
        if m < 300:
            continue
        drawn = rows == r
        for member, expected in zip(fit.sets[r], posterior[r]):
            rate = float((answers[drawn] == member).mean())
            assert abs(rate - expected) < 5 * (expected * (1 - expected) / m) ** 0.5 + 1e-9


def test_dominant_name_is_in_every_set_and_leaks_only_its_share() -> None:
    """A name above a quarter cannot be matched; the least leak any sampler allows is its share."""
    counts = np.array([100, 200, 300, 400, 500, 6000.0])
    fit = fit_sets(counts, 4, exclusions([str(i) for i in range(6)], [], False))
    assert not fit.exact
    assert (fit.sets == 5).any(axis=1).all()
    share = counts[5] / counts.sum()
    assert abs(fit.leak - (share - 0.25)) < 1e-9
    posterior = fit.posterior()
    others = posterior[fit.sets != 5].reshape(len(fit.sets), 3)
    assert np.allclose(others, others[0, 0])  # the small names stay exchangeable among themselves


def test_conflict_group_above_a_quarter_is_saturated() -> None:
    counts = np.array([300, 300, 100, 100, 100, 100, 100, 100.0])
    fit = fit_sets(counts, 4, exclusions([str(i) for i in range(8)], [{0, 1}], False))
    assert (np.isin(fit.sets, [0, 1]).sum(axis=1) == 1).all()
    assert abs(fit.inclusion[[0, 1]].sum() - 1) < 1e-9


def test_contained_text_and_conflicts_are_excluded() -> None:
    texts = ["bladder pathology", "gallbladder pathology", "gallstone", "renal lesion", "liver lesion", "ascites"]
    excluded = exclusions(texts, [{2, 1}], True)
    assert excluded[0, 1] and excluded[1, 0] and excluded[1, 2] and not excluded[3, 4]
    sets = valid_sets(np.arange(6), 4, excluded)
    for s in sets.tolist():
        assert not ({0, 1} <= set(s) or {1, 2} <= set(s))


def test_absent_names_fill_in_only_when_needed() -> None:
    counts = np.array([10, 10, 0, 0, 0, 0.0])
    fit = fit_sets(counts, 4, exclusions([str(i) for i in range(6)], [], False))
    assert len(fit.sets) and (np.isin(fit.sets, [0, 1]).sum(axis=1) == 2).all()
    full = fit_sets(np.array([10, 10, 10, 10, 0, 0.0]), 4, exclusions([str(i) for i in range(6)], [], False))
    assert full.sets.tolist() == [[0, 1, 2, 3]]  # names without images are never offered when avoidable


def test_draw_table_hits_conditional_probabilities() -> None:
    rows = [(np.array([0.5, 0.25, 0.25]), np.array([[1], [2], [3]])), (np.array([1.0]), np.array([[0]]))]
    table = DrawTable.build(rows, 2)
    rng = np.random.default_rng(0)
    picked = table.draw(np.zeros(40_000, dtype=np.int64), rng.random(40_000))[:, 0]
    assert abs((picked == 1).mean() - 0.5) < 0.01 and abs((picked == 3).mean() - 0.25) < 0.01
    assert (table.draw(np.ones(10, dtype=np.int64), rng.random(10))[:, 0] == 0).all()
    edge = table.draw(np.array([0, 1]), np.array([1.0 - 2**-53, 0.0]))
    assert edge[:, 0].tolist() == [3, 0]  # a uniform at the top of a row stays in that row


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
