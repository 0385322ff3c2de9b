"""Roll a policy out under a grid of fixed commands with randomised dynamics; report tracking, falls, return.

Each environment runs one episode with one command (no resampling). Rows that fall are frozen out of the
statistics from that step on, so an automatic reset never counts as part of the evaluated episode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from robot_spec.policy_io import LoadedPolicy
from sim_pretrain.backends import make_env
from sim_pretrain.env import Go1Env
from sim_pretrain.env_config import EnvConfig


@dataclass
class EvalConfig:
    commands: list[list[float]] = field(default_factory=lambda: [[0.5, 0.0, 0.0]])
    envs_per_command: int = 8
    episode_s: float = 20.0
    settle_s: float = 2.0
    seed: int = 0
    env: EnvConfig = field(default_factory=EnvConfig)


@torch.inference_mode()
def evaluate_policy(policy: LoadedPolicy, cfg: EvalConfig, device: str = "cpu", progress: bool = True) -> dict:
    commands = torch.tensor(cfg.commands, dtype=torch.float32, device=device)
    env = _make_env(policy, cfg, len(commands), device)
    per_row = commands.repeat_interleave(cfg.envs_per_command, dim=0)
    env.commands[:] = per_row
    obs = env.reset_all()
    env.commands[:] = per_row  # reset_all sampled new commands
    obs = env._observe()

    n = env.num_envs
    alive = torch.ones(n, dtype=torch.bool, device=device)
    fell = torch.zeros(n, dtype=torch.bool, device=device)
    ret = torch.zeros(n, device=device)
    vel_sum, err_xy, err_yaw = torch.zeros(n, 3, device=device), torch.zeros(n, device=device), torch.zeros(n, device=device)
    counted = torch.zeros(n, device=device)
    settle = int(cfg.settle_s / env.dt)
    steps = int(cfg.episode_s / env.dt)
    for t in tqdm(range(steps), desc="eval", unit="step", disable=not progress, leave=False):
        obs, reward, done, extras = env.step(policy.actor(obs["policy"]))
        m = env.measured
        ret += reward * alive
        fell |= alive & done & ~extras["time_outs"]
        if t >= settle:
            live = (alive & ~done).float()
            velocity = torch.cat([m["lin_vel"][:, :2], m["ang_vel"][:, 2:]], dim=1)
            vel_sum += velocity * live[:, None]
            err_xy += (velocity[:, :2] - per_row[:, :2]).norm(dim=1) * live
            err_yaw += (velocity[:, 2] - per_row[:, 2]).abs() * live
            counted += live
        alive &= ~done
        env.commands[:] = per_row  # automatic resets must not change the evaluated command
    env.close()
    return _summarise(cfg, per_row, fell, ret, vel_sum, err_xy, err_yaw, counted, policy)


def _make_env(policy: LoadedPolicy, cfg: EvalConfig, num_commands: int, device: str) -> Go1Env:
    env_cfg = cfg.env
    env_cfg.num_envs = num_commands * cfg.envs_per_command
    env_cfg.episode_length_s = cfg.episode_s
    env_cfg.commands.resample_s = cfg.episode_s + 1.0
    env_cfg.seed = cfg.seed
    return make_env(policy.contract["robot"], env_cfg.backend, env_cfg, device)


def _summarise(cfg, per_row, fell, ret, vel_sum, err_xy, err_yaw, counted, policy) -> dict:
    k = cfg.envs_per_command
    safe = counted.clamp(min=1)
    rows = []
    for i, command in enumerate(cfg.commands):
        s = slice(i * k, (i + 1) * k)
        c = counted[s].sum().clamp(min=1)
        rows.append({
            "command": command,
            "achieved": (vel_sum[s].sum(0) / c).tolist(),
            "tracking_error_xy": float(err_xy[s].sum() / c),
            "tracking_error_yaw": float(err_yaw[s].sum() / c),
            "fall_rate": float(fell[s].float().mean()),
            "mean_return": float(ret[s].mean()),
        })  # fmt: skip
    return {
        "policy_id": policy.policy_id,
        "policy": str(policy.path),
        "episodes": int(len(fell)),
        "fall_rate": float(fell.float().mean()),
        "mean_tracking_error": float((err_xy / safe).mean()),
        "mean_yaw_error": float((err_yaw / safe).mean()),
        "mean_return": float(ret.mean()),
        "per_command": rows,
        # Episode by episode (command-major, as per_command): a comparison of two policies evaluated with one
        # seed pairs them, episode i meeting the same command and dynamics draw for both.
        "per_episode": {"tracking_error_xy": (err_xy / safe).tolist(), "tracking_error_yaw": (err_yaw / safe).tolist(),
                        "fell": fell.tolist(), "return": ret.tolist()},
    }


def write_report(metrics: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_tracking(metrics, out / "tracking.png")


def plot_tracking(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metrics["per_command"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, axis, name in zip(axes, range(3), ("vx (m/s)", "vy (m/s)", "yaw rate (rad/s)")):
        cmd = [r["command"][axis] for r in rows]
        got = [r["achieved"][axis] for r in rows]
        lim = max(1.0, max(map(abs, cmd + got)))
        ax.plot([-lim, lim], [-lim, lim], color="0.7", lw=1, label="perfect tracking")
        ax.scatter(cmd, got, c=["tab:red" if r["fall_rate"] > 0 else "tab:blue" for r in rows])
        ax.set(xlabel=f"commanded {name}", ylabel=f"achieved {name}")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"fall rate {metrics['fall_rate']:.2f} · tracking error {metrics['mean_tracking_error']:.3f} m/s "
                 "(red: command with falls)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
