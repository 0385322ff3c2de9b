"""Fine-tuning as functions, configured by typed requests: `finetune_offline` (robot logs → a candidate policy →
the deployment gate) and `finetune_online` (guarded fine-tuning on the robot from an offline result). The
command line (`uni_o4 finetune`) and the pipeline call them; errors arrive as exceptions, not exit codes.

Offline: a dataset from robot logs, fine-tuning with the chosen method (uni_o4/registry.py), the deployment
gate (uni_o4/gate.py: by default the simulator calibrated from the same logs judges candidate against incumbent;
`gate="amq"` for Uni-O4's AM-Q). Online: guarded fine-tuning through
the robot session, starting from an offline result. Every run folder holds the config it used, TensorBoard logs,
a JSON report and plots; rerunning with the same `out` resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from real_robot.lcm_bus import DEFAULT_LCM_URL
from robot_spec.config import load_config, merge, named_config

SOURCE_FILE = "finetune.json"  # what an offline run was made from: online fine-tuning reads it


def default_out() -> Path:
    return Path("runs") / "finetune" / time.strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class OfflineRequest:
    logs: list[Path]  # log folders (folders below them are read too)
    out: Path  # the run folder (reuse it to resume)
    algo: str = "uni_o4"  # the method (uni_o4/registry.py)
    init: Path | None = None  # the incumbent policy.pt to start from (default: BC)
    preset: str | None = None  # configs/finetune/<preset>.yaml (default: the method's)
    ope_preset: str = "uni_o4"  # baselines: the Uni-O4 preset whose AM-Q the gate scores with
    robot: str = "go1"
    cache: Path | None = None  # artefact cache shared across runs (default <out>/cache)
    skip_damaged: bool = False  # report damaged log files and use the rest
    seed: int | None = None
    device: str = "cpu"
    overrides: dict | None = None  # `--set` values over the preset, checked like it, saved with the run's config
    gate: str = "calibrated"  # the gate's evaluator (uni_o4.gate.EVALUATORS); amq where there is no --init
    gate_preset: str = "sim_ppo"  # the calibrated gate: the sim_ppo preset whose calibration budget and gate it uses
    calibration: Path | None = None  # the calibrated gate's folder (reused when it holds these logs' fit)


def finetune_offline(req: OfflineRequest) -> Path:
    """Offline fine-tuning and the gate; the run folder (out/deploy/policy.pt: what to deploy)."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from robot_spec import load_robot
    from robot_spec.policy_io import load_policy, require_feed_forward
    from uni_o4.log_dataset import dataset_from_log_folder, files_hash, log_folders
    from uni_o4.method import OfflineJob
    from uni_o4.registry import METHODS, make_method

    method = make_method(req.algo)
    spec = load_robot(req.robot)
    init = load_policy(req.init, spec) if req.init else None  # refuses a policy for another robot/layout
    init = require_feed_forward(init, "fine-tuning") if init else None
    out = req.out
    out.mkdir(parents=True, exist_ok=True)
    job = OfflineJob(
        req.algo, req.preset or METHODS[req.algo].preset, list(req.logs), spec, out, init, req.init, req.seed,
        req.device, req.cache, req.ope_preset, overrides=req.overrides or {},
    )  # fmt: skip
    data_cfg = method.data_config(job)
    if data_cfg is not None:
        job.data, job.data_report = dataset_from_log_folder(job.logs, spec, data_cfg, req.skip_damaged, req.device)
        report = job.data_report
        print(f"dataset: {len(job.data)} transitions from {report.episodes} episodes "
              f"({report.terminals} terminals) in {' '.join(map(str, req.logs))}")  # fmt: skip
    folders = [folder for root in job.logs for folder in log_folders(root)]
    data_hash = job.data_report.files_hash if job.data_report else files_hash(folders)
    source = {"algo": req.algo, "data": [str(p) for p in req.logs], "init": str(req.init or ""),
              "preset": req.preset or req.algo, "data_hash": data_hash}  # fmt: skip
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2))
    torch.manual_seed(req.seed if req.seed is not None else 0)
    with SummaryWriter(str(out / "tensorboard")) as writer:
        job.writer = writer
        outcome = method.finetune_offline(job)
    decision, sim = gate_candidate(req, spec, outcome.candidate, (outcome.score, outcome.incumbent_score))
    method.report(outcome, decision, out)
    data = asdict(job.data_report) if job.data_report else None
    report = {"source": source, "data": data, "offline": outcome.details, "sim_eval": sim, "gate": asdict(decision)}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return out


def gate_candidate(req: OfflineRequest, spec, candidate: Path, scores: tuple[float, float]):
    """The deployment gate; out/deploy/policy.pt is the candidate if it passed, else the incumbent (init)."""
    from uni_o4 import gate

    out = req.out
    if req.gate not in gate.EVALUATORS:
        raise ValueError(f"gate: unknown evaluator {req.gate!r} (known: {', '.join(gate.EVALUATORS)})")
    if req.gate == "calibrated" and req.init is not None:
        decision, sim = calibrated_decision(req, candidate, scores), None
        summary = "calibrated simulator"
    else:  # AM-Q, and no falls in randomised simulation
        decision, sim = amq_decision(req, spec, candidate, scores)
        summary = (f"AM-Q: incumbent {scores[1]:.4g} -> candidate {scores[0]:.4g}; "
                   f"sim falls {sim['fall_rate']:.3f}")  # fmt: skip
    if decision.passed or req.init is not None:
        gate.apply(decision, candidate, req.init or candidate, out)
    else:
        (out / "gate.json").write_text(json.dumps(asdict(decision), indent=2))
    verdict = "passed" if decision.passed else "REFUSED"
    print(f"{summary}; gate {verdict}: {'; '.join(decision.reasons)}")
    if decision.passed or req.init is not None:
        print(f"policy to deploy: {out / 'deploy' / 'policy.pt'} ({'fine-tuned' if decision.passed else 'previous'})")
    else:
        print("no policy to deploy: the candidate did not pass and there is no previous policy (--init)")
    return decision, sim


