"""radvqa: turn a local RadImageNet copy into a radiologic VQA dataset."""

from __future__ import annotations

__version__ = "0.1.0"

from .browse import build_gallery  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .dataset import GenerateResult, generate_dataset  # noqa: E402
from .errors import RadVQAError  # noqa: E402
from .export import export_dataset  # noqa: E402
from .sample import build_sample  # noqa: E402
from .source import read_source  # noqa: E402
from .stats import compute_stats  # noqa: E402
from .taxonomy import Taxonomy, load_taxonomy  # noqa: E402
from .templates import TemplateSet, load_templates  # noqa: E402
from .validate import validate_dataset, validate_distractors  # noqa: E402

__all__ = [
    "Config",
    "GenerateResult",
    "RadVQAError",
    "Taxonomy",
    "TemplateSet",
    "build_gallery",
    "build_sample",
    "compute_stats",
    "export_dataset",
    "generate_dataset",
    "load_config",
    "load_taxonomy",
    "load_templates",
    "read_source",
    "validate_dataset",
    "validate_distractors",
]
