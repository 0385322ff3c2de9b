"""PPO pretraining of a Go1 locomotion policy with rsl_rl's OnPolicyRunner on the MuJoCo env.

A run folder holds: config.yaml (the exact config used), TensorBoard events, model_<it>.pt checkpoints,
training_curve.png, and the deployable policy.pt / policy.onnx carrying the robot contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rsl_rl.env import VecEnv
from rsl_rl.modules import EmpiricalNormalization
from rsl_rl.runners import OnPolicyRunner
from tqdm import tqdm

from robot_spec import load_robot
from robot_spec.checkpoint import load_checkpoint
from robot_spec.config import load_config, save_config
from robot_spec.policy_io import ActorMLP, save_policy
from sim_pretrain.backends import make_env
from sim_pretrain.distributed import Ranks, Runner, any_rank, close, rank_config, rank_device
from sim_pretrain.env_config import DynamicsConfig, EnvConfig, InitialStatesConfig, TerrainConfig
from sim_pretrain.train_config import TrainConfig


NORMALIZER_EPS = EmpiricalNormalization(1).eps  # rsl_rl divides by (std + eps); not stored in checkpoints


class StopTraining(Exception):
    """Raised between iterations after Ctrl-C, so the checkpoint saved is a consistent one."""


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C ended the run short of its iterations: its checkpoint is saved and its policy so far exported into
    stopped/, never as the run's policy.pt, which callers (a pipeline's rerun) take for the finished run's."""


@dataclass
class TrainingHistory:
    iteration: list[int] = field(default_factory=list)
    mean_return: list[float] = field(default_factory=list)
    mean_episode_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)


def train(cfg: TrainConfig, run_dir: Path, device: str = "cpu", resume: Path | None = None,
          init: Path | None = None) -> Path:
    """Train, checkpoint and export; returns the exported policy path. Ctrl-C saves and exports too, then raises
    TrainingStopped.
    `resume` continues a run; `init` starts a new run (iterations counted from 0) from another run's checkpoint:
    actor, critic, normalisers and optimiser, so fine-tuning in another simulator needs no critic warm-up.
    Under torchrun each process trains its share (sim_pretrain.distributed) and rank 0 alone writes `run_dir`."""
    ranks = Ranks.from_env()
    local = rank_config(cfg, ranks)  # this rank's environments, threads and seeds (`cfg` without torchrun)
    device = rank_device(device, ranks)
    say = tqdm.write if ranks.is_main else lambda message: None
    start = resume if resume is not None else init
    saved = read_checkpoint(start) if start is not None else None  # before anything is written into run_dir
    torch.manual_seed(local.seed)
    torch.set_num_threads(local.torch_threads)
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")  # the whole run's config: a resume shares it out again

    env = make_env(local.env.robot, local.env.backend, local.env, device)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl_rl prints the model summaries
        runner = Runner(env, cfg.rsl_rl_dict(run_dir.name), log_dir=str(run_dir), device=device)
    if saved is not None:
        restore_runner(runner, saved, start)
    if resume is not None:
        say(f"resumed from {resume} at iteration {runner.current_learning_iteration}")
    elif init is not None:
        runner.current_learning_iteration = 0
        say(f"fine-tuning from {init}")

    # A resumed run keeps its history up to the checkpoint (iterations after it are trained again).
    history = load_history(run_dir, runner.current_learning_iteration) if resume is not None else TrainingHistory()
    remaining = cfg.iterations - runner.current_learning_iteration
    stop_requested, stopped = _install_sigint_flag(say), None
    try:
        with tqdm(total=max(remaining, 0), desc="PPO", unit="it", dynamic_ncols=True,
                  disable=not ranks.is_main) as bar:
            _hook_progress(runner, env, bar, history, stop_requested, run_dir)
            if remaining > 0:
                runner.learn(num_learning_iterations=remaining, init_at_random_ep_len=resume is None)
    except StopTraining:
        stopped = run_dir / f"model_{runner.current_learning_iteration}.pt"
        if ranks.is_main:
            runner.save(str(stopped))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        env.close()
        close()

    export_dir = run_dir / "stopped" if stopped else run_dir
    if ranks.is_main:  # rank 0 alone writes the run folder
        export_policy(runner, export_dir, cfg)
        _plot_history(history, run_dir)
    if stopped:
        raise TrainingStopped(f"stopped by the operator at iteration {runner.current_learning_iteration} of "
                              f"{cfg.iterations}: resume with --resume {stopped}; its policy so far: "
                              f"{export_dir / 'policy.pt'}")  # fmt: skip
    return export_dir / "policy.pt"


