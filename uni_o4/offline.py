"""Uni-O4 offline fine-tuning, end to end: `run_offline(dataset, init_actor, cfg, out_dir) -> OfflineResult`.

Stage 1 trains the behaviour ensemble, the critics and the dynamics model; stage 2 improves the members
with AM-Q-gated replacements; the result carries the best member as a deployable actor, the AM-Q scores
of the initial actor, of the members before and after stage 2, the per-member curves and the replacements,
and the critics and normalisation that online fine-tuning starts from. Each artefact is cached under
`<cache_dir>/<name>-<key>.pt`, the key hashing the data, the stage's config, the seed, the initial actor and
the upstream artefacts; interrupted stages resume from their checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from robot_spec.checkpoint import load_checkpoint
from robot_spec.config import from_dict, load_config, save_config, to_dict
from robot_spec.observation import ObservationLayout
from robot_spec.policy_io import ActorMLP
from uni_o4.artifacts import ArtifactStore, TrainContext, artifact_key, module_hash
from uni_o4.critics import CriticConfig, Critics
from uni_o4.dataset import OfflineDataset
from uni_o4.dynamics import DynamicsConfig, EnsembleDynamics
from uni_o4.log_dataset import LogDataConfig
from uni_o4.networks import GaussianPolicyEnsemble
from uni_o4.ope import AmqEvaluator, tilt_terminal
from uni_o4.stage1 import BehaviourConfig, build_behaviour_policy, train_behaviour, train_critics, train_dynamics
from uni_o4.stage2 import ImprovementConfig, ImprovementHistory, improve_policies


@dataclass
class OfflineConfig:
    seed: int = 0
    checkpoint_every: int = 1000  # gradient steps (epochs for the dynamics model) between checkpoints
    log_every: int = 100
    data: LogDataConfig = field(default_factory=LogDataConfig)  # how logs become a dataset (log_dataset.py)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    critics: CriticConfig = field(default_factory=CriticConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    improvement: ImprovementConfig = field(default_factory=ImprovementConfig)


def load_offline_config(path: str | Path, overrides: dict | None = None) -> OfflineConfig:
    """configs/finetune/uni_o4.yaml (or any file of that shape), strictly checked."""
    return load_config(OfflineConfig, path, overrides)


@dataclass
class OfflineResult:
    best_member: int
    actor: ActorMLP  # the best member's mean: deployable with save_policy (same obs normalisation as its start)
    policy: GaussianPolicyEnsemble  # every member's best-scoring weights, with their std heads
    critics: Critics  # twin Q (+target) and V over `state`, with the data's normalisation inside
    baseline_score: float | None  # AM-Q of the initial (pretrained) actor; None without one
    initial_scores: list[float]  # AM-Q of each member after stage 1, before improvement
    final_scores: list[float]  # best AM-Q of each member (its returned weights)
    history: ImprovementHistory  # eval steps, per-member score curves, replacements
    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    state_mean: torch.Tensor  # state = obs ⊕ critic measurements (what V and Q read)
    state_std: torch.Tensor
    dynamics_report: dict
    keys: dict[str, str]  # artefact keys per stage

    def best_policy(self) -> GaussianPolicyEnsemble:
        """The best member with its std, as a one-member ensemble (online fine-tuning starts here)."""
        return self.policy.member_policy(self.best_member)

    @property
    def final_score(self) -> float:
        return self.final_scores[self.best_member]

    @property
    def reference_score(self) -> float:
        """What the gate compares against: the pretrained actor if there was one, else the best initial member."""
        return self.baseline_score if self.baseline_score is not None else max(self.initial_scores)

    def summary(self) -> dict[str, Any]:
        h = self.history
        return {
            "best_member": self.best_member, "final_score": self.final_score,
            "reference_score": self.reference_score, "baseline_score": self.baseline_score,
            "initial_scores": self.initial_scores, "final_scores": self.final_scores,
            "eval_steps": h.eval_steps, "score_curves": h.scores, "replacements": h.replacements,
            "dynamics": {k: v for k, v in self.dynamics_report.items() if k != "holdout_history"}, "keys": self.keys,
        }  # fmt: skip

    def save(self, out_dir: str | Path) -> Path:
        """summary.json + offline_result.pt (everything `load` needs) in `out_dir`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        c = self.critics
        payload = {
            "policy_kwargs": self.policy.init_kwargs, "policy": self.policy.state_dict(),
            "critics_args": {"state_dim": c.state_dim, "action_dim": c.action_dim, "cfg": to_dict(c.cfg)},
            "critics": c.state_dict(), "obs_mean": self.obs_mean, "obs_std": self.obs_std,
            "state_mean": self.state_mean, "state_std": self.state_std, "summary": self.summary(),
            "holdout_history": self.dynamics_report.get("holdout_history", []),
        }  # fmt: skip
        torch.save(payload, out_dir / "offline_result.pt")
        return out_dir / "offline_result.pt"

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> OfflineResult:
        """Rebuild a result written by `save` (a run folder or its offline_result.pt)."""
        path = Path(path)
        path = path / "offline_result.pt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no offline result at {path}")
        saved = load_checkpoint(path)
        policy = GaussianPolicyEnsemble(**saved["policy_kwargs"])
        policy.load_state_dict(saved["policy"])
        args = saved["critics_args"]
        critics = Critics(args["state_dim"], args["action_dim"], from_dict(CriticConfig, args["cfg"]))
        critics.load_state_dict(saved["critics"])
        s = saved["summary"]
        history = ImprovementHistory(
            initial_scores=s["initial_scores"], best_scores=s["final_scores"], eval_steps=s["eval_steps"],
            scores=s["score_curves"], replacements=s["replacements"],
        )  # fmt: skip
        return cls(
            best_member=s["best_member"], actor=policy.export_member(s["best_member"]), policy=policy.to(device),
            critics=critics.to(device), baseline_score=s["baseline_score"], initial_scores=s["initial_scores"],
            final_scores=s["final_scores"], history=history, obs_mean=saved["obs_mean"], obs_std=saved["obs_std"],
            state_mean=saved["state_mean"], state_std=saved["state_std"],
            dynamics_report={**s["dynamics"], "holdout_history": saved["holdout_history"]}, keys=s["keys"],
        )  # fmt: skip


