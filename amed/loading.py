"""``amed.load_predictor``: a predictor in this project's format, or an authors' released snapshot.

Above both loaders (``amed.predictor`` and ``amed.authors``, which builds on the former), so neither has to
import the other's caller.
"""

from __future__ import annotations

import os
from pathlib import Path

from .authors import load_authors_predictor
from .predictor import AMEDPredictor
from .predictor import load_predictor as load_project_predictor

__all__ = ["load_predictor"]


def load_predictor(path: str | os.PathLike, **import_options) -> AMEDPredictor:
    """Load a predictor saved by ``AMEDPredictor.save`` (either file of the pair; format 2 checks the record
    against the weights, naming a field that differs), or import an authors' snapshot (``.pkl`` / ``.pt``)
    with ``amed.authors.load_authors_predictor(path, **import_options)`` (no code from the file runs)."""
    if Path(path).suffix in (".pkl", ".pt"):
        return load_authors_predictor(path, **import_options)
    return load_project_predictor(path, **import_options)
