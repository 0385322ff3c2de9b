"""The walk-these-ways policy behind our observation (imported by sim_pretrain.isaac_import, maps in foreign.py)."""

from __future__ import annotations

import torch
from torch import nn

from robot_spec.mlp import mlp


class WalkTheseWaysActor(nn.Module):
    """walk-these-ways' body + adaptation module behind our observation, keeping what our frame does not carry:
    the 30-frame history (oldest first), the action before last and the gait clock, as its deploy code
    (go1_gym_deploy LCMAgent + HistoryWrapper) builds them. A row whose last_action is all zero starts afresh
    (both our simulator and our runtime zero it at an episode start, as walk-these-ways zeros its history), as
    does every row when the batch size changes."""

    def __init__(self, obs_dim: int, action_dim: int, frame_dim: int, history_length: int, body_hidden: list[int],
                 adaptation_hidden: list[int], latent_dim: int, activation: str, gait: list[float],
                 policy_dt: float, clip_actions: float, our_last_action: list[int], slices: dict[str, list[int]],
                 out_index: list[int]):  # fmt: skip
        super().__init__()
        self.architecture = {
            "kind": "walk_these_ways", "obs_dim": obs_dim, "action_dim": action_dim, "frame_dim": frame_dim,
            "history_length": history_length, "body_hidden": list(body_hidden),
            "adaptation_hidden": list(adaptation_hidden), "latent_dim": latent_dim, "activation": activation,
            "gait": list(gait), "policy_dt": policy_dt, "clip_actions": clip_actions,
            "our_last_action": list(our_last_action), "slices": dict(slices), "out_index": list(out_index),
        }  # fmt: skip
        hist_dim = frame_dim * history_length
        self.adaptation_module = mlp(hist_dim, latent_dim, adaptation_hidden, activation)
        self.body = mlp(hist_dim + latent_dim, action_dim, body_hidden, activation)
        self.register_buffer("in_matrix", torch.zeros(frame_dim, obs_dim))
        self.register_buffer("in_offset", torch.zeros(frame_dim))
        self.register_buffer("out_scale", torch.ones(action_dim))
        self.register_buffer("out_offset", torch.zeros(action_dim))
        self.frame_dim, self.history_length, self.clip_actions = frame_dim, history_length, clip_actions
        self.dt_freq = policy_dt * gait[0]  # gait: frequency, phase, offset, bound (walk-these-ways commands 4-7)
        self.phase, self.offset, self.bound = gait[1], gait[2], gait[3]
        self.la0, self.la1 = our_last_action
        self.act0, self.act1 = slices["actions"]
        self.prev0, self.prev1 = slices.get("last_actions", [0, 0])  # [0, 0]: the term is not observed
        self.clock0, self.clock1 = slices.get("clock_inputs", [0, 0])
        self.out_index = out_index
        self.register_buffer("history", torch.zeros(0, history_length, frame_dim), persistent=False)
        self.register_buffer("prev_actions", torch.zeros(0, action_dim), persistent=False)
        self.register_buffer("gait_index", torch.zeros(0), persistent=False)
        self.register_buffer("clock", torch.zeros(0, 4), persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        batch = obs.shape[0]
        fresh = (obs[:, self.la0 : self.la1] == 0).all(dim=-1)
        if self.history.shape[0] != batch:
            self._resize(batch, obs)
            fresh = torch.ones_like(fresh)
        keep = (~fresh).to(obs.dtype)
        history = self.history * keep[:, None, None]
        gait = self.gait_index * keep
        frame = obs @ self.in_matrix.T + self.in_offset
        actions = torch.clamp(frame[:, self.act0 : self.act1], -self.clip_actions, self.clip_actions)
        parts = [frame[:, : self.act0], actions]
        if self.prev1 > self.prev0:  # the layout puts last_actions right after actions (LCMAgent.get_obs)
            parts.append(self.prev_actions * keep[:, None])
        if self.clock1 > self.clock0:
            parts.append(self.clock * keep[:, None])
        parts.append(frame[:, max(max(self.act1, self.prev1), self.clock1) :])
        frame = torch.cat(parts, dim=-1)
        history = torch.cat([history[:, 1:], frame[:, None]], dim=1)
        flat = history.reshape(batch, -1)
        latent = self.adaptation_module(flat)
        raw = self.body(torch.cat([flat, latent], dim=-1))
        action = torch.clamp(raw, -self.clip_actions, self.clip_actions)[:, self.out_index]
        # their deploy advances the gait clock after building the observation, from the second step on
        gait = torch.where(fresh, gait, torch.remainder(gait + self.dt_freq, 1.0))
        self.history, self.prev_actions, self.gait_index = history, actions, gait
        self.clock = self._clock(gait)
        return action * self.out_scale + self.out_offset

    def _clock(self, gait: torch.Tensor) -> torch.Tensor:
        feet = torch.stack([gait + self.phase + self.offset + self.bound, gait + self.offset, gait + self.bound,
                            gait + self.phase], dim=-1)  # fmt: skip
        return torch.sin(2.0 * 3.141592653589793 * feet)

    def _resize(self, batch: int, obs: torch.Tensor) -> None:
        self.history = torch.zeros(batch, self.history_length, self.frame_dim, dtype=obs.dtype, device=obs.device)
        self.prev_actions = torch.zeros(batch, self.out_scale.shape[0], dtype=obs.dtype, device=obs.device)
        self.gait_index = torch.zeros(batch, dtype=obs.dtype, device=obs.device)
        self.clock = torch.zeros(batch, 4, dtype=obs.dtype, device=obs.device)