def amq_decision(req: OfflineRequest, spec, candidate: Path, scores: tuple[float, float]):
    """Uni-O4's gate: AM-Q not below the incumbent's, no falls under randomised training dynamics."""
    from robot_spec.policy_io import load_policy
    from sim_pretrain.evaluate import EvalConfig, evaluate_policy
    from uni_o4 import gate

    gate_cfg = gate.GateConfig()
    eval_cfg = load_config(EvalConfig, named_config("eval", gate_cfg.eval_preset))
    sim = evaluate_policy(load_policy(candidate, spec), eval_cfg, device=req.device)
    return gate.decide(scores[0], scores[1], sim, gate_cfg), sim


def calibrated_decision(req: OfflineRequest, candidate: Path, scores: tuple[float, float]):
    """sim_ppo's gate on this candidate: the simulators calibrated from the same logs (its default budget, one per
    fit), every episode from the robot's logged starts, candidate against the incumbent."""
    from uni_o4 import gate, sim_ppo

    from real_robot.calibrate import CalibrationError

    cfg = sim_ppo.load_sim_ppo_config(req.gate_preset, None if req.seed is None else {"seed": req.seed})
    folder = req.calibration or req.out / "calibration"
    try:
        profile, calibration = sim_ppo.calibrate_from(list(req.logs), folder, cfg)
    except CalibrationError as err:  # no simulator to judge in: the incumbent stays
        reason = f"the calibrated gate could not calibrate from these logs ({err}); `--gate amq` judges by AM-Q"
        return gate.GateDecision(False, [reason], scores[0], scores[1], evaluator="calibrated")
    starts = sim_ppo.robot_starts(list(req.logs), folder)
    # In every fit's simulator: the logs cannot tell them apart, so the candidate must beat the incumbent in each
    runs = [sim_ppo.Candidate(candidate, sim, seed) for sim, seed in sim_ppo.simulators(profile, calibration)]
    verdicts = sim_ppo.gate(runs, req.init, calibration, starts, cfg.gate, req.device)
    return gate.from_calibrated(next((v for v in verdicts if not v["passed"]), verdicts[0]), scores)


# --------------------------------------------------------------------------------------------- online
@dataclass(frozen=True)
class OnlineRequest:
    policy: Path | None  # the output folder of an offline run
    out: Path  # the run folder (reuse it to resume)
    preset: str | None = None  # configs/finetune/<preset>.yaml (default: online)
    stand_in: str | None = None  # run on a stand-in robot with this reality-gap profile; None: the robot
    updates: int | None = None  # overrides the preset
    rollout_steps: int | None = None  # overrides the preset's episodes per rollout
    lcm_url: str = DEFAULT_LCM_URL  # on a robot: the running bridge's LCM
    channel_prefix: str = ""
    robot: str = "go1"
    seed: int | None = None
    device: str = "cpu"
    overrides: dict | None = None  # `--set` values over the preset, checked like it, saved in online_config.yaml


def finetune_online(req: OnlineRequest):
    """Guarded online fine-tuning (uni_o4.online.OnlineRun); its final state. Raises TimeoutError (no state from
    the bridge), EpisodeStartError (a robot that cannot start) or KeyboardInterrupt (the operator stopped it; the
    robot is damping): rerunning with the same `out` resumes."""
    from torch.utils.tensorboard import SummaryWriter

    from deploy.session import SessionConfig
    from robot_spec import load_robot
    from uni_o4.online import OnlineConfig, OnlineRun, RobotLink, StandInRobotLink
    from uni_o4.registry import build_learner

    if req.policy is None or not (req.policy / SOURCE_FILE).is_file():
        raise FileNotFoundError(f"--online needs --policy: the output folder of `uni_o4 finetune --offline` "
                                f"(with {SOURCE_FILE}), got {req.policy}")  # fmt: skip
    spec = load_robot(req.robot)
    given = {"seed": req.seed, "updates": req.updates, "rollout_steps": req.rollout_steps}
    overrides = {key: value for key, value in given.items() if value is not None}
    preset = named_config("finetune", req.preset or "online")
    cfg = load_config(OnlineConfig, preset, merge(overrides, req.overrides or {}))
    source = json.loads((req.policy / SOURCE_FILE).read_text())
    learner, data_cfg = build_learner(req.policy, source, spec, cfg, req.device)
    if req.stand_in:
        robot = StandInRobotLink(req.stand_in, cfg, req.robot)
    else:
        session = SessionConfig(robot=req.robot, lcm_url=req.lcm_url, channel_prefix=req.channel_prefix,
                                operator_reset=True)  # fmt: skip
        robot = RobotLink(cfg, session)
    out = req.out
    out.mkdir(parents=True, exist_ok=True)
    size = f"{cfg.rollout_steps} steps" if cfg.rollout_steps else f"{cfg.episodes_per_rollout} episode(s)"
    where = f"the stand-in ({req.stand_in})" if req.stand_in else "the robot"
    print(f"online {source['algo']} from {req.policy}: {cfg.updates} updates of {size} on {where} -> {out}")
    with SummaryWriter(str(out / "tensorboard")) as writer:
        state = OnlineRun(learner, spec, data_cfg, cfg, out, robot, writer).run()
    rollbacks = sum("rollback" in h for h in state.history)
    print(f"online: {len(state.history)} rollouts, {rollbacks} rollback(s); best: update {state.best_iteration} "
          f"-> {out / 'deploy' / 'policy.pt'}")  # fmt: skip
    return state
