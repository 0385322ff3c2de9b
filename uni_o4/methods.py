"""The fine-tuning methods behind `uni_o4.method.FineTuningMethod`: Uni-O4, and the off-policy baselines
(IQL, Cal-QL, O3F: any gradient-step `baselines.common.Algorithm`) through one wrapper."""

from __future__ import annotations

from pathlib import Path

import torch

from deploy.safety import load_safety_config
from robot_spec.checkpoint import load_checkpoint
from robot_spec.config import from_dict, load_config, merge, named_config, save_config, to_dict
from robot_spec.policy_io import ActorMLP, load_policy, save_policy
from robot_spec.spec import RobotSpec
from uni_o4.baselines.common import Algorithm, SafeActionSet, train
from uni_o4.dataset import OfflineDataset
from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder
from uni_o4.method import FineTuningMethod, OfflineJob, OfflineOutcome
from uni_o4.networks import GaussianPolicyEnsemble
from uni_o4.offline import OfflineConfig, OfflineResult, amq_scores, load_offline_config, run_offline
from uni_o4.online import DEPLOYED, OffPolicyLearner, OnlineConfig, PPOLearner, gate_passed

CANDIDATE = Path("candidate") / "policy.pt"


# --------------------------------------------------------------------------------------------- Uni-O4
class UniO4(FineTuningMethod):
    """Stage 1 (policy ensemble from the incumbent or BC, IQL critics, dynamics ensemble) and stage 2 (clipped
    multi-step improvement with AM-Q evaluation) offline; PPO from the best member online (stage 3)."""

    def config(self, job: OfflineJob) -> OfflineConfig:
        overrides: dict = {"behaviour": {"init": "policy" if job.init is not None else "bc"}}
        if job.seed is not None:
            overrides["seed"] = job.seed
        return load_offline_config(job.preset_file, merge(overrides, job.overrides))

    def data_config(self, job: OfflineJob) -> LogDataConfig:
        return self.config(job).data

    def finetune_offline(self, job: OfflineJob) -> OfflineOutcome:
        result = run_offline(job.data, job.init.actor if job.init else None, self.config(job), job.out, job.device,
                             job.writer, obs_layout=job.spec.observation, cache_dir=job.cache)  # fmt: skip
        candidate = job.out / CANDIDATE
        save_policy(result.actor, job.spec, candidate, {
            "source": "uni_o4 offline", "init": str(job.init_path or "bc"), "am_q": result.final_score,
            "best_member": result.best_member,
        })  # fmt: skip
        return OfflineOutcome(candidate, result.final_score, result.reference_score, result.summary())

    def report(self, outcome: OfflineOutcome, decision, out: Path) -> None:
        from uni_o4.report import plot_offline

        plot_offline(outcome.details, decision, out / "offline_report.png")

    def online_learner(self, result_dir: Path, source: dict, spec: RobotSpec, cfg: OnlineConfig,
                       device: str = "cpu") -> tuple[PPOLearner, LogDataConfig]:  # fmt: skip
        """PPO from the best member, V from the offline critics (the critics read the same measurements online)."""
        offline_cfg = load_config(OfflineConfig, result_dir / "offline_config.yaml")
        result = OfflineResult.load(result_dir, device)
        policy = result.best_policy()
        if not gate_passed(result_dir):  # start from what the gate kept deployed, with the offline critic
            print(f"online: the gate refused the offline candidate; starting from {result_dir / DEPLOYED}")
            deployed = load_policy(result_dir / DEPLOYED, spec, device).actor
            policy = GaussianPolicyEnsemble.from_actor(deployed, 1, **_std_kwargs(result.policy))
        return PPOLearner(policy, result.critics.v, cfg.ppo, cfg.seed), offline_cfg.data


def _std_kwargs(policy: GaussianPolicyEnsemble) -> dict:
    keys = ("state_dependent_std", "init_std", "log_std_bounds")
    return {k: policy.init_kwargs[k] for k in keys}


# --------------------------------------------------------------------------------------------- off-policy
def baseline_data_config() -> LogDataConfig:
    """How logs become the baselines' data: critics on the policy's observation only, because O3F scores
    candidate actions with Q while acting, where the runtime has just the observation at hand."""
    return LogDataConfig(critic_fields=[])


