"""radvqa: turn a local RadImageNet copy into a radiologic VQA dataset.

The public names below are imported on first use (PEP 562 module ``__getattr__``), so
``import radvqa`` and ``radvqa --help`` do not load pandas, numpy or pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "build_gallery": "browse",
    "Config": "config",
    "load_config": "config",
    "GenerateResult": "dataset",
    "generate_dataset": "dataset",
    "RadVQAError": "errors",
    "export_dataset": "export",
    "build_sample": "sample",
    "read_source": "source",
    "compute_stats": "stats",
    "Taxonomy": "taxonomy",
    "load_taxonomy": "taxonomy",
    "TemplateSet": "templates",
    "load_templates": "templates",
    "validate_dataset": "validate",
    "validate_distractors": "validate",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .browse import build_gallery
    from .config import Config, load_config
    from .dataset import GenerateResult, generate_dataset
    from .errors import RadVQAError
    from .export import export_dataset
    from .sample import build_sample
    from .source import read_source
    from .stats import compute_stats
    from .taxonomy import Taxonomy, load_taxonomy
    from .templates import TemplateSet, load_templates
    from .validate import validate_dataset, validate_distractors


def __getattr__(name: str) -> Any:
    """Import a public name's submodule the first time the name is used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'radvqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
