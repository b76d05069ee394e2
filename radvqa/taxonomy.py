"""The taxonomy: RadImageNet class folders -> regions, pathologies and clean display names.

Data lives in ``configs/taxonomy.yaml``; this module validates it and answers lookups.
Classes are keyed on (modality, anatomy folder, pathology folder) because the same pathology
folder name is used by several regions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .resources import check_keys, default_path, load_yaml

if TYPE_CHECKING:
    import numpy as np

_TOP_KEYS = frozenset(
    {"version", "normal", "modalities", "skipped_modalities", "anatomy_aliases", "regions", "pathologies"}
)
_REGION_KEYS = frozenset({"name", "synonyms", "classes", "conflicts"})
_PATHOLOGY_KEYS = frozenset({"name", "article", "synonyms", "by_region"})
_NORMAL_KEYS = frozenset({"folder", "name", "answer"})
_MC_WRONG_OPTIONS = 3
_BAD_DISPLAY = re.compile(r"[_+]")


@dataclass(frozen=True)
class PathologyName:
    """How one pathology is written in one region."""

    key: str
    name: str
    article: str = ""
    synonyms: tuple[str, ...] = ()

    @property
    def phrase(self) -> str:
        """The name with its indefinite article when countable ("a plantar plate tear")."""
        return f"{self.article} {self.name}" if self.article else self.name


@dataclass(frozen=True)
class Region:
    """An anatomical region with the pathology keys found in it and their conflicts."""

    key: str
    name: str
    synonyms: tuple[str, ...]
    pathologies: tuple[str, ...]
    conflicts: dict[str, frozenset[str]] = field(default_factory=dict)

    def conflicts_of(self, pathology: str) -> frozenset[str]:
        """Pathologies that overlap clinically with ``pathology`` (never including itself)."""
        return self.conflicts.get(pathology, frozenset())


@dataclass(frozen=True)
class ImageClass:
    """One RadImageNet class folder, resolved."""

    index: int
    modality: str
    anatomy: str
    pathology: str
    region: str
    modality_name: str
    region_name: str
    pathology_name: str
    pathology_phrase: str
    is_abnormal: bool

    @property
    def folder(self) -> str:
        """The class folder relative to the modality root's parent, e.g. ``MR/af/intra``."""
        return f"{self.modality}/{self.anatomy}/{self.pathology}"

    @property
    def label(self) -> str:
        """The raw RadImageNet label, e.g. ``af-Plantar_plate_tear``."""
        return f"{self.anatomy}-{self.pathology}"


@dataclass(frozen=True)
class Taxonomy:
    """Validated taxonomy: regions, class table and display names."""

    regions: dict[str, Region]
    classes: tuple[ImageClass, ...]
    names: dict[tuple[str, str], PathologyName]
    normal_folder: str
    normal_name: str
    normal_answer: str
    modalities: dict[str, str]
    skipped_modalities: tuple[str, ...]
    anatomy_aliases: dict[tuple[str, str], str]
    source: str
    sha256: str
    data: dict[str, Any]
    _index: dict[tuple[str, str, str], int] = field(default_factory=dict, repr=False)

    def resolve(self, modality: str, anatomy: str, pathology: str) -> ImageClass | None:
        """The class for a folder triple (anatomy aliases applied), or None if unknown."""
        anatomy = self.anatomy_aliases.get((modality, anatomy), anatomy)
        index = self._index.get((modality, anatomy, pathology))
        return None if index is None else self.classes[index]

    def class_index(self, modality: str, anatomy: str, pathology: str) -> int:
        """Index of a folder triple in ``classes``, or -1 when unknown."""
        anatomy = self.anatomy_aliases.get((modality, anatomy), anatomy)
        return self._index.get((modality, anatomy, pathology), -1)

    def name(self, region: str, pathology: str) -> PathologyName:
        """Display name of a pathology key within a region."""
        return self.names[(region, pathology)]

    def answer_text(self, region: str, pathology: str) -> str:
        """The open/multiple-choice answer for a pathology ("no pathology seen" when normal)."""
        if pathology == self.normal_folder:
            return self.normal_answer
        return self.names[(region, pathology)].name

    def exclusions(self, region: str, contained: bool) -> np.ndarray:
        """Pathologies of a region that may not share a question: one conflict group, or (``contained``)
        one answer text inside another's (SPEC section 3: valid option sets)."""
        from .distractors import exclusions

        spec = self.regions[region]
        names = spec.pathologies
        groups = [{t, names.index(o)} for t, n in enumerate(names) for o in spec.conflicts_of(n)]
        return exclusions([self.answer_text(region, n) for n in names], groups, contained)

    def option_pools(self, contained: bool) -> dict[str, tuple[list[str], np.ndarray]]:
        """Every pool options are drawn from, by name: '' for anatomy (the region names), a region's
        display name for its pathology answers; each with its exclusion matrix (see ``exclusions``)."""
        from .distractors import exclusions

        regions = [r.name for r in self.regions.values()]
        pools = {"": (regions, exclusions(regions, [], contained))}
        for key, region in self.regions.items():
            pools[region.name] = ([self.answer_text(key, n) for n in region.pathologies], self.exclusions(key, contained))
        return pools

    def raw_folder_names(self) -> set[str]:
        """Raw folder names that must never appear as a word in generated text.

        Names identical to their display text (``ascites``, ``normal``) are excluded: they are
        plain English.
        """
        display = {n.name for n in self.names.values()} | {r.name for r in self.regions.values()}
        display_words = {w for d in display for w in d.split()}
        raw: set[str] = set()
        for cls in self.classes:
            for name in (cls.anatomy, cls.pathology):
                if name not in display and name not in display_words:
                    raw.add(name)
        raw.update(a for (_, a) in self.anatomy_aliases)
        return raw