def make_algorithm(
    algo_cls: type, cfg, data: OfflineDataset, safe_set: SafeActionSet, device: str | torch.device = "cpu",
    init_actor: ActorMLP | None = None,
) -> Algorithm:  # fmt: skip
    """An `algo_cls` sized and normalised for `data` (critics see data.state, the policy data.obs).

    `init_actor` (an algorithm that `starts_from_actor`): start the policy mean from a pretrained actor, keeping
    its normalisation."""
    if type(cfg) is not algo_cls.config_type:
        raise TypeError(f"{algo_cls.__name__} needs a {algo_cls.config_type.__name__}, got {type(cfg).__name__}")
    if abs(cfg.discount - data.discount) > 1e-9:
        raise ValueError(f"config discount {cfg.discount} differs from the dataset's {data.discount} "
                         "(its Monte-Carlo returns were computed with the latter)")  # fmt: skip
    kwargs = {"state_dim": data.state_dim, "device": device}
    if init_actor is not None:
        if not algo_cls.starts_from_actor:
            raise ValueError(f"{algo_cls.__name__} cannot start from a pretrained actor ({algo_cls.why_no_init})")
        kwargs["init_actor"] = init_actor
    algo = algo_cls(cfg, data.obs_dim, data.action_dim, safe_set, **kwargs)
    obs_stats = None if init_actor is not None else tuple(x.to(device) for x in data.obs_stats())
    algo.set_normalization(obs_stats, tuple(x.to(device) for x in data.state_stats()))
    return algo


class OffPolicy(FineTuningMethod):
    """A gradient-step `Algorithm` (self.algorithm) trained on the logged dataset offline, then on offline +
    online data between rollouts; its candidate is scored by Uni-O4's AM-Q yardstick for the gate."""

    def config(self, job: OfflineJob):
        overrides = {"seed": job.seed} if job.seed is not None else {}
        return load_config(self.algorithm.config_type, job.preset_file, merge(overrides, job.overrides))

    def data_config(self, job: OfflineJob) -> LogDataConfig:
        return baseline_data_config()

    def safe_set(self, spec: RobotSpec) -> SafeActionSet:
        return SafeActionSet.from_spec(spec, load_safety_config(spec.name).max_action_delta)

    def finetune_offline(self, job: OfflineJob) -> OfflineOutcome:
        cfg, data, spec, init = self.config(job), job.data, job.spec, job.init
        save_config(cfg, job.out / "baseline_config.yaml")
        start = init.actor if init is not None and self.algorithm.starts_from_actor else None
        algorithm = make_algorithm(self.algorithm, cfg, data, self.safe_set(spec), job.device, init_actor=start)
        history = train(algorithm, lambda: data.sample(cfg.batch_size), cfg.offline_steps, progress=True)
        for step in range(0, len(history), 100):
            for key, value in history[step].items():
                job.writer.add_scalar(f"{self.name}/{key}", value, step)
        state = {"algo": self.name, "config": to_dict(cfg), "state": algorithm.state_dict()}
        torch.save(state, job.out / "algorithm.pt")
        candidate = job.out / CANDIDATE
        save_policy(algorithm.export_actor(), spec, candidate, {"source": f"{self.name} offline"})
        ope_cfg = load_offline_config(named_config("finetune", job.ope_preset))
        actors = [algorithm.export_actor()] + ([init.actor] if init is not None else [])
        scores = amq_scores(data, actors, ope_cfg, job.cache or job.out / "cache", spec.observation, job.writer)
        incumbent = scores[1] if init is not None else float("-inf")
        details = {"algo": self.name, "steps": len(history), "final": history[-1], "am_q": scores}
        return OfflineOutcome(candidate, scores[0], incumbent, details)

    def online_learner(self, result_dir: Path, source: dict, spec: RobotSpec, cfg: OnlineConfig,
                       device: str = "cpu") -> tuple[OffPolicyLearner, LogDataConfig]:  # fmt: skip
        refused = not gate_passed(result_dir)
        if refused and not self.algorithm.starts_from_actor:
            raise ValueError(f"the gate refused {self.name}'s offline result in {result_dir} (gate.json), and "
                             f"{self.algorithm.__name__} cannot restart from the deployed policy "
                             f"({self.algorithm.why_no_init}): nothing safe to fine-tune online")  # fmt: skip
        saved = load_checkpoint(result_dir / "algorithm.pt")
        data_cfg = baseline_data_config()
        offline, _ = dataset_from_log_folder([Path(p) for p in source["data"]], spec, data_cfg, device=device)
        algo_cfg = from_dict(self.algorithm.config_type, saved["config"])
        deployed = load_policy(result_dir / DEPLOYED, spec, device).actor
        # started offline from the --init actor: rebuild with its architecture (the weights come from the state)
        init = {"init_actor": deployed} if source.get("init") and self.algorithm.starts_from_actor else {}
        algorithm = make_algorithm(self.algorithm, algo_cfg, offline, self.safe_set(spec), device, **init)
        algorithm.load_state_dict(saved["state"])
        if refused:  # like Uni-O4: start from what the gate kept deployed, with the offline critics
            print(f"online: the gate refused the offline candidate; starting from {result_dir / DEPLOYED}")
            algorithm.restart_policy_mean(deployed)
        return OffPolicyLearner(algorithm, offline, data_cfg, spec, cfg), data_cfg
