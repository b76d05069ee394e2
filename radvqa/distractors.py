"""Exchangeable option sets: no text-only shortcut given the options a reader sees.

A pool is a list of names (a region's pathologies plus "normal", or the regions) with image
counts n_x and shares p_x. A question shows a k-set S of names: the four options of a
multiple-choice question (k = 4), or the name of a closed question together with the image's
own answer (k = 2: the "yes" question names the answer, the "no" question the other member).

One distribution Q over the *valid* k-sets (no two names excluded from each other: one
conflict group, or one option text inside another) is fitted so that name x lies in a set
with probability pi_x = k * p_x. An image with answer t draws its set with probability
Q(S) / pi_t among the sets that contain t. Then P(S, answer = t) = p_t Q(S) / pi_t = Q(S) / k
for every t in S: given the set, every member is the answer with probability exactly 1 / k
(SPEC section 3, "Exchangeability").

Q is the maximum-entropy distribution with those marginals, Q(S) proportional to the product
of per-name weights (a conditional Poisson design), fitted by Newton's method on the convex
dual. When k * p_x cannot be met (a name, or a group of mutually excluded names, above 1/k of
the pool), the fit saturates that group (one member in every set) and keeps the other names
proportional to their shares: a text-only reader then finds the saturated names right at
their share p, the least any sampler allows, and the rest at equal odds. ``Fit.leak`` is that
residual, computed exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np

_TOL = 1e-13
_MAX_NEWTON = 200
_MIX = 0.01  # uniform share mixed in when a fit would starve a name of every set
_ABSENT_COUNT = 0.5  # pseudo-count for names with no image, used only when the present ones cannot fill a set


def exclusions(texts: list[str], groups: list[set[int]], contained: bool) -> np.ndarray:
    """Names that may not share a set: one conflict group, or (``contained``) one text inside another."""
    n = len(texts)
    excluded = np.zeros((n, n), dtype=bool)
    for group in groups:
        for a in group:
            for b in group:
                excluded[a, b] = a != b
    if contained:
        lowered = [t.lower() for t in texts]
        for a in range(n):
            for b in range(n):
                if a != b and (lowered[a] in lowered[b] or lowered[b] in lowered[a]):
                    excluded[a, b] = True
    return excluded


def valid_sets(names: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """All k-sets (rows of sorted name indices) of ``names`` with no excluded pair."""
    combos = np.array(list(combinations(sorted(int(x) for x in names), k)), dtype=np.int64).reshape(-1, k)
    ok = np.ones(len(combos), dtype=bool)
    for i, j in combinations(range(k), 2):
        ok &= ~excluded[combos[:, i], combos[:, j]]
    return combos[ok]


@dataclass(frozen=True)
class Fit:
    """A fitted distribution over valid k-sets of a pool, and what a text-only reader can infer."""

    k: int
    counts: np.ndarray  # n_x, per name of the pool
    sets: np.ndarray  # (n_sets, k) name indices
    q: np.ndarray  # Q(S)
    inclusion: np.ndarray  # pi_x achieved
    target: np.ndarray  # k * p_x
    exact: bool  # pi = k p to 1e-9: every member of every set is right 1 / k of the time

    @property
    def shares(self) -> np.ndarray:
        """p_x."""
        return self.counts / max(float(self.counts.sum()), 1e-300)

    def posterior(self) -> np.ndarray:
        """(n_sets, k): P(answer = member | S) for each set and member, exact."""
        weight = np.divide(self.shares, self.inclusion, out=np.zeros_like(self.shares), where=self.inclusion > 0)
        member = weight[self.sets]
        total = member.sum(axis=1, keepdims=True)
        return np.divide(member, total, out=np.full_like(member, 1.0 / self.k), where=total > 0)

    @property
    def leak(self) -> float:
        """Best text-only accuracy over chance (1/k): E_S[max_t P(t | S)] - 1/k, exact."""
        if not len(self.sets) or self.counts.sum() <= 0:
            return 0.0
        weight = np.divide(self.shares, self.inclusion, out=np.zeros_like(self.shares), where=self.inclusion > 0)
        return float(max(0.0, (self.q * weight[self.sets].max(axis=1)).sum() - 1.0 / self.k))

    @property
    def single_name_leak(self) -> float:
        """For pairs (closed questions, which show one name of the pair): best accuracy of "is this
        name the answer?" over chance, E over questions of max(P(yes | name), P(no | name)) - 1/2."""
        weight = np.divide(self.shares, self.inclusion, out=np.zeros_like(self.shares), where=self.inclusion > 0)
        yes = np.bincount(self.sets.ravel(), weights=(self.q[:, None] * weight[self.sets]).ravel(), minlength=len(self.counts))
        # Each set {t, x} is asked once about each member; member x is the answer with mass Q w_x.
        total = np.bincount(self.sets.ravel(), weights=np.repeat(self.q * weight[self.sets].sum(axis=1), self.k),
                            minlength=len(self.counts))
        return float(max(0.0, np.maximum(yes, total - yes).sum() / max(total.sum(), 1e-300) - 0.5))

    def conditional(self, answer: int) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, other members) of the sets an image with ``answer`` draws from: Q(S) / pi_t."""
        hit = self.sets == answer
        rows = np.flatnonzero(hit.any(axis=1))
        probs = self.q[rows]
        total = probs.sum()
        if total <= 0:
            return np.zeros(0), np.zeros((0, self.k - 1), dtype=np.int64)
        others = self.sets[rows][~hit[rows]].reshape(len(rows), self.k - 1)
        return probs / total, others


def fit_sets(counts: np.ndarray, k: int, excluded: np.ndarray, candidates: np.ndarray | None = None) -> Fit:
    """Fit Q over the valid k-sets of the names with images (``candidates``: who may appear at all)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    allowed = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    present = allowed & (counts > 0)
    sets = valid_sets(np.flatnonzero(present), k, excluded)
    weights = counts.copy()
    if not len(sets):
        # Too few names with images to fill one set: names without images join at a tiny share.
        weights = np.where(allowed & (counts <= 0), _ABSENT_COUNT, counts)
        sets = valid_sets(np.flatnonzero(allowed), k, excluded)
    if not len(sets):
        raise ValueError(f"no valid {k}-set of names: too many exclusions")
    share = weights / weights.sum()
    target = k * share
    every = sets
    goal, sets = _achievable(share, k, sets, excluded)
    q = _max_entropy(sets, goal, n)
    inclusion = np.bincount(sets.ravel(), weights=np.repeat(q, k), minlength=n)
    if (inclusion[weights > 0] < 1e-9).any():
        # An infeasible goal (a name above 1/k whose conflict partners cannot stand beside it)
        # starved some name of every set: mix in 1% of the uniform distribution over all valid
        # sets so each name's images can still be asked; the leak is reported as it is.
        index = {tuple(row): i for i, row in enumerate(every.tolist())}
        mixed = np.full(len(every), _MIX / len(every))
        for row, mass in zip(sets.tolist(), q.tolist()):
            mixed[index[tuple(row)]] += (1 - _MIX) * mass
        sets, q = every, mixed
        inclusion = np.bincount(sets.ravel(), weights=np.repeat(q, k), minlength=n)
    exact = bool(np.abs(inclusion - target).max() <= 1e-9)
    return Fit(k=k, counts=weights, sets=sets, q=q, inclusion=inclusion, target=target, exact=exact)


