"""`uni_o4 pipeline`: the whole sim-to-real loop on the stand-in robot in one command.

    the shipped robust policy (or --policy, or pretraining: --pretrain-preset quick)  →  stand-in Go1 with a
    reality-gap profile  →  deploy and collect (real_robot collect)  →  offline fine-tuning  →  guarded online
    fine-tuning
By default (`--algo sim_ppo`, uni_o4/sim_ppo.py) offline is fine-tuning in a simulator calibrated from the logs
(real_robot calibrate → PPO there, half the episodes from the robot's own policy starts → the gate → the robot's
check), and online is rounds of real rollouts → recalibration → PPO → the robot's check. `--algo uni_o4` (or a
baseline: iql, calql, o3f) runs `uni_o4 finetune --offline` on the logs and `uni_o4 finetune --online` instead.
Every stage closes a share of the sim→nominal gap (the sim policy on the training model: the reality gap itself).
With `--oracle-iterations N` (off by default) an oracle row joins: the sim policy fine-tuned by N PPO iterations in
the training simulator set to the stand-in's true figures, and "gap recovered" is measured against it too,
(stage − sim policy) ÷ (oracle − sim policy), for velocity tracking error and for return.

Each stage calls the functions the command a user would run alone calls (sim_pretrain.train, deploy.session,
uni_o4.finetune), for --robot, into its own folder under --out; a stage whose output exists is skipped, so
rerunning the command resumes. After each stage its policy is evaluated on the
stand-in (deterministic, the same command schedule and episodes), and the table of return, velocity-tracking
error and falls is printed and saved (pipeline.json, pipeline.md, pipeline.png).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from real_robot.datalog import set_aside
from robot_spec.config import to_dict
from robot_spec.policy_io import load_policy, shipped_policy
from deploy.session import EpisodeStartError
from uni_o4.gate import EVALUATORS
from uni_o4.finetune import OfflineRequest, OnlineRequest, finetune_offline, finetune_online
from uni_o4.gap_stats import METRICS, gap_recovered
from uni_o4.registry import METHODS as REGISTERED

# sim_ppo's online stage is rounds of collection and recalibration, not an online learner: the pipeline runs it itself
METHODS = (*REGISTERED, "sim_ppo")
ORACLE_STAGE = "oracle (true profile)"
NOMINAL_STAGE = "sim policy, no gap"


@dataclass
class PipelineRequest:
    """What `uni_o4 pipeline` runs; the defaults are the main job's (the command's options, one for one)."""

    algo: str = "sim_ppo"
    robot: str = "go1"
    profile: str = "strong"  # the stand-in's reality-gap profile: a configs/reality_gap/ name or a file
    # Where it starts: a sim-pretrained policy.pt beside its run; with neither, the robot's shipped robust policy
    # (policies/go1_robust: it walks every stand-in robot without a fall, the unseen ones included, where the quick
    # preset's flat-ground policy falls on most); or pretraining with this sim_pretrain preset first.
    policy: Path | None = None
    pretrain_preset: str | None = None
    data: Path | None = None  # logs collected before: skips collection
    collect_steps: int = 20000
    collect_noise: float = 0.15  # std of the Gaussian noise on collected actions (action units)
    offline_preset: str | None = None  # default: <algo>'s quick preset
    gate: str = "calibrated"
    gate_preset: str = "sim_ppo_quick"
    online_preset: str = "online_quick"
    # > 0: the oracle row (PPO in the true profile's figures, the yardstick of benchmarks/gap_recovery.py: 150
    # there); off in the main job, whose table closes the sim→nominal gap without it and runs ~5 min shorter.
    oracle_iterations: int = 0
    eval_episodes: int = 4
    eval_episode_s: float = 20.0
    out: Path | None = None  # default runs/pipeline/<time>; an existing one resumes
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.collect_steps, self.eval_episodes, self.eval_episode_s) <= 0 or self.oracle_iterations < 0:
            raise ValueError("--collect-steps, --eval-episodes and --eval-episode-s must be positive, "
                             "--oracle-iterations >= 0")
        if self.policy is not None and self.pretrain_preset is not None:
            raise ValueError("--policy and --pretrain-preset: start from a policy or pretrain one, not both")
        if self.algo not in METHODS or self.gate not in EVALUATORS:
            raise ValueError(f"--algo {self.algo!r} / --gate {self.gate!r}: expected one of {', '.join(METHODS)} / "
                             f"{', '.join(EVALUATORS)}")


def run_pipeline(args: PipelineRequest) -> int:
    from robot_spec import load_robot
    from uni_o4.robot_eval import RobotEvalConfig

    spec = load_robot(args.robot)
    if args.algo == "sim_ppo" and args.robot != "go1":
        raise ValueError(f"--algo sim_ppo runs the go1 only (uni_o4/sim_ppo.py), not '{args.robot}'")
    out = args.out or Path("runs") / "pipeline" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_request.json").write_text(json.dumps(to_dict(args), default=str, indent=2))  # what this run was
    print(f"pipeline: {args.algo} on the stand-in ({args.profile}) -> {out}")
    # One stand-in robot (--seed) all along, as on hardware; evaluations meet other sensor noise than collection.
    evaluation = RobotEvalConfig(episodes=args.eval_episodes, episode_s=args.eval_episode_s, seed=args.seed + 100,
                                 robot_seed=args.seed)  # fmt: skip
    rows = []

    def evaluate(stage: str, policy: Path, profile: str, note: str = "") -> None:
        # The stand-in's evaluation episodes are reproducible from their seeds: a policy met again (an online stage
        # that accepted nothing) scores what it scored before, so its row is reused rather than run again.
        before = next((r for r in rows if r["profile"] == profile and Path(r["policy"]).resolve() == policy.resolve()),
                      None)  # fmt: skip
        row = ({**before, "stage": stage} if before else
               evaluate_stage(stage, policy, profile, out / "eval" / eval_folder_name(stage), spec, evaluation))
        rows.append(row | {"note": note})
        write_table(rows, out)

    policy = pretrain(args, out)
    evaluate(NOMINAL_STAGE, policy, "none", "the training model over the real protocol")
    evaluate("sim policy", policy, args.profile)
    if args.oracle_iterations > 0:
        evaluate(ORACLE_STAGE, oracle(policy, args, out / "oracle"), args.profile,
                 f"{args.oracle_iterations} PPO iterations in the true profile's figures")  # fmt: skip
    logs = args.data or collect(args, policy, out / "data_logs")
    if args.algo == "sim_ppo":
        run_sim_ppo(args, policy, logs, out, evaluate)
        print_table(rows)
        print(f"pipeline: table in {out / 'pipeline.md'}, plot {out / 'pipeline.png'}")
        return 0
    offline = out / "offline"
    run_stage(offline / "report.json", finetune_offline, OfflineRequest(
        [logs], offline, args.algo, policy, args.offline_preset or REGISTERED[args.algo].quick_preset, "uni_o4_quick",
        robot=args.robot, cache=out / "cache", seed=args.seed, device=args.device, gate=args.gate,
        gate_preset=args.gate_preset,
    ))  # fmt: skip
    gate = json.loads((offline / "gate.json").read_text())
    evaluate("after offline", offline / "candidate" / "policy.pt", args.profile,
             f"gate {'passed' if gate['passed'] else 'refused'}")  # fmt: skip
    online = out / "online"
    try:
        run_stage(online / "deploy" / "policy.pt", finetune_online, OnlineRequest(
            offline, online, args.online_preset, args.profile, robot=args.robot, seed=args.seed, device=args.device,
        ))  # fmt: skip
        evaluate("after online", online / "deploy" / "policy.pt", args.profile, online_note(online))
    except (ValueError, FileNotFoundError, TimeoutError, EpisodeStartError) as err:
        print(f"pipeline: online stage not run: {err!r}")
    except KeyboardInterrupt:  # the operator's stop is no finished run: the table so far, then exit as stopped
        print_table(rows)
        raise
    print_table(rows)
    print(f"pipeline: table in {out / 'pipeline.md'}, plot {out / 'pipeline.png'}")
    return 0


def oracle(policy: Path, args: PipelineRequest, run_dir: Path) -> Path:
    """The sim policy fine-tuned in the training simulator set to the stand-in's true profile (skipped when done)."""
    from sim_pretrain.env_config import DynamicsConfig
    from sim_pretrain.train import finetune_in_sim
    from uni_o4.sim_ppo import UnidentifiedEffects, deploy_action_limit

    if (run_dir / "policy.pt").is_file():
        print(f"pipeline: oracle done before: {run_dir / 'policy.pt'}")
        return run_dir / "policy.pt"
    print(f"pipeline: oracle: {args.oracle_iterations} PPO iterations in {args.profile}'s figures")
    # The training simulator's solver with the true figures: what a perfect calibration would give a method. Half
    # its environments on the accurate contact model, as fine-tuning: on the fast one alone strong's oracle froze on
    # the stand-in (docs/reality_gap.md).
    dynamics = DynamicsConfig(profile=args.profile, physics="training")
    return finetune_in_sim(policy, dynamics, args.oracle_iterations, run_dir, args.device, seed=args.seed,
                           action_limit=deploy_action_limit(args.robot),
                           randomization={"accurate_contact_share": UnidentifiedEffects().accurate_contact_share})  # fmt: skip


