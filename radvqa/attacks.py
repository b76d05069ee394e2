"""Text-only attackers: models that read a question and its options, never the image.

Each attack is a function ``(train, test, context) -> predictions`` over slimmed records (id,
slot, question, choices, answer, region, ...). ``train`` is the labelled data it may learn
from; ``test`` the questions it answers. They range from the naive (the most frequent answer,
the longest option) to the ones that beat radvqa's pre-exchangeability sampler: the option-set
lookup, the conflict-pair rule, a gradient-boosted option ranker that sees the other options,
and the sampler likelihood, a naive-Bayes model of which options are offered given the
answer, cross-fitted on the evaluated split itself. The audit runs them all and reports the
strongest.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import MissingDependencyError
from .evaluate import LETTERS, normalise
from .taxonomy import Taxonomy

Record = dict[str, Any]
Attack = Callable[[list[Record], list[Record], "Context"], list[str]]
_OPTION_LINE = re.compile(r"\n[A-D][.)]\s.*$", re.DOTALL)
_SMOOTH = 0.5


def _sklearn() -> Any:
    try:
        import sklearn.ensemble
        import sklearn.exceptions
        import sklearn.feature_extraction.text
        import sklearn.linear_model
    except ImportError:
        raise MissingDependencyError(
            "radvqa audit needs scikit-learn", hint="install the audit extra: pip install 'radvqa[audit]'"
        )
    return sklearn


@dataclass
class Context:
    """What an attacker may know besides the records: the taxonomy's names and exclusions."""

    taxonomy: Taxonomy
    regions: list[tuple[str, str]] = field(default_factory=list)  # (display name, normalised)
    names: dict[str, list[str]] = field(default_factory=dict)  # region display name -> option texts
    excluded: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, taxonomy: Taxonomy) -> Context:
        """Option texts and exclusion matrices per pool (anatomy: the region names, key '')."""
        pools = taxonomy.option_pools(contained=True)
        return cls(
            taxonomy,
            regions=[(r.name, normalise(r.name)) for r in taxonomy.regions.values()],
            names={pool: names for pool, (names, _) in pools.items()},
            excluded={pool: excluded for pool, (_, excluded) in pools.items()},
        )

    @property
    def pools(self) -> dict[str, tuple[list[str], np.ndarray]]:
        """(names, exclusions) per pool, as ``Taxonomy.option_pools`` gives them."""
        return {pool: (names, self.excluded[pool]) for pool, names in self.names.items()}

    def pool(self, record: Record) -> str:
        """The name pool a multiple-choice record draws from: its region, or '' for anatomy."""
        return "" if record["task"] == "anatomy" else str(record["region"])

    def indices(self, record: Record) -> list[int]:
        """Option indices in the pool (-1 for an option text the taxonomy does not know)."""
        names = self.names.get(self.pool(record), [])
        return [names.index(c) if c in names else -1 for c in record["choices"]]


def image_of(record: Record) -> str:
    """The image a question belongs to: its id up to the first '-'."""
    return str(record["id"]).split("-", 1)[0]


def _right(record: Record) -> int:
    return LETTERS.index(record["answer"])


def _majority(values: list[str]) -> str:
    """Most frequent value; ties go to the smallest, so the choice is deterministic."""
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, n in counts.items() if n == best)


def _best(scores: list[float]) -> str:
    return LETTERS[int(np.argmax(scores))]


# --- answers without options ----------------------------------------------------------------


def named_region(question: str, regions: list[tuple[str, str]]) -> str | None:
    """The region display name a question mentions, or None (none, or several)."""
    text = f" {normalise(_OPTION_LINE.sub('', question))} "
    found = [name for name, spelled in regions if f" {spelled} " in text]
    return found[0] if len(found) == 1 else None


