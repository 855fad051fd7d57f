"""The one loop that carries a state down a time grid.

Every trajectory the package computes runs through ``integrate``: ``amed.sample`` (a baseline solver's
steps), AMED sampling (``amed.plugin.run_amed``), both training objectives and the analysis code's
trajectories. The loop owns what is the same in all of them: the interval times as [B] tensors, the
finiteness watch, the trajectory, and the check that the network calls made are the calls planned. What
one interval does (a solver step, an AMED interval, a training update) is the ``step`` passed in.

Searches that pick a setting per interval across a whole set of trajectories (``interval_search``'s r
biases) call the one-interval function (``amed.plugin.amed_interval``) directly: they are not a walk down
one trajectory.
"""

from __future__ import annotations

from typing import Callable

import torch

from .calls import FiniteWatch, ModelCall

Tensor = torch.Tensor

# step(x, t_cur, t_next, state, n) -> (x_next, state): interval n of the grid, t_cur/t_next as [B] tensors.
Step = Callable[[Tensor, Tensor, Tensor, object, int], tuple[Tensor, object]]


def integrate(step: Step, x: Tensor, grid: Tensor, state=None, *, name: str, model: ModelCall | None = None,
              nfe: int | None = None, watch: bool = True, keep_trajectory: bool = False) -> tuple[Tensor, object]:
    """Run ``step`` over the intervals of ``grid`` (descending times) from ``x`` at ``grid[0]``.

    Returns (the final state, or the states at every grid point [len(grid), B, ...] with
    ``keep_trajectory``; the step's final ``state``). ``watch``: raise ``amed.errors.Diverged`` naming the
    first interval whose state is not finite (training checks its loss and gradients instead). ``nfe``:
    the network calls ``model`` must have made by the end (the accounting is part of every sampler's
    contract); a mismatch is a RuntimeError naming ``name``.
    """
    B = x.shape[0]
    times = grid.to(x.device)
    guard = FiniteWatch(name, grid) if watch else None
    traj = [x] if keep_trajectory else None
    for n in range(times.numel() - 1):
        x, state = step(x, times[n].expand(B), times[n + 1].expand(B), state, n)
        if guard is not None:
            guard.step(x, n)
        if traj is not None:
            traj.append(x)
    if guard is not None:
        guard.done()
    if nfe is not None and model is not None and model.nfe != nfe:
        raise RuntimeError(f"{name}: made {model.nfe} network calls, planned NFE={nfe}")
    return (torch.stack(traj) if keep_trajectory else x), state