def run_offline(
    dataset: OfflineDataset, init_actor: ActorMLP | None, cfg: OfflineConfig, out_dir: str | Path,
    device: str | torch.device = "cpu", writer: Any = None, obs_layout: ObservationLayout | None = None,
    cache_dir: str | Path | None = None, progress: bool = True,
) -> OfflineResult:  # fmt: skip
    """Stage 1 + stage 2 on `dataset`; `init_actor` is the sim-pretrained actor (needed for behaviour.init 'policy').

    obs_layout: the policy's observation layout, used to stop model rollouts of fallen robots in AM-Q
    (improvement.ope_max_tilt); `writer`: optional TensorBoard SummaryWriter; `cache_dir` defaults to
    `<out_dir>/cache` (share one across runs to reuse stage-1 artefacts).
    """
    out_dir = Path(out_dir)
    save_config(cfg, out_dir / "offline_config.yaml")
    data = dataset.to(device)
    seed = cfg.seed
    init_actor = None if init_actor is None else _cpu_actor(init_actor)
    stage = Stage1(data, cfg, cache_dir if cache_dir is not None else out_dir / "cache", writer, progress)
    parts = {"data": data.content_hash(), "seed": seed, "actor": module_hash(init_actor) if init_actor else None}

    def fresh_policy() -> GaussianPolicyEnsemble:
        return build_behaviour_policy(cfg.behaviour, data, init_actor)

    keys = {"behaviour": artifact_key(stage="behaviour", cfg=cfg.behaviour, **parts)}
    policy = stage.cached(
        "behaviour", keys["behaviour"], lambda ctx: train_behaviour(data, init_actor, cfg.behaviour, seed, ctx),
        lambda p: {"policy": p.state_dict()}, lambda saved: _with_state(fresh_policy(), saved["policy"]),
    )  # fmt: skip
    critics, dynamics, dynamics_report = stage.critics_and_dynamics()
    keys.update(stage.keys)
    evaluator = make_evaluator(data, dynamics, critics, cfg.improvement, seed, obs_layout)
    baseline = None
    if init_actor is not None:  # the policy being replaced, scored like the candidates
        baseline = evaluator.scores(GaussianPolicyEnsemble.from_actor(init_actor, 1).to(data.device)).item()

    keys["improvement"] = artifact_key(
        stage="improvement", cfg=cfg.improvement, upstream=[keys["behaviour"], keys["critics"], keys["dynamics"]],
        obs_layout=obs_layout.describe() if obs_layout is not None else None, **parts,
    )  # fmt: skip
    improved, history = stage.cached(
        "improvement", keys["improvement"],
        lambda ctx: improve_policies(policy.to(data.device), critics, data, evaluator, cfg.improvement, seed, ctx),
        lambda out: {"policy": out[0].state_dict(), "history": vars(out[1])},
        lambda saved: (_with_state(fresh_policy(), saved["policy"]), ImprovementHistory(**saved["history"])),
    )  # fmt: skip

    best = history.best_member
    obs_mean, obs_std = data.obs_stats()
    state_mean, state_std = data.state_stats()
    result = OfflineResult(
        best_member=best, actor=improved.export_member(best).cpu(), policy=improved.cpu(), critics=critics.cpu(),
        baseline_score=baseline, initial_scores=history.initial_scores, final_scores=history.best_scores,
        history=history, obs_mean=obs_mean.cpu(), obs_std=obs_std.cpu(), state_mean=state_mean.cpu(),
        state_std=state_std.cpu(), dynamics_report=dynamics_report, keys=keys,
    )  # fmt: skip
    result.save(out_dir)
    return result