def constant_by_region(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """Best constant answer from train, per region when the question names one."""
    overall = _majority([r["answer"] for r in train])
    by_region: dict[str, list[str]] = defaultdict(list)
    for record in train:
        named = named_region(record["question"], context.regions)
        if named is not None:
            by_region[named].append(record["answer"])
    constants = {k: _majority(v) for k, v in by_region.items()}
    out = []
    for record in test:
        named = named_region(record["question"], context.regions)
        out.append(constants.get(named, overall) if named is not None else overall)
    return out


def prior(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """The most frequent train answer of the slot."""
    return [_majority([r["answer"] for r in train])] * len(test)


def _fit_lr(features: Any, target: list[Any]) -> Any:
    sklearn = _sklearn()
    model = sklearn.linear_model.LogisticRegression(C=1.0, tol=1e-3, max_iter=500)
    with warnings.catch_warnings():
        # A non-converged fit is still a valid (weaker) text-only model; the library never warns.
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        model.fit(features, target)
    return model


def bow(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """Logistic regression on a bag of words (and bigrams) of the question with its options."""
    labels = [r["answer"] for r in train]
    if len(set(labels)) < 2 or not test:
        return prior(train, test, context)
    sklearn = _sklearn()
    vectorizer = sklearn.feature_extraction.text.CountVectorizer(ngram_range=(1, 2), binary=True, min_df=2)
    try:
        features = vectorizer.fit_transform([r["question"] for r in train])
    except ValueError:  # no word appears twice: nothing to learn from
        return prior(train, test, context)
    model = _fit_lr(features, labels)
    return [str(p) for p in model.predict(vectorizer.transform([r["question"] for r in test]))]


# --- multiple choice ------------------------------------------------------------------------


def longest(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """The longest option."""
    return [_best([len(c) for c in r["choices"]]) for r in test]


def _right_rates(train: list[Record], context: Context) -> dict[tuple[str, str], float]:
    """Smoothed share of the times each (pool, option) was offered that it was right."""
    right: Counter[tuple[str, str]] = Counter()
    seen: Counter[tuple[str, str]] = Counter()
    for record in train:
        pool = context.pool(record)
        for i, choice in enumerate(record["choices"]):
            seen[(pool, choice)] += 1
            right[(pool, choice)] += i == _right(record)
    return {k: (right[k] + _SMOOTH) / (n + 4 * _SMOOTH) for k, n in seen.items()}


def frequent(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """The option most often right in train among the times it was offered (per region)."""
    rates = _right_rates(train, context)
    return [_best([rates.get((context.pool(r), c), 0.25) for c in r["choices"]]) for r in test]


def set_lookup(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """P(answer | the set of four options) from train; unseen sets fall back to ``frequent``."""
    table: dict[tuple[str, frozenset[str]], Counter[str]] = defaultdict(Counter)
    for record in train:
        table[(context.pool(record), frozenset(record["choices"]))][record["choices"][_right(record)]] += 1
    fallback = frequent(train, test, context)
    out = []
    for record, default in zip(test, fallback):
        seen = table.get((context.pool(record), frozenset(record["choices"])))
        out.append(_best([seen[c] + 1e-3 * (LETTERS[i] == default) for i, c in enumerate(record["choices"])]) if seen else default)
    return out


def conflict_rule(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """Cross out options that may not stand beside another offered option, then prefer the option
    whose frequent conflict partners are missing (the answer's partners were never offered)."""
    frequency: Counter[tuple[str, int]] = Counter()
    for record in train:
        frequency[(context.pool(record), context.indices(record)[_right(record)])] += 1
    rates = _right_rates(train, context)
    out = []
    for record in test:
        pool, options = context.pool(record), context.indices(record)
        excluded = context.excluded.get(pool)
        if excluded is None or -1 in options:
            out.append(_best([rates.get((pool, c), 0.25) for c in record["choices"]]))
            continue
        scores = []
        for i, o in enumerate(options):
            crossed = any(excluded[o, p] for p in options if p != o)
            missing = sum(frequency[(pool, int(x))] for x in np.flatnonzero(excluded[o]) if x not in options)
            scores.append(-1e9 * crossed + missing + rates.get((pool, record["choices"][i]), 0.25))
        out.append(_best(scores))
    return out


def _inclusion_model(records: list[Record], context: Context) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pool: log prior of each answer and P(name offered | answer), smoothed, from labelled records."""
    answers: dict[str, Counter[int]] = defaultdict(Counter)
    offered: dict[str, Counter[tuple[int, int]]] = defaultdict(Counter)
    for record in records:
        pool, options = context.pool(record), context.indices(record)
        if -1 in options:
            continue
        t = options[_right(record)]
        answers[pool][t] += 1
        for o in options:
            if o != t:
                offered[pool][(t, o)] += 1
    model = {}
    for pool, counts in answers.items():
        n = len(context.names[pool])
        right = np.array([counts[t] for t in range(n)], dtype=np.float64)
        co = np.zeros((n, n))
        for (t, o), c in offered[pool].items():
            co[t, o] = c
        rate = (co + _SMOOTH) / (right[:, None] + 2 * _SMOOTH)
        model[pool] = (np.log((right + _SMOOTH) / (right.sum() + n * _SMOOTH)), rate)
    return model


def _likelihood_scores(record: Record, model: dict[str, tuple[np.ndarray, np.ndarray]], context: Context) -> list[float]:
    """log P(answer = o) + log P(the other options offered, the rest not | answer = o), per option."""
    pool, options = context.pool(record), context.indices(record)
    if pool not in model or -1 in options:
        return [0.0] * len(options)
    log_prior, rate = model[pool]
    shown = np.zeros(rate.shape[0], dtype=bool)
    shown[options] = True
    scores = []
    for o in options:
        others = shown.copy()
        others[o] = False
        absent = ~shown
        scores.append(float(log_prior[o] + np.log(rate[o, others]).sum() + np.log1p(-np.minimum(rate[o, absent], 1 - 1e-9)).sum()))
    return scores


def sampler(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """The sampler likelihood, cross-fitted on the evaluated split: learn which options are offered
    with each answer on one half of its images, answer the other half, and swap."""
    folds = [zlib.crc32(image_of(r).encode()) % 2 for r in test]
    models = [_inclusion_model([r for r, f in zip(test, folds) if f != k], context) for k in (0, 1)]
    return [_best(_likelihood_scores(r, models[f], context)) for r, f in zip(test, folds)]


def sampler_train(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """The sampler likelihood learned on train."""
    model = _inclusion_model(train, context)
    return [_best(_likelihood_scores(r, model, context)) for r in test]


def _option_tokens(record: Record, index: int) -> str:
    choices = record["choices"]
    lengths = [len(c) for c in choices]
    rank = sorted(lengths, reverse=True).index(lengths[index])
    option = normalise(choices[index]).replace(" ", "_") or "empty"
    words = " ".join(f"w={w}" for w in normalise(choices[index]).split())
    return f"opt={option} pos={LETTERS[index]} lenrank={rank} {words}"


def option_lr(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """Scores each option from its identity, words, position and length rank; picks the best."""
    if not test:
        return []
    sklearn = _sklearn()
    texts, target = [], []
    for record in train:
        for i in range(len(record["choices"])):
            texts.append(_option_tokens(record, i))
            target.append(int(i == _right(record)))
    vectorizer = sklearn.feature_extraction.text.CountVectorizer(token_pattern=r"\S+", lowercase=False, binary=True)
    model = _fit_lr(vectorizer.fit_transform(texts), target)
    rows = [_option_tokens(r, i) for r in test for i in range(len(r["choices"]))]
    return _pick(test, model.predict_proba(vectorizer.transform(rows))[:, 1])


def _pick(records: list[Record], probability: np.ndarray) -> list[str]:
    out, at = [], 0
    for record in records:
        n = len(record["choices"])
        out.append(_best(list(probability[at : at + n])))
        at += n
    return out


def _ranker_features(record: Record, context: Context, rates: dict[tuple[str, str], float],
                     model: dict[str, tuple[np.ndarray, np.ndarray]], ids: dict[tuple[str, str], int]) -> list[list[float]]:
    """One row per option: identity, position, length rank, its train right-rate, the other three
    options' right-rates, conflicts with and among the others, and the sampler likelihood."""
    choices, options = record["choices"], context.indices(record)
    excluded = context.excluded.get(context.pool(record))
    pool = context.pool(record)
    rate = [rates.get((pool, c), 0.25) for c in choices]
    likelihood = _likelihood_scores(record, model, context)
    lengths = [len(c) for c in choices]
    rows = []
    for i, c in enumerate(choices):
        others = [j for j in range(len(choices)) if j != i]
        if excluded is not None and -1 not in options:
            with_me = sum(bool(excluded[options[i], options[j]]) for j in others)
            among = sum(bool(excluded[options[a], options[b]]) for a in others for b in others if a < b)
            partners = float(excluded[options[i]].sum())
        else:
            with_me = among = 0
            partners = 0.0
        other_rates = [rate[j] for j in others]
        rows.append([
            float(ids.get((pool, c), -1)), float(i), float(sorted(lengths, reverse=True).index(lengths[i])),
            rate[i], float(np.mean(other_rates)), float(min(other_rates)), float(max(other_rates)),
            float(with_me), float(among), partners, likelihood[i] - max(likelihood[j] for j in others),
        ])
    return rows


def ranker(train: list[Record], test: list[Record], context: Context) -> list[str]:
    """Gradient-boosted option ranker over features of the option and of the other three options."""
    if not test:
        return []
    sklearn = _sklearn()
    rates, model = _right_rates(train, context), _inclusion_model(train, context)
    ids = {key: i for i, key in enumerate(sorted({(context.pool(r), c) for r in train for c in r["choices"]}))}
    features: list[list[float]] = []
    target: list[int] = []
    for record in train:
        rows = _ranker_features(record, context, rates, model, ids)
        features.extend(rows)
        target.extend(int(i == _right(record)) for i in range(len(rows)))
    if len(set(target)) < 2:
        return frequent(train, test, context)
    booster = sklearn.ensemble.HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, categorical_features=[0], random_state=0
    )
    x = np.array(features)
    x[:, 0] = np.where(x[:, 0] < 0, len(ids), x[:, 0]) % 250  # categories must stay below 255
    booster.fit(x, target)
    asked = np.array([row for r in test for row in _ranker_features(r, context, rates, model, ids)])
    asked[:, 0] = np.where(asked[:, 0] < 0, len(ids), asked[:, 0]) % 250
    return _pick(test, booster.predict_proba(asked)[:, 1])


OPEN_ATTACKS: dict[str, Attack] = {"prior": prior, "bow": bow}
MC_ATTACKS: dict[str, Attack] = {
    "prior": prior,
    "bow": bow,
    "longest": longest,
    "frequent": frequent,
    "option_lr": option_lr,
    "set_lookup": set_lookup,
    "conflict_rule": conflict_rule,
    "ranker": ranker,
    "sampler_train": sampler_train,
    "sampler": sampler,
}


# --- questions of one image together --------------------------------------------------------


def _named_options(question: str, names: list[str]) -> set[str]:
    text = f" {normalise(question)} "
    return {n for n in names if f" {normalise(n)} " in text}


def cross_question(test: list[Record], all_test: list[Record], context: Context) -> list[str]:
    """Answer a question from the other questions of its image: the closed questions of a task name
    the answer and one other name, the multiple-choice options contain the answer; intersect them."""
    by_image: dict[str, list[Record]] = defaultdict(list)
    for record in all_test:
        by_image[image_of(record)].append(record)
    out = []
    for record in test:
        mates = [m for m in by_image[image_of(record)] if m["id"] != record["id"] and m["task"] == record["task"]]
        closed = [m for m in mates if m["question_type"] == "closed" and "closed" in m["slot"]]
        mc = [m for m in mates if m["question_type"] == "multiple_choice"]
        pool = context.names.get("" if record["task"] == "anatomy" else str(record["region"]), [])
        if record["question_type"] == "multiple_choice":
            named = set().union(*(_named_options(m["question"], record["choices"]) for m in closed)) if closed else set()
            hits = [i for i, c in enumerate(record["choices"]) if c in named]
            out.append(LETTERS[hits[0]] if len(hits) == 1 else LETTERS[hits[0]] if hits else "A")
        elif record["question_type"] == "closed" and "closed" in record["slot"] and mc:
            asked = _named_options(record["question"], pool)
            options = set(mc[0]["choices"])
            other = [m for m in closed]
            other_named = set().union(*(_named_options(m["question"], pool) for m in other)) if other else set()
            mine_in, other_in = bool(asked & options), bool(other_named & options)
            out.append("yes" if mine_in and not other_in else "no" if other_in and not mine_in else "yes")
        else:
            out.append("")
    return out
