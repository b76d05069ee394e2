"""radvqa: turn a local RadImageNet copy into a radiologic VQA dataset.

The public names below are imported on first use (PEP 562), so a worker process that imports
one submodule (``radvqa.ingest_tasks``) does not pay for pandas and the rest of the package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
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

if TYPE_CHECKING:
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
    """Import a public name's module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'radvqa' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
