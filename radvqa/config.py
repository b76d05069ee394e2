"""Generation settings: packaged defaults, an optional user YAML file, then CLI overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from .errors import ConfigError, did_you_mean
from .resources import check_keys, default_path, load_yaml

MATCHED = "matched"
_TOP_KEYS = frozenset({"seed", "workers", "shard_size", "split_ratios", "distractors", "benchmark"})
_DISTRACTOR_KEYS = frozenset({"no_pathology_option_rate"})
_BENCHMARK_KEYS = {
    "images": "benchmark_images",
    "normal_fraction": "normal_fraction",
    "region_cap": "region_cap",
    "answer_cap": "answer_cap",
    "check_images": "check_images",
    "layout": "benchmark_layout",
}
SPLITS = ("train", "val", "test")
COMMAND_LINE = "command line"
# per-image: 1,000 images with their nine questions; per-slot: nine disjoint image sets, one slot each
LAYOUTS = ("per-image", "per-slot")


@dataclass(frozen=True)
class Config:
    """Every knob of a generation run; recorded verbatim in the manifest."""

    seed: int = 0
    workers: int = 1
    shard_size: int = 500_000
    split_ratios: dict[str, float] = field(
        default_factory=lambda: {"train": 0.889, "val": 0.037, "test": 0.074}
    )
    no_pathology_option_rate: float | str = MATCHED
    benchmark_images: int | None = None
    normal_fraction: float | None = None
    region_cap: float = 0.25
    answer_cap: float = 0.25
    check_images: bool = True
    benchmark_layout: str = "per-image"
    source: str = "defaults"

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the non-None overrides applied and re-checked."""
        values = {k: v for k, v in overrides.items() if v is not None}
        updated = replace(self, **values)
        _check(updated, COMMAND_LINE, frozenset(values))
        return updated

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the manifest."""
        return asdict(self)


def load_config(path: Path | str | None = None) -> Config:
    """Load the packaged defaults, then the user's file on top when given."""
    base = _from_mapping(load_yaml(default_path("configs", "default.yaml")).data, "defaults")
    if path is None:
        return base
    doc = load_yaml(Path(path))
    return _from_mapping(doc.data, doc.source, base)


def _from_mapping(data: dict[str, Any], where: str, base: Config | None = None) -> Config:
    check_keys(data, _TOP_KEYS, where)
    values: dict[str, Any] = {}
    for key in ("seed", "workers", "shard_size"):
        if key in data:
            values[key] = data[key]
    if "split_ratios" in data:
        ratios = data["split_ratios"]
        if not isinstance(ratios, dict):
            raise ConfigError(f"{where}: split_ratios must map train/val/test to shares")
        check_keys(ratios, set(SPLITS), f"{where}: split_ratios", required=set(SPLITS))
        values["split_ratios"] = {k: ratios[k] for k in SPLITS}
    if "distractors" in data:
        distractors = data["distractors"] or {}
        if not isinstance(distractors, dict):
            raise ConfigError(f"{where}: distractors must be a mapping")
        check_keys(distractors, _DISTRACTOR_KEYS, f"{where}: distractors")
        if "no_pathology_option_rate" in distractors:
            values["no_pathology_option_rate"] = distractors["no_pathology_option_rate"]
    if "benchmark" in data:
        benchmark = data["benchmark"] or {}
        if not isinstance(benchmark, dict):
            raise ConfigError(f"{where}: benchmark must be a mapping")
        check_keys(benchmark, set(_BENCHMARK_KEYS), f"{where}: benchmark")
        values.update({_BENCHMARK_KEYS[k]: v for k, v in benchmark.items()})
    config = replace(base or Config(), source=where, **values)
    _check(config, where)
    return config


_FLAGS = {
    "seed": "--seed",
    "workers": "--workers",
    "shard_size": "--shard-size",
    "benchmark_images": "--benchmark-images",
    "normal_fraction": "--normal-fraction",
    "benchmark_layout": "--benchmark-layout",
}
_FILE_KEYS = {field: f"benchmark.{key}" for key, field in _BENCHMARK_KEYS.items()} | {
    "no_pathology_option_rate": "distractors.no_pathology_option_rate"
}


def _check(config: Config, where: str, keys: frozenset[str] | None = None) -> None:
    """Reject bad values, naming the flag (command line) or the file and key that hold them.

    ``keys`` limits the check to the settings given there (the command line checks only its own).
    """

    def bad(key: str, problem: str) -> ConfigError:
        if where == COMMAND_LINE and key in _FLAGS:
            return ConfigError(f"{_FLAGS[key]} {getattr(config, key)!r}: {problem}")
        return ConfigError(f"{where}: {_FILE_KEYS.get(key, key)}: {problem}")

    def checked(key: str) -> bool:
        return keys is None or key in keys

    for key in ("seed", "workers", "shard_size"):
        value = getattr(config, key)
        if checked(key) and (not isinstance(value, int) or isinstance(value, bool)):
            raise bad(key, f"must be an integer, not {value!r}")
    if checked("seed") and not 0 <= config.seed < 2**32:
        raise bad("seed", "must be in [0, 2**32)")
    if checked("workers") and config.workers < 1:
        raise bad("workers", "must be >= 1")
    if checked("shard_size") and config.shard_size < 1:
        raise bad("shard_size", "must be >= 1")
    ratios = config.split_ratios
    if checked("split_ratios"):
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in ratios.values()):
            raise bad("split_ratios", "must be non-negative numbers")
        if abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise bad("split_ratios", f"must add up to 1 (they add up to {sum(ratios.values()):g})")
    images = config.benchmark_images
    if checked("benchmark_images") and images is not None and (
        not isinstance(images, int) or isinstance(images, bool) or images < 0
    ):
        raise bad("benchmark_images", "must be a whole number >= 0 (0: no benchmark)")
    for key in ("region_cap", "answer_cap"):
        value = getattr(config, key)
        if checked(key) and (not _number(value) or not 0 < value <= 1):
            raise bad(key, f"must be a number in (0, 1], not {value!r} (a cap of 0 admits no image)")
    fraction = config.normal_fraction
    if (checked("normal_fraction") or checked("answer_cap")) and fraction is not None:
        if not _number(fraction) or not 0 <= fraction <= config.answer_cap:
            raise bad(
                "normal_fraction",
                f"must be a number in [0, {config.answer_cap:g}]: above the per-answer cap 'normal' "
                "would be a text-only cue",
            )
    if checked("benchmark_layout") and config.benchmark_layout not in LAYOUTS:
        raise bad(
            "benchmark_layout",
            f"must be one of {', '.join(LAYOUTS)}, not {config.benchmark_layout!r}"
            + did_you_mean(str(config.benchmark_layout), LAYOUTS),
        )
    if checked("check_images") and not isinstance(config.check_images, bool):
        raise bad("check_images", f"must be true or false, not {config.check_images!r}")
    rate = config.no_pathology_option_rate
    if checked("no_pathology_option_rate") and rate != MATCHED:
        if not _number(rate) or not 0 <= rate <= 1:
            raise bad("no_pathology_option_rate", f"must be 'matched' or a number in [0, 1], not {rate!r}")


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def benchmark_settings(config: Config) -> Any:
    """The benchmark selection settings of a config."""
    from .split import BenchmarkSettings

    return BenchmarkSettings(
        images=config.benchmark_images,
        normal_fraction=config.normal_fraction,
        region_cap=config.region_cap,
        answer_cap=config.answer_cap,
        check_images=config.check_images,
        seed=config.seed,
        layout=config.benchmark_layout,
    )