class Stage1:
    """Stage-1 artefacts of one dataset and config, trained once and cached under keys of exactly what made
    them (data, stage config, seed, upstream artefacts); an interrupted stage resumes from its checkpoint."""

    def __init__(self, data: OfflineDataset, cfg: OfflineConfig, cache_dir: str | Path, writer: Any = None,
                 progress: bool = True):  # fmt: skip
        self.data, self.cfg, self.writer, self.progress = data, cfg, writer, progress
        self.store = ArtifactStore(cache_dir)
        self.keys: dict[str, str] = {}

    def cached(self, name: str, key: str, train: Callable[[TrainContext], Any], payload: Callable[[Any], dict], load):
        """The artefact from the cache, or trained (resuming from its checkpoint) and then cached."""
        if (saved := self.store.load(name, key)) is not None:
            if self.progress:  # said, so a stage that finishes at once is not taken for one that did nothing
                tqdm.write(f"{name}: cached (same data and config), loaded from {self.store.path(name, key)}")
            return load(saved)
        cfg = self.cfg
        ctx = TrainContext(self.store.checkpoint_path(name, key), cfg.checkpoint_every, self.writer, cfg.log_every,
                           self.progress)  # fmt: skip
        artefact = train(ctx)
        self.store.save(name, key, payload(artefact))
        return artefact

    def critics_and_dynamics(self) -> tuple[Critics, EnsembleDynamics, dict]:
        """IQL critics and the dynamics ensemble (on the data's device), and the dynamics' holdout report."""
        data, cfg, seed = self.data, self.cfg, self.cfg.seed
        content = data.content_hash()
        self.keys["critics"] = artifact_key(stage="critics", cfg=cfg.critics, data=content, seed=seed)
        critics = self.cached(
            "critics", self.keys["critics"], lambda ctx: train_critics(data, cfg.critics, seed, ctx),
            lambda c: {"critics": c.state_dict()},
            lambda saved: _with_state(Critics(data.state_dim, data.action_dim, cfg.critics), saved["critics"]),
        )  # fmt: skip
        self.keys["dynamics"] = artifact_key(stage="dynamics", cfg=cfg.dynamics, data=content, seed=seed)
        dynamics, report = self.cached(
            "dynamics", self.keys["dynamics"], lambda ctx: train_dynamics(data, cfg.dynamics, seed, ctx),
            lambda out: {"dynamics": out[0].state_dict(), "report": out[1]},
            lambda saved: (_with_state(EnsembleDynamics(data.state_dim, data.action_dim, cfg.dynamics),
                                       saved["dynamics"]), saved["report"]),
        )  # fmt: skip
        return critics.to(data.device), dynamics.to(data.device), report


class DeterministicActor:
    """Any deployable actor (e.g. a baseline's, tanh-squashed) in the shape AM-Q scores: one member, its action."""

    num_members = 1

    def __init__(self, actor: torch.nn.Module):
        self.actor = actor

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs)


def amq_scores(data: OfflineDataset, actors: list[torch.nn.Module], cfg: OfflineConfig, cache_dir: str | Path,
               obs_layout: ObservationLayout | None = None, writer: Any = None) -> list[float]:  # fmt: skip
    """AM-Q of deployable actors in the learned model with the IQL critics, the yardstick Uni-O4's gate uses
    (stage-1 models trained once per data and config, cached): how the baselines face the same gate."""
    critics, dynamics, _ = Stage1(data, cfg, cache_dir, writer).critics_and_dynamics()
    evaluator = make_evaluator(data, dynamics, critics, cfg.improvement, cfg.seed, obs_layout)
    return [evaluator.scores(DeterministicActor(a.to(data.device))).item() for a in actors]


def make_evaluator(
    data: OfflineDataset, dynamics: EnsembleDynamics, critics: Critics, cfg: ImprovementConfig, seed: int,
    obs_layout: ObservationLayout | None = None,
) -> AmqEvaluator:  # fmt: skip
    """AM-Q from `cfg.ope_states` dataset states drawn once with the run's seed."""
    start = data.state[data.sample_indices(cfg.ope_states, torch.Generator().manual_seed(seed + 4))]
    terminal_fn = None
    if obs_layout is not None and cfg.ope_max_tilt > 0:
        terminal_fn = tilt_terminal(obs_layout, cfg.ope_max_tilt)
    return AmqEvaluator(dynamics, critics, start, data.obs_dim, cfg.ope_horizon, seed + 5, terminal_fn)


def _with_state(module: torch.nn.Module, state: dict) -> torch.nn.Module:
    module.load_state_dict(state)
    return module


def _cpu_actor(actor: ActorMLP) -> ActorMLP:
    copy = ActorMLP(**actor.architecture)
    copy.load_state_dict({k: v.detach().cpu() for k, v in actor.state_dict().items()})
    return copy.eval()


__all__ = ["OfflineConfig", "OfflineResult", "Stage1", "amq_scores", "load_offline_config", "make_evaluator", "run_offline"]
