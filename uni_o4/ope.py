"""AM-Q offline policy evaluation: roll each policy in the learned model and average Q along the way.

From fixed dataset states, every member's deterministic policy is rolled H steps through the dynamics
ensemble; the score is the mean of Q(s_h, π(s_h)) over start states and steps. All policies and all calls
see the same start states and the same elite per (row, step) (common random numbers), so score differences
come from the policies, not from sampling. A rollout whose state is judged fallen (`terminal_fn`) earns
Q = 0 from then on, so a policy that falls in the model is not scored only on its states before the fall.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from robot_spec.observation import ObservationLayout
from uni_o4.critics import Critics
from uni_o4.dynamics import EnsembleDynamics
from uni_o4.networks import GaussianPolicyEnsemble

TerminalFn = Callable[[torch.Tensor], torch.Tensor]  # state (B, S) -> bool (B,)


class AmqEvaluator:
    def __init__(
        self, dynamics: EnsembleDynamics, critics: Critics, start_states: torch.Tensor, obs_dim: int, horizon: int,
        seed: int = 0, terminal_fn: TerminalFn | None = None,
    ):  # fmt: skip
        self.dynamics, self.critics, self.start_states = dynamics, critics, start_states
        self.obs_dim, self.horizon, self.terminal_fn = obs_dim, horizon, terminal_fn
        generator = torch.Generator().manual_seed(seed)
        num_elites = len(dynamics.elites)
        self.elite_choice = torch.randint(num_elites, (horizon, len(start_states)), generator=generator)

    @torch.no_grad()
    def scores(self, policy: GaussianPolicyEnsemble) -> torch.Tensor:
        """AM-Q of every member, (M,)."""
        m, (n, s) = policy.num_members, self.start_states.shape
        state = self.start_states.expand(m, n, s).reshape(m * n, s)
        alive = torch.ones(m * n, device=state.device)
        total = torch.zeros(m * n, device=state.device)
        for h in range(self.horizon):
            action = policy.act(state[:, : self.obs_dim].view(m, n, -1), deterministic=True).reshape(m * n, -1)
            total += alive * self.critics.q_value(state, action)
            state, _ = self.dynamics.step(state, action, self.elite_choice[h].repeat(m))
            if self.terminal_fn is not None:
                alive = alive * (~self.terminal_fn(state)).float()
        return (total / self.horizon).view(m, n).mean(dim=1)


def tilt_terminal(layout: ObservationLayout, max_tilt: float) -> TerminalFn | None:
    """Fallen = body tilted more than `max_tilt` rad from upright, read from the newest frame's projected gravity.

    The state starts with the policy observation, whose first frame is the newest (see ObservationHistory).
    None when the layout has no projected gravity.
    """
    slices = layout.slices()
    if "projected_gravity" not in slices:
        return None
    where = slices["projected_gravity"]
    scale = layout.scale_vector()[where]
    min_cos = math.cos(max_tilt)

    def fallen(state: torch.Tensor) -> torch.Tensor:
        gravity = state[:, where] / scale.to(state.device)
        cos_tilt = -gravity[:, 2] / gravity.norm(dim=-1).clamp(min=1e-6)  # upright: gravity = (0, 0, -1)
        return cos_tilt < min_cos

    return fallen
