"""amed: fast ODE sampling for diffusion models in around 5 steps (AMED-Solver / AMED-Plugin)."""
__version__ = "0.1.0"