def load_taxonomy(path: Path | str | None = None) -> Taxonomy:
    """Load and validate a taxonomy file (the packaged default when ``path`` is None)."""
    doc = load_yaml(Path(path) if path is not None else default_path("configs", "taxonomy.yaml"))
    return _build(doc.data, doc.source, doc.sha256)


def taxonomy_from_dict(data: dict[str, Any], source: str, sha256: str = "") -> Taxonomy:
    """Validate a taxonomy already parsed from YAML (e.g. the copy recorded in a manifest)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a taxonomy mapping")
    return _build(data, source, sha256)


def _as_str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of names")
    return list(value)


def _pathology_name(key: str, spec: Any, where: str) -> PathologyName:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name'")
    check_keys(spec, _PATHOLOGY_KEYS - {"by_region"}, where, required={"name"})
    name = spec["name"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    if _BAD_DISPLAY.search(name):
        raise ConfigError(f"{where}: display name '{name}' contains '_' or '+'")
    article = spec.get("article", "")
    if article not in ("", "a", "an"):
        raise ConfigError(f"{where}: article must be 'a' or 'an', not '{article}'")
    synonyms = tuple(_as_str_list(spec.get("synonyms", []), f"{where}.synonyms"))
    return PathologyName(key=key, name=name, article=article, synonyms=synonyms)


def _build(data: dict[str, Any], source: str, sha256: str) -> Taxonomy:
    where = source
    check_keys(data, _TOP_KEYS, where, required={"normal", "modalities", "regions", "pathologies"})
    normal = data["normal"]
    if not isinstance(normal, dict):
        raise ConfigError(f"{where}: 'normal' must be a mapping")
    check_keys(normal, _NORMAL_KEYS, f"{where}: normal", required=_NORMAL_KEYS)
    modalities = {str(k): str(v) for k, v in dict(data["modalities"]).items()}
    aliases: dict[tuple[str, str], str] = {}
    for modality, mapping in dict(data.get("anatomy_aliases") or {}).items():
        for alias, target in dict(mapping).items():
            aliases[(str(modality), str(alias))] = str(target)

    pathology_specs = data["pathologies"]
    if not isinstance(pathology_specs, dict):
        raise ConfigError(f"{where}: 'pathologies' must be a mapping")

    regions: dict[str, Region] = {}
    names: dict[tuple[str, str], PathologyName] = {}
    classes: list[ImageClass] = []
    index: dict[tuple[str, str, str], int] = {}
    for region_key, spec in dict(data["regions"]).items():
        rwhere = f"{where}: region '{region_key}'"
        if not isinstance(spec, dict):
            raise ConfigError(f"{rwhere}: expected a mapping")
        check_keys(spec, _REGION_KEYS, rwhere, required={"name", "classes"})
        region_name = str(spec["name"])
        if _BAD_DISPLAY.search(region_name):
            raise ConfigError(f"{rwhere}: display name '{region_name}' contains '_' or '+'")
        keys: set[str] = set()
        for folder, pathologies in dict(spec["classes"]).items():
            parts = str(folder).split("/")
            if len(parts) != 2 or parts[0] not in modalities:
                raise ConfigError(
                    f"{rwhere}: class folder '{folder}' must be MODALITY/anatomy with MODALITY in "
                    f"{sorted(modalities)}"
                )
            modality, anatomy = parts
            for pathology in _as_str_list(pathologies, f"{rwhere}.classes.{folder}"):
                if pathology not in pathology_specs:
                    raise ConfigError(
                        f"{rwhere}: pathology '{pathology}' of {folder} is not under 'pathologies'"
                    )
                if (modality, anatomy, pathology) in index:
                    raise ConfigError(f"{rwhere}: class {folder}/{pathology} is listed twice")
                keys.add(pathology)
                display = _region_name(pathology, pathology_specs[pathology], region_key, where, normal)
                names[(region_key, pathology)] = display
                index[(modality, anatomy, pathology)] = len(classes)
                classes.append(
                    ImageClass(
                        index=len(classes),
                        modality=modality,
                        anatomy=anatomy,
                        pathology=pathology,
                        region=region_key,
                        modality_name=modalities[modality],
                        region_name=region_name,
                        pathology_name=display.name,
                        pathology_phrase=display.phrase,
                        is_abnormal=pathology != normal["folder"],
                    )
                )
        conflicts = _conflicts(spec.get("conflicts") or [], keys, rwhere)
        regions[region_key] = Region(
            key=region_key,
            name=region_name,
            synonyms=tuple(_as_str_list(spec.get("synonyms", []), f"{rwhere}.synonyms")),
            pathologies=tuple(sorted(keys)),
            conflicts=conflicts,
        )
        _check_region(regions[region_key], names, rwhere)

    unused = set(pathology_specs) - {k for (_, k) in names}
    if unused:
        raise ConfigError(f"{where}: pathologies not used by any class: {', '.join(sorted(unused))}")
    region_names = [r.name for r in regions.values()]
    if len(set(region_names)) != len(region_names):
        raise ConfigError(f"{where}: two regions share a display name")
    taxonomy = Taxonomy(
        regions=regions,
        classes=tuple(classes),
        names=names,
        normal_folder=str(normal["folder"]),
        normal_name=str(normal["name"]),
        normal_answer=str(normal["answer"]),
        modalities=modalities,
        skipped_modalities=tuple(_as_str_list(data.get("skipped_modalities", []), f"{where}: skipped_modalities")),
        anatomy_aliases=aliases,
        source=source,
        sha256=sha256,
        data=data,
        _index=index,
    )
    for region_key in regions:
        _check_option_sets(taxonomy, region_key, f"{where}: region '{region_key}'")
    return taxonomy


def _region_name(
    key: str, spec: Any, region: str, where: str, normal: dict[str, Any]
) -> PathologyName:
    pwhere = f"{where}: pathology '{key}'"
    if isinstance(spec, dict):
        check_keys(spec, _PATHOLOGY_KEYS, pwhere, required={"name"})
        overrides = spec.get("by_region") or {}
        if region in overrides:
            return _pathology_name(key, overrides[region], f"{pwhere} in region '{region}'")
        spec = {k: v for k, v in spec.items() if k != "by_region"}
    name = _pathology_name(key, spec, pwhere)
    if key == normal["folder"]:
        return PathologyName(key=key, name=str(normal["name"]), synonyms=name.synonyms)
    return name


def _conflicts(groups: Any, keys: set[str], where: str) -> dict[str, frozenset[str]]:
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: 'conflicts' must be a list of groups")
    result: dict[str, set[str]] = {}
    for group in groups:
        members = _as_str_list(group, f"{where}.conflicts")
        for member in members:
            if member not in keys:
                raise ConfigError(f"{where}: conflict group names '{member}', which is not in this region")
        for member in members:
            result.setdefault(member, set()).update(m for m in members if m != member)
    return {k: frozenset(v) for k, v in result.items()}


def _check_region(region: Region, names: dict[tuple[str, str], PathologyName], where: str) -> None:
    displays = [names[(region.key, k)].name for k in region.pathologies]
    if len(set(displays)) != len(displays):
        raise ConfigError(f"{where}: two pathologies share a display name")
    for key in region.pathologies:
        wrong = len(region.pathologies) - 1 - len(region.conflicts_of(key))
        if wrong < _MC_WRONG_OPTIONS:
            raise ConfigError(
                f"{where}: pathology '{key}' has only {wrong} possible wrong options "
                f"(needs {_MC_WRONG_OPTIONS}); shrink its conflict groups"
            )


def _check_option_sets(taxonomy: Taxonomy, region: str, where: str) -> None:
    """Every pathology must fit in at least one valid 4-option set, or its images could not be asked."""
    import numpy as np

    from .distractors import valid_sets

    names = taxonomy.regions[region].pathologies
    sets = valid_sets(np.arange(len(names)), _MC_WRONG_OPTIONS + 1, taxonomy.exclusions(region, True))
    for i in sorted(set(range(len(names))) - set(sets.ravel().tolist())):
        raise ConfigError(
            f"{where}: pathology '{names[i]}' fits in no set of {_MC_WRONG_OPTIONS + 1} options without a conflict "
            "or one option's text inside another's; shrink its conflict groups"
        )
