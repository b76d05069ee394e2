"""Generation settings: packaged defaults, an optional user YAML file, then CLI overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

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
        _check(updated, "command line")
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


def _check(config: Config, where: str) -> None:
    for key in ("seed", "workers", "shard_size"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be an integer, not {value!r}")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"{where}: seed must be in [0, 2**32)")
    if config.workers < 1:
        raise ConfigError(f"{where}: workers must be >= 1")
    if config.shard_size < 1:
        raise ConfigError(f"{where}: shard_size must be >= 1")
    ratios = config.split_ratios
    if any(not isinstance(v, (int, float)) or v < 0 for v in ratios.values()):
        raise ConfigError(f"{where}: split_ratios must be non-negative numbers")
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: split_ratios must add up to 1 (they add up to {sum(ratios.values()):g})")
    if config.benchmark_images is not None and (
        not isinstance(config.benchmark_images, int) or config.benchmark_images < 1
    ):
        raise ConfigError(f"{where}: benchmark images must be a positive integer")
    for key in ("normal_fraction", "region_cap", "answer_cap"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value <= 1):
            raise ConfigError(f"{where}: benchmark {key} must be a number in [0, 1]")
    if config.benchmark_layout not in LAYOUTS:
        raise ConfigError(
            f"{where}: benchmark layout must be one of {', '.join(LAYOUTS)}, not {config.benchmark_layout!r}"
            + did_you_mean(str(config.benchmark_layout), LAYOUTS)
        )
    rate = config.no_pathology_option_rate
    if rate != MATCHED:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ConfigError(
                f"{where}: distractors.no_pathology_option_rate must be 'matched' or a number in [0, 1], not {rate!r}"
            )


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