def cliques(members: list[int], excluded: np.ndarray) -> list[list[int]]:
    """Maximal cliques of the exclusion graph on ``members`` (Bron-Kerbosch), singletons included."""
    found: list[list[int]] = []

    def extend(clique: list[int], candidates: list[int], done: list[int]) -> None:
        if not candidates and not done:
            found.append(clique)
            return
        for v in list(candidates):
            neighbours = set(np.flatnonzero(excluded[v]).tolist())
            extend(clique + [v], [c for c in candidates if c in neighbours], [d for d in done if d in neighbours])
            candidates.remove(v)
            done.append(v)

    extend([], list(members), [])
    return found + [[m] for m in members]


def _achievable(share: np.ndarray, k: int, sets: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inclusion vector to fit and the sets on its face.

    A group of mutually excluded names holds at most one member of a set, so its inclusion
    sums to at most 1: a group above 1/k of the pool is saturated (one member in every set,
    members in proportion to their shares), the remaining names share the rest in proportion.
    """
    members = sorted(set(sets.ravel().tolist()))
    groups = cliques(members, excluded)
    saturated: list[list[int]] = []
    taken: set[int] = set()
    while len(saturated) < k - 1:
        free = [m for m in members if m not in taken]
        scale = (k - len(saturated)) / share[free].sum()
        # A group can only be in every set if each other name may stand beside one of its members;
        # otherwise that name's images could not be asked, and the group is fitted as closely as
        # the other names allow instead (not exactly).
        over = [
            c for c in groups
            if not taken & set(c) and scale * share[c].sum() > 1.0 + 1e-12
            and not any(excluded[m, c].all() for m in members if m not in c)
        ]
        if not over:
            break
        worst = max(over, key=lambda c: (share[c].sum(), [-x for x in c]))
        saturated.append(worst)
        taken |= set(worst)
    goal = np.zeros(len(share))
    free = [m for m in members if m not in taken]
    goal[free] = share[free] * (k - len(saturated)) / share[free].sum()
    face = np.ones(len(sets), dtype=bool)
    for clique in saturated:
        goal[clique] = share[clique] / share[clique].sum()
        face &= np.isin(sets, clique).sum(axis=1) == 1
    return goal, sets[face] if face.any() else sets


def _max_entropy(sets: np.ndarray, goal: np.ndarray, n: int) -> np.ndarray:
    """Q(S) proportional to exp(sum of theta over S) with inclusion ``goal``: Newton on the convex dual.

    The dual log Z(theta) - theta . goal has gradient pi(theta) - goal and Hessian Cov(1_S);
    a backtracking line search keeps every step a descent. Stops at 1e-13 or when no step
    helps (a goal on the polytope's boundary, fitted as closely as floating point allows).
    """
    incidence = np.zeros((len(sets), n))
    np.put_along_axis(incidence, sets, 1.0, axis=1)
    used = incidence.any(axis=0)
    theta = np.where(used, np.log(np.maximum(goal, 1e-300)), 0.0)

    def state(t: np.ndarray) -> tuple[float, np.ndarray]:
        logits = incidence @ t
        top = logits.max()
        weights = np.exp(logits - top)
        z = weights.sum()
        return float(np.log(z) + top - t @ goal), weights / z

    value, q = state(theta)
    for _ in range(_MAX_NEWTON):
        inclusion = q @ incidence
        gradient = inclusion - goal
        if np.abs(gradient[used]).max() <= _TOL:
            break
        weighted = incidence[:, used] * q[:, None]
        hessian = incidence[:, used].T @ weighted - np.outer(inclusion[used], inclusion[used])
        step = np.zeros(n)
        step[used] = -np.linalg.lstsq(hessian + 1e-12 * np.eye(used.sum()), gradient[used], rcond=None)[0]
        slope = float(gradient @ step)
        size = 1.0
        norm = np.abs(gradient[used]).max()
        while size > 1e-10:
            candidate_value, candidate_q = state(theta + size * step)
            # Near the optimum the dual's change drowns in rounding: a step that shrinks the
            # gradient is then taken on that evidence instead.
            if candidate_value <= value + 1e-4 * size * slope or (
                norm < 1e-6 and np.abs((candidate_q @ incidence - goal)[used]).max() < norm
            ):
                break
            size /= 2
        else:
            break
        theta, value, q = theta + size * step, candidate_value, candidate_q
    return q


def pool_residual(
    answers: Mapping[str, Mapping[str, int]], pools: Mapping[str, tuple[list[str], np.ndarray]], k: int
) -> float:
    """The unavoidable text-only gain (a fraction) of a split from its answers' counts per pool.

    ``answers`` maps a pool name to answer text -> count; each pool's exact leak (k = 2: for
    closed questions, which show one name) is weighted by its share of the answers.
    """
    total = sum(sum(seen.values()) for seen in answers.values())
    gain = 0.0
    for pool, seen in answers.items():
        if pool not in pools:
            continue
        names, excluded = pools[pool]
        vector = np.array([seen.get(n, 0) for n in names], dtype=np.float64)
        if vector.sum() <= 0:
            continue
        fit = fit_sets(vector, k, excluded)
        gain += float(vector.sum()) / total * (fit.leak if k > 2 else fit.single_name_leak)
    return gain


@dataclass(frozen=True)
class DrawTable:
    """Conditional set draws for many rows (one row per answer or class), flattened for vectorised lookup.

    Row r's cumulative probabilities are stored as r + cumsum in ``cum``, so one
    ``searchsorted`` over every image of a block finds each image's set.
    """

    cum: np.ndarray  # float64, increasing
    others: np.ndarray  # (entries, k - 1) name indices

    @classmethod
    def build(cls, rows: list[tuple[np.ndarray, np.ndarray]], k: int) -> DrawTable:
        """From per-row (probabilities, other members); a row without sets draws nothing valid."""
        cums, others = [], []
        for r, (probs, members) in enumerate(rows):
            if not len(probs):
                probs, members = np.ones(1), np.full((1, k - 1), -1, dtype=np.int64)
            cum = np.cumsum(probs / probs.sum())
            cum[-1] = 1.0
            cums.append(r + cum)
            others.append(members)
        return cls(np.concatenate(cums), np.concatenate(others).astype(np.int64))

    def draw(self, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """The other members of the set drawn for each (row, uniform in [0, 1))."""
        points = rows.astype(np.float64) + np.minimum(uniform, 1.0 - 1e-9)
        return self.others[np.searchsorted(self.cum, points, side="right")]


def place_answer(answer: np.ndarray, wrong: np.ndarray, position: np.ndarray, shuffle_keys: np.ndarray) -> np.ndarray:
    """Options (rows of k + 1 indices): the wrong names in random order, the answer at ``position``."""
    k = wrong.shape[1]
    shuffled = np.take_along_axis(wrong, np.argsort(shuffle_keys[:, :k], axis=1, kind="stable"), axis=1)
    options = np.empty((len(answer), k + 1), dtype=wrong.dtype)
    at_answer = np.arange(k + 1)[None, :] == position[:, None]
    options[at_answer] = answer
    options[~at_answer] = shuffled.ravel()
    return options
