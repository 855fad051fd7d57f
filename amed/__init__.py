"""amed: fast ODE sampling for diffusion models in around 5 steps (AMED-Solver / AMED-Plugin, CVPR 2024).

    import amed
    x = amed.sample(denoiser, noise, solver="ipndm", nfe=5, schedule="polynomial")

``denoiser(x, sigma)`` is any callable returning D(x; sigma) with sigma a [batch] tensor.
"""

from .sampling import parse_seeds, plan, randn_seeds, sample, sample_trajectory
from .schedules import SCHEDULES, get_schedule, refine_schedule, teacher_indices
from .solvers import SOLVERS, make_solver
from .predictor import AMEDConfig, AMEDPredictor
from .loading import load_predictor
from .training import train_predictor
from .plugin import amed_coefficients
from .errors import AmedError
from .gridfile import load_grid
from .gits import search_schedule

from ._version import __version__  # noqa: E402

__all__ = [
    "sample", "sample_trajectory", "randn_seeds", "parse_seeds", "plan",
    "SCHEDULES", "get_schedule", "refine_schedule", "teacher_indices",
    "SOLVERS", "make_solver",
    "AMEDConfig", "AMEDPredictor", "load_predictor", "train_predictor", "amed_coefficients", "load_model",
    "AmedError",
    "search_schedule", "load_grid",
]


def load_model(name_or_path, **kwargs):
    """The adapter for a registered model name or a local checkpoint file (see ``amed models``)."""
    from .models.registry import load_model as _load  # noqa: PLC0415 (heavy model code loads on demand)

    return _load(name_or_path, **kwargs)