def load_history(run_dir: Path, before_iteration: int) -> TrainingHistory:
    """The run's training_history.json up to (not including) `before_iteration`; empty if there is none."""
    path = run_dir / "training_history.json"
    if not path.is_file():
        return TrainingHistory()
    saved = json.loads(path.read_text())
    keep = [i for i, it in enumerate(saved["iteration"]) if it < before_iteration]
    return TrainingHistory(**{key: [saved[key][i] for i in keep] for key in vars(TrainingHistory())})


def finetune_in_sim(start: Path, dynamics: DynamicsConfig, iterations: int, run_dir: Path, device: str = "cpu",
                    seed: int | None = None, num_envs: int | None = None,
                    initial_states: InitialStatesConfig | None = None,
                    terrain: TerrainConfig | None = None, backend: str | None = None,
                    save_interval: int | None = None, action_limit: float | None = None,
                    randomization: dict | None = None, reward_scales: dict | None = None) -> Path:  # fmt: skip
    """PPO fine-tuning of a pretrained policy in the simulator centred on `dynamics` (a robot's profile), for
    `iterations` PPO iterations. `start`: a pretraining run folder, one of its checkpoints, or its exported policy.pt
    (the run folder beside it). The run's own config is the base, so the networks match; returns policy.pt.
    `backend`: another simulator of sim_pretrain.backends.BACKENDS (default: the run's); `save_interval`:
    iterations between checkpoints (default: the run's); `action_limit`: deploy's limit on one step's action change
    (see `within_action_limit`; default: none, as pretraining); `randomization`: RandomizationConfig fields set
    over the run's (e.g. effects no log identifies); `reward_scales`: reward terms' scales set over the run's."""
    checkpoint = latest_checkpoint(start.parent if start.suffix == ".pt" and not start.stem.startswith("model_")
                                   else start)  # fmt: skip
    base = load_config(TrainConfig, checkpoint.parent / "config.yaml")
    seed = base.seed if seed is None else seed
    env = dataclasses.replace(base.env, dynamics=dynamics, seed=seed, num_envs=num_envs or base.env.num_envs,
                              initial_states=initial_states or base.env.initial_states,
                              terrain=terrain or base.env.terrain, backend=backend or base.env.backend,
                              randomization=dataclasses.replace(base.env.randomization, **(randomization or {})))
    if reward_scales:
        env = dataclasses.replace(env, rewards=dataclasses.replace(env.rewards, scales={**env.rewards.scales,
                                                                                       **reward_scales}))
    if action_limit is not None:
        env = within_action_limit(env, action_limit)
    cfg = dataclasses.replace(base, iterations=iterations, seed=seed, env=env,
                              save_interval=save_interval or base.save_interval)  # fmt: skip
    return train(cfg, run_dir, device, init=checkpoint)


# Fine-tuning for a robot learns inside deploy's action_rate limit: the share of it that is free, and the cost per
# action unit past that share per joint (before dt). The band leaves room for the robot's deterministic actions to
# differ from the simulator's; exploration noise (std ~0.7) pays a little too, which narrows it.
ACTION_BAND, ACTION_JUMP_COST = 0.8, 5.0


def within_action_limit(env: EnvConfig, limit: float) -> EnvConfig:
    """`env` for a robot whose monitor ends an episode when one step's action change passes `limit` on some joint
    (deploy's action_rate, last action zero before the first step): a first action past it ends the episode, and
    every step pays for its change beyond ACTION_BAND × limit (rewards' action_jump, never clipped away)."""
    rewards = dataclasses.replace(env.rewards, scales={**env.rewards.scales, "action_jump": -ACTION_JUMP_COST},
                                  action_jump_limit=ACTION_BAND * limit)  # fmt: skip
    termination = dataclasses.replace(env.termination, max_first_action=limit)
    return dataclasses.replace(env, rewards=rewards, termination=termination)


def read_checkpoint(checkpoint: Path) -> dict:
    """A model_<it>.pt read weights-only: rsl_rl's runner.load unpickles with weights_only=False, which would run
    code from a crafted file."""
    saved = load_checkpoint(checkpoint)
    if not isinstance(saved, dict) or not {"actor_state_dict", "critic_state_dict", "iter"} <= saved.keys():
        raise ValueError(f"{checkpoint}: not an rsl_rl checkpoint (no actor_state_dict, critic_state_dict, iter)")
    return saved


def restore_runner(runner: OnPolicyRunner, saved: dict, checkpoint: Path) -> None:
    """What runner.load does (actor, critic, optimiser, iteration), from a checkpoint read by read_checkpoint."""
    try:
        runner.alg.load(saved, None, True)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"{checkpoint}: does not fit this run's networks: {str(err).splitlines()[0]}") from None
    runner.current_learning_iteration = saved["iter"]