def run_sim_ppo(args: PipelineRequest, policy: Path, logs: Path, out: Path, evaluate) -> None:
    """Calibrate from the logs, PPO in the calibrated simulator, gate, the robot's pick (what the offline stage
    deploys); then online rounds on the stand-in."""
    from uni_o4 import sim_ppo

    cfg = sim_ppo.load_sim_ppo_config(args.offline_preset or "sim_ppo_quick", {"seed": args.seed})
    report = sim_ppo.finetune_offline([logs], policy, out / "offline", cfg, args.device)
    picked, check = sim_ppo.offline_pick(out / "offline", args.profile, out / "online", cfg, robot_seed=args.seed)
    evaluate("after offline", picked, args.profile, offline_note(report, check))
    online = sim_ppo.finetune_online(out / "offline", [logs], args.profile, out / "online", cfg, args.device,
                                     robot_seed=args.seed, start=(picked, check))  # fmt: skip
    checks, accepted = len(online["history"]), sum(h["accepted"] for h in online["history"])
    evaluate("after online", Path(online["from"]), args.profile,
             f"{checks} robot checks, {accepted} accepted, {online['real_steps']} real steps")


def offline_note(report: dict, check: list[dict]) -> str:
    """Which policy the offline stage deployed: the gate's count, and whose candidate the robot's check took."""
    passed, trained = len(report["candidates"]), len(report["gates"])
    if not check:
        return f"gate passed 0 of {trained}: the sim policy stays"
    if not check[0]["accepted"]:
        return f"gate passed {passed} of {trained}, the robot's check kept the sim policy"
    return f"gate passed {passed} of {trained}, the robot's check took {Path(check[0]['picked']).parent.name}"


