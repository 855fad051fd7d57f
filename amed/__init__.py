"""amed: fast ODE sampling for diffusion models in around 5 steps (AMED-Solver / AMED-Plugin, CVPR 2024).

    import amed
    x = amed.sample(denoiser, noise, solver="ipndm", nfe=5, schedule="polynomial")

``denoiser(x, sigma)`` is any callable returning D(x; sigma) with sigma a [batch] tensor.
"""

from .sampling import parse_seeds, plan, randn_seeds, sample, sample_trajectory
from .schedules import SCHEDULES, get_schedule, refine_schedule, teacher_indices
from .solvers import SOLVERS, make_solver

__version__ = "0.1.0"

__all__ = [
    "sample", "sample_trajectory", "randn_seeds", "parse_seeds", "plan",
    "SCHEDULES", "get_schedule", "refine_schedule", "teacher_indices",
    "SOLVERS", "make_solver",
]
