"""Question and caption templates: load, check placeholders per pool, expose paraphrase pools.

Templates are plain ``str.format`` strings. Every check happens at load time, so a typo in a
user's template file is a one-line error naming the file, pool and template before any work.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from .errors import TemplateError, did_you_mean
from .resources import check_keys, default_path, load_yaml

VARIANTS = ("train", "benchmark")


@dataclass(frozen=True)
class PoolRule:
    """Where a pool lives and which placeholders it may / must use."""

    file: str
    allowed: frozenset[str]
    required: tuple[frozenset[str], ...] = ()


_PATHOLOGY = frozenset({"pathology", "pathology_phrase"})
_REGION = frozenset({"region"})
POOL_RULES: dict[str, PoolRule] = {
    "prompt": PoolRule("captions.yaml", frozenset()),
    "caption_abnormal": PoolRule(
        "captions.yaml", frozenset({"modality"}) | _REGION | _PATHOLOGY, (_REGION, _PATHOLOGY)
    ),
    "caption_normal": PoolRule("captions.yaml", frozenset({"modality"}) | _REGION, (_REGION,)),
    "anatomy_open": PoolRule("questions.yaml", frozenset()),
    "anatomy_closed": PoolRule("questions.yaml", _REGION, (_REGION,)),
    "anatomy_mc": PoolRule("questions.yaml", frozenset()),
    "abnormality_closed": PoolRule("questions.yaml", _REGION),
    "pathology_open": PoolRule("questions.yaml", _REGION),
    "pathology_closed": PoolRule("questions.yaml", _REGION | _PATHOLOGY, (_PATHOLOGY,)),
    "pathology_closed_normal": PoolRule("questions.yaml", _REGION),
    "pathology_mc": PoolRule("questions.yaml", _REGION),
}
TEMPLATE_FILES = ("captions.yaml", "questions.yaml")
_CHOICE_FIELDS = frozenset({"letter", "option"})


@dataclass(frozen=True)
class Template:
    """One paraphrase: its id (``pool.variant.index``), text and placeholders."""

    id: str
    text: str
    fields: frozenset[str]

    def render(self, **values: str) -> str:
        """Fill the placeholders."""
        return self.text.format(**values)


@dataclass(frozen=True)
class TemplateSet:
    """All pools of both template files, checked."""

    pools: dict[str, dict[str, tuple[Template, ...]]]
    choice_line: str
    sources: dict[str, str]
    sha256: dict[str, str]

    def pool(self, name: str, variant: str) -> tuple[Template, ...]:
        """The paraphrases of one pool for ``train`` or ``benchmark``."""
        return self.pools[name][variant]


def placeholders(text: str, where: str) -> frozenset[str]:
    """Placeholder names of a format string; anything but plain ``{name}`` is an error."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc} in '{text}'")
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{where}: placeholder '{{{name}}}' must be a plain {{name}} in '{text}'")
        names.add(name)
    return frozenset(names)


def load_templates(directory: Path | str | None = None) -> TemplateSet:
    """Load ``captions.yaml`` and ``questions.yaml`` from ``directory`` (default: packaged)."""
    pools: dict[str, dict[str, tuple[Template, ...]]] = {}
    sources: dict[str, str] = {}
    hashes: dict[str, str] = {}
    choice_line = ""
    for file in TEMPLATE_FILES:
        path = Path(directory) / file if directory is not None else default_path("templates", file)
        doc = load_yaml(path, TemplateError)
        sources[file], hashes[file] = doc.source, doc.sha256
        expected = {p for p, rule in POOL_RULES.items() if rule.file == file}
        allowed_top = {"version", "pools"} | ({"choice_line"} if file == "questions.yaml" else set())
        check_keys(doc.data, allowed_top, doc.source, TemplateError, required={"pools"})
        raw_pools = doc.data["pools"]
        if not isinstance(raw_pools, dict):
            raise TemplateError(f"{doc.source}: 'pools' must be a mapping of pool name to paraphrases")
        for name in raw_pools:
            if name not in expected:
                raise TemplateError(f"{doc.source}: unknown pool '{name}'{did_you_mean(str(name), expected)}")
        for name in sorted(expected):
            if name not in raw_pools:
                raise TemplateError(f"{doc.source}: pool '{name}' is missing")
            pools[name] = _load_pool(name, raw_pools[name], doc.source)
        if file == "questions.yaml":
            choice_line = str(doc.data.get("choice_line", "{letter}. {option}"))
            where = f"{doc.source}: choice_line"
            fields = placeholders(choice_line, where)
            _check_fields(fields, _CHOICE_FIELDS, (frozenset({"letter"}), frozenset({"option"})), where, choice_line)
    return TemplateSet(pools=pools, choice_line=choice_line, sources=sources, sha256=hashes)


def _load_pool(name: str, spec: object, source: str) -> dict[str, tuple[Template, ...]]:
    where = f"{source}: pool '{name}'"
    if not isinstance(spec, dict):
        raise TemplateError(f"{where}: expected 'train' and 'benchmark' lists")
    check_keys(spec, set(VARIANTS), where, TemplateError, required=set(VARIANTS))
    rule = POOL_RULES[name]
    result: dict[str, tuple[Template, ...]] = {}
    for variant in VARIANTS:
        texts = spec[variant]
        if not isinstance(texts, list) or not texts:
            raise TemplateError(f"{where}: '{variant}' must be a non-empty list of paraphrases")
        templates = []
        for i, text in enumerate(texts):
            twhere = f"{where}, {variant} template {i}"
            if not isinstance(text, str) or not text.strip():
                raise TemplateError(f"{twhere}: expected a non-empty string")
            fields = placeholders(text, twhere)
            _check_fields(fields, rule.allowed, rule.required, twhere, text)
            templates.append(Template(id=f"{name}.{variant}.{i}", text=text, fields=fields))
        result[variant] = tuple(templates)
    shared = {t.text for t in result["train"]} & {t.text for t in result["benchmark"]}
    if shared:
        raise TemplateError(f"{where}: benchmark paraphrase also in train (must be held out): '{sorted(shared)[0]}'")
    return result


def _check_fields(
    fields: frozenset[str],
    allowed: frozenset[str],
    required: tuple[frozenset[str], ...],
    where: str,
    text: str,
) -> None:
    for field in sorted(fields):
        if field not in allowed:
            hint = did_you_mean(field, allowed)
            allowed_text = ", ".join(f"{{{a}}}" for a in sorted(allowed)) or "none"
            raise TemplateError(
                f"{where}: unknown placeholder {{{field}}}{hint} in '{text}' (allowed: {allowed_text})"
            )
    for group in required:
        if not fields & group:
            names = " or ".join(f"{{{g}}}" for g in sorted(group))
            raise TemplateError(f"{where}: needs {names} in '{text}'")