def eval_folder_name(stage: str) -> str:
    return re.sub(r"\W+", "_", stage)


def row_eval_folder(run: Path, row: dict) -> Path:
    """Where a pipeline.json row's evaluation lies: the folder it names (a reused row names the stage's it repeats),
    else, in runs from before rows named it, its stage's."""
    return run / "eval" / row.get("eval", eval_folder_name(row["stage"]))


def run_stage(done_marker: Path, stage: Callable, request) -> None:
    """`stage(request)` unless its output exists (then the stage was done before)."""
    if done_marker.exists():
        print(f"pipeline: {done_marker.parent} done before, skipped")
        return
    print(f"pipeline: {stage.__name__} {request}")
    stage(request)


def pretrain(args: PipelineRequest, out: Path) -> Path:
    """The sim-pretrained policy: --policy, the shipped one, or sim_pretrain's training with --pretrain-preset into
    out/pretrain (skipped when done)."""
    from sim_pretrain.train import new_run_dir, train
    from sim_pretrain.train_config import load_train_config

    if args.policy is not None:
        if not args.policy.is_file():
            raise FileNotFoundError(f"--policy not found: {args.policy}")
        return args.policy
    if args.pretrain_preset is None:
        return shipped_policy(args.robot)
    runs = out / "pretrain"
    done = sorted(runs.glob(f"{args.robot}/*/policy.pt"))
    if done:
        print(f"pipeline: pretraining done before: {done[-1]}")
        return done[-1]
    cfg = load_train_config(args.robot, args.pretrain_preset, seed=args.seed)
    run_dir = new_run_dir(runs, args.robot, args.pretrain_preset)
    print(f"pipeline: pretraining {args.robot} (preset {args.pretrain_preset}) -> {run_dir}")
    return train(cfg, run_dir, device=args.device)


def collect(args: PipelineRequest, policy: Path, folder: Path) -> Path:
    """`real_robot collect` of --collect-steps on the stand-in (skipped when a finished log is there)."""
    from uni_o4.robot_eval import collect_on_stand_in

    marker = folder / "collected.json"
    if marker.is_file():
        print(f"pipeline: data collected before: {folder}")
        return folder
    set_aside(folder)  # an interrupted collection's logs are kept beside
    collect_on_stand_in(policy, args.profile, folder, steps=args.collect_steps, seed=args.seed,
                        action_noise=args.collect_noise, robot_seed=args.seed, robot=args.robot)  # fmt: skip
    marker.write_text(json.dumps({"policy": str(policy), "profile": args.profile, "steps": args.collect_steps,
                                  "action_noise": args.collect_noise}))  # fmt: skip
    return folder


def evaluate_stage(stage: str, policy: Path, profile: str, folder: Path, spec, cfg) -> dict:
    from uni_o4.robot_eval import evaluation_of

    metrics = evaluation_of(policy, profile, folder, spec, cfg)
    keys = ("mean_return", "std_return", "reward_per_step", "mean_return_unclipped", "mean_return_terms",
            "tracking_error_xy", "tracking_error_yaw", "fall_rate", "trip_rate", "stalled_s", "episodes",
            "policy_steps")  # fmt: skip
    return {"stage": stage, "profile": profile, "policy": str(policy), "eval": folder.name,
            **{k: metrics[k] for k in keys}}  # fmt: skip