def new_run_dir(runs: Path, robot: str, preset: str) -> Path:
    """runs/<robot>/<date-time>_<preset>: where a new pretraining run goes."""
    return runs / robot / f"{time.strftime('%Y%m%d-%H%M%S')}_{preset}"


def latest_checkpoint(path: Path) -> Path:
    """`path` if it is a checkpoint file, else the newest model_<it>.pt in the run folder `path`."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    checkpoints = sorted(path.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if not checkpoints:
        raise FileNotFoundError(f"no model_<it>.pt checkpoint in {path}")
    return checkpoints[-1]


def export_policy(runner: OnPolicyRunner, run_dir: Path, cfg: TrainConfig) -> Path:
    """Convert rsl_rl's actor into the shared ActorMLP and write policy.pt + policy.onnx."""
    actor = actor_from_state_dict(runner.alg.get_policy().state_dict(), cfg)
    info = {"source": "sim_pretrain", "run": str(run_dir), "iteration": runner.current_learning_iteration}
    path = run_dir / "policy.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_policy(actor, load_robot(cfg.env.robot), path, info)
    return path


def actor_from_checkpoint(path: Path, cfg: TrainConfig) -> ActorMLP:
    return actor_from_state_dict(load_checkpoint(path)["actor_state_dict"], cfg)


def actor_from_state_dict(state: dict, cfg: TrainConfig) -> ActorMLP:
    """rsl_rl MLPModel weights (mlp.<i>.weight/bias, obs_normalizer._mean/_std) → ActorMLP."""
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("mlp.") and k.endswith(".weight")})
    first, last = state[f"mlp.{layers[0]}.weight"], state[f"mlp.{layers[-1]}.weight"]
    actor = ActorMLP(first.shape[1], last.shape[0], cfg.actor.hidden_dims, cfg.actor.activation)
    ours = [m for m in actor.mlp if isinstance(m, torch.nn.Linear)]
    for dst, i in zip(ours, layers, strict=True):
        dst.load_state_dict({"weight": state[f"mlp.{i}.weight"], "bias": state[f"mlp.{i}.bias"]})
    if "obs_normalizer._mean" in state:
        actor.obs_mean.copy_(state["obs_normalizer._mean"].squeeze(0))
        actor.obs_std.copy_(state["obs_normalizer._std"].squeeze(0) + NORMALIZER_EPS)
    return actor.eval()


def _hook_progress(
    runner: OnPolicyRunner, env: VecEnv, bar: tqdm, history: TrainingHistory, stop, run_dir: Path
) -> None:
    """Replace rsl_rl's console report by a progress bar; keep its TensorBoard logging."""
    logger, log = runner.logger, runner.logger.log
    start = time.time() - (history.wall_s[-1] if history.wall_s else 0.0)  # a resumed run's clock goes on

    def log_quietly(*args, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            log(*args, **kwargs)
        it = kwargs["it"]
        if logger.rewbuffer:  # rank 0's alone: the other ranks' loggers are off
            ret, length = statistics.mean(logger.rewbuffer), statistics.mean(logger.lenbuffer) * env.dt
            history.iteration.append(it)
            history.mean_return.append(ret)
            history.mean_episode_s.append(length)
            history.wall_s.append(time.time() - start)
            bar.set_postfix(ret=f"{ret:.2f}", ep_s=f"{length:.1f}", refresh=False)
            (run_dir / "training_history.json").write_text(json.dumps(vars(history)))
        bar.update(1)
        if any_rank(stop()):
            raise StopTraining

    logger.log = log_quietly


def _install_sigint_flag(say=tqdm.write):
    """First Ctrl-C: finish the iteration, then save. Second: stop at once."""
    state = {"requested": False}

    def handler(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        say("Ctrl-C: finishing this iteration, then saving a checkpoint (Ctrl-C again to abort)")

    signal.signal(signal.SIGINT, handler)
    return lambda: state["requested"]


def _plot_history(history: TrainingHistory, run_dir: Path) -> None:
    if not history.iteration:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(history.iteration, history.mean_return)
    ax1.set(xlabel="iteration", ylabel="mean episode return", title="Return")
    ax2.plot(history.iteration, history.mean_episode_s)
    ax2.set(xlabel="iteration", ylabel="s", title="Mean episode length")
    fig.tight_layout()
    fig.savefig(run_dir / "training_curve.png", dpi=100)
    plt.close(fig)
