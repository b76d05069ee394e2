"""Frozen copy of the option sampler before exchangeable option sets (issue 10), for the audit regression test.

For a pool of names (a region's pathologies plus "normal", or the regions) with counts n_x
in the data, every image with true name t draws k wrong names from its eligible set E_t
(the pool minus t and t's conflict group). We fit inclusion probabilities pi_x(t) so that
over the data each name is offered as a wrong answer k times as often as it is the right
one (sum_t n_t pi_x(t) = k n_x): a text-only model then sees every name right one time in
k + 1 wherever it appears, whatever the class imbalance. Names that cannot be matched
(more than 1/(k+1) of the pool) are offered as often as possible.

Draws use systematic sampling in a random order, which hits the fitted inclusion
probabilities exactly and always gives k distinct names (Madow 1949).
"""

from __future__ import annotations

import numpy as np

_FLOOR = 1e-200
_MAX_ITER = 3000
_TOL = 1e-10


def capped_proportional(weights: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Per row, probabilities min(1, c * w) summing to ``budget`` (rows of non-negative weights).

    Rows with fewer positive weights than their budget are impossible; callers guarantee
    enough eligible names.
    """
    capped = np.zeros(weights.shape, dtype=bool)
    result = np.zeros(weights.shape)
    for _ in range(weights.shape[1] + 1):
        free = np.where(capped, 0.0, weights)
        mass = free.sum(axis=1)
        scale = np.divide(budget - capped.sum(axis=1), mass, out=np.zeros_like(mass), where=mass > 0)
        result = np.where(capped, 1.0, free * scale[:, None])
        newly = (result > 1.0) & ~capped
        if not newly.any():
            break
        capped |= newly
    return np.minimum(result, 1.0)


def fit_inclusion(
    counts: np.ndarray,
    eligible: np.ndarray,
    k: int,
    fixed: dict[int, float] | None = None,
) -> np.ndarray:
    """Fit inclusion probabilities P[t, x] for drawing k wrong names given true name t.

    counts: n_x per name; eligible[t, x]: x may be offered when t is the answer; fixed maps a
    name index to a fixed inclusion probability on every row where it is eligible (the
    "no pathology seen" rate); its matching target is then ignored.
    """
    counts = np.asarray(counts, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    fixed = fixed or {}
    fixed_mask = np.zeros(len(counts), dtype=bool)
    fixed_values = np.zeros(eligible.shape)
    for column, value in fixed.items():
        fixed_mask[column] = True
        fixed_values[:, column] = np.where(eligible[:, column], value, 0.0)
    free = eligible & ~fixed_mask[None, :]
    budget = k - fixed_values.sum(axis=1)
    target = k * counts
    weights = (counts + 1.0) / (counts.max() + 1.0)
    probs = np.zeros(eligible.shape)
    for _ in range(_MAX_ITER):
        previous = probs
        probs = capped_proportional(np.where(free, np.maximum(weights, _FLOOR)[None, :], 0.0), budget)
        if np.abs(probs - previous).max() <= _TOL:
            break
        offered = counts @ probs
        # A name already offered on every image that may show it cannot grow further.
        saturated = ((probs >= 1.0 - 1e-9) | ~free | (counts[:, None] == 0)).all(axis=0)
        active = ~fixed_mask & (offered > 0) & ~(saturated & (offered < target))
        ratio = np.ones_like(weights)
        if active.any():
            # Aim at offered proportional to target among the names that can still move: the
            # exact match when feasible, equal right-answer rates when the pool forces excess.
            scale = offered[active].sum() / max(target[active].sum(), _FLOOR)
            ratio[active] = scale * target[active] / offered[active]
        # Damped multiplicative update; rescaling keeps weights in range when a name cannot
        # be matched (its weight would otherwise grow without bound).
        weights = weights * np.sqrt(ratio)
        weights = weights / weights.max()
    return probs + fixed_values


def systematic_draw(probs: np.ndarray, order_keys: np.ndarray, start: np.ndarray, k: int) -> np.ndarray:
    """Draw k distinct column indices per row with inclusion probabilities ``probs`` (rows sum to k).

    ``order_keys`` (same shape) randomise the order of the names; ``start`` in [0, 1) is the
    systematic start. Names with probability 0 are never drawn.
    """
    order = np.argsort(order_keys, axis=1, kind="stable")
    cum = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
    total = cum[:, -1:]
    points = (start[:, None] + np.arange(k)[None, :]) * (total / k) * (1.0 - 1e-12)
    position = (cum[:, None, :] <= points[:, :, None]).sum(axis=2)
    return np.take_along_axis(order, np.minimum(position, probs.shape[1] - 1), axis=1)


def inverse_cdf_draw(probs: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Draw one column index per row with probabilities ``probs`` (rows sum to 1)."""
    cum = np.cumsum(probs, axis=1)
    points = start[:, None] * cum[:, -1:] * (1.0 - 1e-12)
    return np.minimum((cum <= points).sum(axis=1), probs.shape[1] - 1)


def place_answer(answer: np.ndarray, wrong: np.ndarray, position: np.ndarray, shuffle_keys: np.ndarray) -> np.ndarray:
    """Options (rows of k + 1 indices): the wrong names in random order, the answer at ``position``."""
    k = wrong.shape[1]
    shuffled = np.take_along_axis(wrong, np.argsort(shuffle_keys[:, :k], axis=1, kind="stable"), axis=1)
    options = np.empty((len(answer), k + 1), dtype=wrong.dtype)
    at_answer = np.arange(k + 1)[None, :] == position[:, None]
    options[at_answer] = answer
    options[~at_answer] = shuffled.ravel()
    return options