def online_note(online: Path) -> str:
    history = json.loads((online / "online_history.json").read_text())
    steps = sum(h["policy_steps"] for h in history)
    rollbacks = sum("rollback" in h for h in history)
    note = f"{len(history)} rollouts, {rollbacks} rollback(s)"
    acceptance_file = online / "acceptance.json"
    if acceptance_file.is_file():
        acceptance = json.loads(acceptance_file.read_text())
        steps += acceptance["start"]["policy_steps"] + acceptance["online"]["policy_steps"]
        note += ", acceptance: " + ("online policy deployed" if acceptance["accepted"] else "starting policy kept")
    elif not load_policy(online / "deploy" / "policy.pt").contract["info"].get("changed", True):
        note += ", every change rolled back: starting policy kept"
    return f"{note}, {steps} real steps"


# --------------------------------------------------------------------------------------------- the table
COLUMNS = (("stage", "stage", "{}"), ("profile", "stand-in", "{}"), ("mean_return", "return", "{:.2f}"),
           ("std_return", "± (episodes)", "{:.2f}"), ("reward_per_step", "reward/step", "{:.4f}"),
           ("tracking_error_xy", "tracking err (m/s)", "{:.3f}"), ("tracking_error_yaw", "yaw err (rad/s)", "{:.3f}"),
           ("fall_rate", "falls/ep", "{:.2f}"), ("trip_rate", "trips/ep", "{:.2f}"), ("stalled_s", "stalled s/ep", "{:.1f}"),
           ("gap_tracking", "gap recovered (tracking)", "{:.0%}"), ("gap_yaw", "gap recovered (yaw)", "{:.0%}"),
           ("gap_return", "gap recovered (return)", "{:.0%}"),
           ("nominal_gap_tracking", "nominal gap closed (tracking)", "{:.0%}"),
           ("nominal_gap_yaw", "nominal gap closed (yaw)", "{:.0%}"),
           ("nominal_gap_return", "nominal gap closed (return)", "{:.0%}"), ("policy_steps", "steps", "{}"),
           ("note", "note", "{}"))  # fmt: skip
GAP_KEYS = {"tracking": "tracking_error_xy", "yaw": "tracking_error_yaw", "return": "mean_return"}  # gap_stats.METRICS


def with_gap_recovered(rows: list[dict]) -> list[dict]:
    """Rows of the gapped profile get the share of the sim policy → oracle gap they close, and of the sim policy →
    nominal gap (the sim policy on the training model: the reality gap itself, where the oracle is no ceiling), in
    velocity tracking (xy), yaw-rate tracking and return."""
    by_stage = {r["stage"]: r for r in rows}
    sim = by_stage.get("sim policy")
    out = []
    for row in rows:
        gaps = {}
        for prefix, ref in (("", by_stage.get(ORACLE_STAGE)), ("nominal_", by_stage.get(NOMINAL_STAGE))):
            if sim is not None and ref is not None and row["profile"] == sim["profile"]:
                gaps |= {f"{prefix}gap_{name}": share(row, sim, ref, key, METRICS[name])
                         for name, key in GAP_KEYS.items()}  # fmt: skip
        blank = dict.fromkeys(f"{prefix}gap_{name}" for prefix in ("", "nominal_") for name in GAP_KEYS)
        out.append({**blank, **row, **gaps})
    return out


def share(row: dict, sim: dict, ref: dict, key: str, lower_is_better: bool) -> float | None:
    """gap_recovered of `key`, None where a row lacks it (a table from before the metric existed)."""
    values = [r.get(key) for r in (row, sim, ref)]
    return None if None in values else gap_recovered(*values, lower_is_better)


def table_lines(rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("n/a" if row.get(key) is None else fmt.format(row[key])
                                       for key, _, fmt in COLUMNS) + " |")  # fmt: skip
    return lines


def print_table(rows: list[dict]) -> None:
    print("\n".join(table_lines(with_gap_recovered(rows))))


def write_table(rows: list[dict], out: Path) -> None:
    rows = with_gap_recovered(rows)
    (out / "pipeline.json").write_text(json.dumps(rows, indent=2))
    (out / "pipeline.md").write_text("\n".join(table_lines(rows)) + "\n")
    plot_table(rows, out / "pipeline.png")


def plot_table(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['stage']}\n({r['profile']})" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(axes, ("mean_return", "tracking_error_xy", "fall_rate"),
                              ("episode return", "velocity tracking error (m/s)", "falls per episode")):  # fmt: skip
        errors = [r["std_return"] for r in rows] if key == "mean_return" else None
        ax.bar(range(len(rows)), [r[key] for r in rows], yerr=errors, color="tab:blue", capsize=3)
        ax.set_xticks(range(len(rows)), names, fontsize=7)
        ax.set_title(label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
