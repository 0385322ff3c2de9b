"""How much of the reality gap calibrated-simulator fine-tuning recovers, against the oracle and a control.

Per (profile, seed), on one stand-in robot (robot seed = seed), every policy evaluated on the same episodes:
    sim policy         the pretrained policy, on the nominal stand-in ("none") and on the profile
    oracle             + PPO in the training simulator set to the profile's true figures (what a perfect
                       calibration could give; the training solver, so effects it cannot express stay unmodelled);
                       with --oracle-starts also from the robot's logged starts, as ours trains
    ours, candidate k  collect logs (σ 0.15 action noise) → `real_robot calibrate` → + PPO in the simulator
                       centred on the identified figures, a share of episodes starting from the robot's logged
                       policy starts (sim_ppo.train_candidates: its offline stage, before its gate; PPO seed
                       seed + k, in calibration fit k mod --fits);
                       "ours, narrow" the same with ±10 %, ±0.5 kg, ±2 ms and no logged starts
    ours, robot-checked  what sim_ppo deploys: of its candidates (--candidates PPO runs) those its gate passes
                       (the calibrated simulator from the robot's starts), the robot's check picks one (its online
                       stage's first step, on other episodes), or the sim policy stays
    control            + the same PPO budget in the nominal training simulator (is it the calibration or just
                       more training?)
    oracle, exact      with --exact-oracle: + PPO (the oracle's recipe, --exact-iterations) in the stand-in's own
                       physics (uni_o4.exact_env: its profile, solver and contact options, motor law, latency
                       jitter, sensors), the true ceiling where the profile has effects the training simulator
                       cannot express; trained once per profile, resumed from its last checkpoint if stopped;
                       its learning curve is saved beside it (training_history.json, training_curve.png)
    <algo>, candidate  with --offline-methods: `uni_o4 finetune --offline` (Uni-O4 or a baseline, its quick
                       preset, from the sim policy) on the same logs ours calibrates from, before its gate;
                       "<algo>, deployed" is what its gate (the simulator calibrated from these logs, as ours;
                       a run gated before by AM-Q is gated again, AM-Q's verdict kept as gate_amq) lets through
Gap recovered = (x − sim) ÷ (oracle − sim), for tracking error and for return (over seeds, with intervals and
the falls test: benchmarks/gap_summary.py). The oracle and the control never see the robot: each is trained once
per profile (PPO seed 0) and evaluated on every seed's robot; ours is trained per seed from that robot's logs.
Each step's output is kept under --root and reused, so the script resumes.

    python benchmarks/gap_recovery.py --policy runs/go1/<run>/policy.pt --profiles strong unmodelled --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.config import load_config  # noqa: E402
from sim_pretrain.env_config import DynamicsConfig, InitialStatesConfig  # noqa: E402
from sim_pretrain.train import finetune_in_sim, latest_checkpoint, train  # noqa: E402
from sim_pretrain.train_config import TrainConfig  # noqa: E402
from uni_o4 import exact_env  # noqa: E402
from uni_o4.finetune import OfflineRequest, finetune_offline, gate_candidate  # noqa: E402
from uni_o4.gap_stats import gap_recovered  # noqa: E402
from uni_o4.methods import CANDIDATE  # noqa: E402
from uni_o4.registry import METHODS  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, collect_on_stand_in, evaluation_of  # noqa: E402
from uni_o4.sim_ppo import SimPPOConfig, calibrate_from, deploy_action_limit, gate, load_sim_ppo_config  # noqa: E402
from uni_o4.sim_ppo import pick_on_robot, robot_starts, train_candidates  # noqa: E402

EXACT_SAVE_INTERVAL = 5  # the exact oracle's iterations are slow: checkpoint often, so a stopped run resumes
KEYS = ("mean_return", "std_return", "tracking_error_xy", "tracking_error_yaw", "fall_rate", "trip_rate",
        "policy_steps", "per_episode")  # per episode: benchmarks/gap_summary.py's intervals and fall tests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, required=True, help="pretrained policy.pt beside its run's checkpoints")
    p.add_argument("--profiles", nargs="+", default=["strong"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=150, help="PPO iterations of the oracle, ours and the control")
    p.add_argument("--collect-steps", type=int, default=20000)
    p.add_argument("--eval-episodes", type=int, default=12)
    p.add_argument("--root", type=Path, default=Path("runs/gap_recovery"))
    p.add_argument("--name", default="gap_recovery")
    p.add_argument("--no-controls", action="store_true", help="skip the narrow and nominal-PPO control rows")
    p.add_argument("--oracle-starts", action="store_true", help="the oracle also starts sim_ppo's share of "
                   "episodes from the robot's logged starts (trained per seed)")
    p.add_argument("--start-share", type=float, default=None, help="sim_ppo's start_share (share of training "
                   "episodes from the robot's logged policy starts); 0 = the runs from before them")
    p.add_argument("--terrain", type=float, nargs=2, metavar=("STEP_M", "SLOPE"), help="sim_ppo's terrain "
                   "randomisation (tile steps up to STEP_M, hills up to SLOPE grade); 0 0 = flat "
                   "(default: the preset's)")
    p.add_argument("--no-unidentified", action="store_true", help="sim_ppo without randomising the effects no "
                   "log identifies (per-joint strength, the contact model): the runs from before them")
    p.add_argument("--reward-scales", nargs="+", default=[], metavar="TERM=SCALE", help="sim_ppo's reward_scales "
                   "(reward terms set over the pretraining run's while fine-tuning), e.g. tracking_ang_vel=1.0")
    p.add_argument("--candidates", type=int, default=None, help="PPO runs (seeds seed + k) taking the calibration "
                   "fits in turn, evaluated each; the robot's check picks among them (default: the preset's)")
    p.add_argument("--fits", type=int, default=None, help="calibration fits, each its own simulator (default: the "
                   "preset's, at most --candidates)")
    p.add_argument("--offline-methods", nargs="+", default=[], choices=sorted(set(METHODS) - {"sim_ppo"}),
                   help="also fine-tune offline with these methods on the same logs (their quick presets)")
    p.add_argument("--exact-oracle", action="store_true", help="add the row 'oracle, exact': PPO in the stand-in's "
                   "own physics (slower: one core steps every environment's board)")
    p.add_argument("--exact-iterations", type=int, default=None, help="its PPO iterations (default: --iterations)")
    args = p.parse_args()
    scales = reward_scales(args.reward_scales)  # checked before anything runs

    spec, results = load_robot("go1"), {}
    for profile in args.profiles:
        for seed in args.seeds:
            root = args.root / profile / f"seed{seed}"
            cfg = RobotEvalConfig(episodes=args.eval_episodes, seed=seed + 100, robot_seed=seed)

            def evaluate(name: str, policy: Path, on: str = profile) -> dict:
                metrics = evaluation_of(policy, on, root / "eval" / name, spec, cfg)
                return {k: metrics[k] for k in KEYS}

            def tune(run: Path, dynamics: DynamicsConfig, ppo_seed: int, starts: InitialStatesConfig | None = None
                     ) -> Path:  # fmt: skip
                if (run / "policy.pt").is_file():
                    return run / "policy.pt"
                return finetune_in_sim(args.policy, dynamics, args.iterations, run, seed=ppo_seed,
                                       initial_states=starts, action_limit=deploy_action_limit())  # fmt: skip

            rows = {"sim policy, no gap": evaluate("sim_none", args.policy, "none"),
                    "sim policy": evaluate("sim", args.policy)}  # fmt: skip
            overrides = {"seed": seed} if args.start_share is None else {"seed": seed, "start_share": args.start_share}
            if args.no_unidentified:
                overrides["unidentified"] = {"joint_strength": 0.0, "accurate_contact_share": 0.0}
            if args.terrain is not None:
                overrides["terrain"] = {"step_height": args.terrain[0], "slope": args.terrain[1]}
            if scales:
                overrides["reward_scales"] = scales
            preset = load_sim_ppo_config("sim_ppo")
            candidates = args.candidates or preset.candidates
            overrides.update(candidates=candidates, calibration={
                "fits": args.fits or min(preset.calibration.fits, candidates)})
            cfg_ours = load_sim_ppo_config("sim_ppo", overrides)
            calibrated, calibration = calibrated_profile(args, root, cfg_ours)
            starts = robot_starts([root / "logs"], root / "calibration")
            oracle = DynamicsConfig(profile=profile, physics="training")
            if args.oracle_starts:  # the true figures and the robot's starts: per robot
                from_starts = InitialStatesConfig(str(starts), cfg_ours.start_share)
                rows["oracle"] = evaluate("oracle_starts", tune(root / "oracle_starts", oracle, 0, from_starts))
            else:
                rows["oracle"] = evaluate("oracle", tune(root.parent / "oracle", oracle, 0))
            if args.exact_oracle:
                iterations = args.exact_iterations or args.iterations
                policy, training = exact_oracle(args.policy, profile, root.parent, iterations)
                rows["oracle, exact"] = {**evaluate(f"oracle_exact_{iterations}it", policy), "training": training}
            prefix = ("rough_starts" if cfg_ours.terrain.enabled else "robot_starts") if cfg_ours.start_share > 0 \
                else "calibrated_wide"  # the runs before starts (and before terrain)
            prefix += "_unidentified" if any(asdict(cfg_ours.unidentified).values()) else ""
            prefix += f"_fits{cfg_ours.calibration.fits}" if cfg_ours.calibration.fits > 1 else ""
            prefix += "".join(f"_{term}{scale:g}" for term, scale in sorted(cfg_ours.reward_scales.items()))
            runs = train_candidates(args.policy, calibrated, calibration, starts, args.iterations, root, cfg_ours,
                                    "cpu", name=prefix)  # fmt: skip
            row_of, passed = {str(args.policy): "sim policy"}, []
            decisions = gate(runs, args.policy, calibration, starts, cfg_ours.gate)
            for k, (candidate, decision) in enumerate(zip((r.policy for r in runs), decisions)):
                row_of[str(candidate)] = f"ours, candidate {k}"  # PPO seed seed + k
                rows[row_of[str(candidate)]] = {**evaluate(candidate.parent.name, candidate), "gate": decision}
                passed += [candidate] if decision["passed"] else []
            picked, records = (robot_check(passed, args.policy, profile, root / "check", cfg_ours, seed) if passed
                               else (args.policy, []))  # fmt: skip
            rows["ours, robot-checked"] = {**rows[row_of[str(picked)]], "check": records}
            for algo in args.offline_methods:
                rows.update(offline_rows(algo, args.policy, root, seed, evaluate, rows["sim policy"]))
            if not args.no_controls:
                narrow = DynamicsConfig(profile=str(calibrated), physics="training")  # ±10 %, ±0.5 kg, ±2 ms
                rows["ours, narrow"] = evaluate("calibrated", tune(root / "calibrated", narrow, seed))
                rows["control: nominal PPO"] = evaluate("control", tune(root.parent / "control", DynamicsConfig(), 0))
            sim, oracle = rows["sim policy"], rows["oracle"]
            for row in rows.values():
                row["gap_tracking"] = gap_recovered(row["tracking_error_xy"], sim["tracking_error_xy"],
                                                    oracle["tracking_error_xy"], lower_is_better=True)  # fmt: skip
                row["gap_return"] = gap_recovered(row["mean_return"], sim["mean_return"], oracle["mean_return"])
            results[f"{profile} seed {seed}"] = rows
            print_rows(f"{profile} seed {seed}", rows)
    save(args.name, {"setting": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "results": results})  # fmt: skip


def reward_scales(pairs: list[str]) -> dict[str, float]:
    """TERM=SCALE arguments as a dict; a pair without '=', a scale that is not a number or a term the reward does not
    have is a one-line error (before any collection)."""
    scales = {}
    for pair in pairs:
        term, _, scale = pair.partition("=")
        try:
            scales[term] = float(scale)
        except ValueError:
            raise SystemExit(f"gap_recovery: --reward-scales {pair!r}: expected TERM=SCALE, e.g. tracking_ang_vel=1.0")
    try:
        SimPPOConfig(reward_scales=scales)  # the config's own check of the terms
    except ValueError as err:
        raise SystemExit(f"gap_recovery: --reward-scales: {err}")
    return scales


def calibrated_profile(args: argparse.Namespace, root: Path, cfg: SimPPOConfig) -> tuple[Path, dict]:
    """Logs of the sim policy with action noise on the stand-in (robot seed = seed), and sim_ppo's calibration."""
    profile, seed = root.parent.name, cfg.seed
    logs = root / "logs"
    if not (logs / "done").is_file():
        collect_on_stand_in(args.policy, profile, logs, steps=args.collect_steps, seed=seed, action_noise=0.15,
                            robot_seed=seed)  # fmt: skip
        (logs / "done").write_text("collected")
    fits = cfg.calibration.fits
    return calibrate_from([logs], root / ("calibration" if fits == 1 else f"calibration_fits{fits}"), cfg)


def exact_oracle(start: Path, profile: str, profile_root: Path, iterations: int) -> tuple[Path, dict]:
    """The exact oracle: the expressible oracle's recipe (finetune_in_sim from the sim policy, PPO seed 0) in the
    stand-in's own physics; resumed from its last checkpoint when a run was stopped. Its policy and learning curve."""
    run = profile_root / f"oracle_exact_{iterations}it"
    history = run / "training_history.json"
    if not (run / "policy.pt").is_file() or json.loads(history.read_text())["iteration"][-1] < iterations - 1:
        exact_env.register()
        if list(run.glob("model_*.pt")):
            train(load_config(TrainConfig, run / "config.yaml"), run, resume=latest_checkpoint(run))
        else:
            finetune_in_sim(start, DynamicsConfig(profile=profile), iterations, run, seed=0,
                            backend=exact_env.BACKEND, save_interval=EXACT_SAVE_INTERVAL,
                            action_limit=deploy_action_limit())  # fmt: skip
    curve = json.loads(history.read_text())
    return run / "policy.pt", {"iterations": iterations, "run": str(run), "mean_return": curve["mean_return"],
                               "mean_episode_s": curve["mean_episode_s"], "wall_s": curve["wall_s"][-1]}  # fmt: skip


def offline_rows(algo: str, policy: Path, root: Path, seed: int, evaluate, sim_row: dict) -> dict:
    """`uni_o4 finetune --offline --algo <algo>` on this robot's logs: its candidate, and what its gate (the
    calibrated simulator, on this robot's calibration) deploys. A run gated before by AM-Q is gated again."""
    run = root / f"offline_{algo}"
    request = OfflineRequest(logs=[root / "logs"], out=run, algo=algo, init=policy,
                             preset=METHODS[algo].quick_preset, ope_preset="uni_o4_quick",
                             cache=root / "offline_cache", seed=seed, calibration=root / "calibration")  # fmt: skip
    if not (run / "report.json").is_file():
        finetune_offline(request)  # as the pipeline runs it
    report = json.loads((run / "report.json").read_text())
    if report["gate"].get("evaluator") != "calibrated":
        report["gate_amq"] = report["gate"]
        scores = (report["gate"]["candidate_score"], report["gate"]["incumbent_score"])
        report["gate"] = asdict(gate_candidate(request, load_robot("go1"), run / CANDIDATE, scores)[0])
        (run / "report.json").write_text(json.dumps(report, indent=2, default=str))
    decision = report["gate"]
    candidate = {**evaluate(f"offline_{algo}", run / CANDIDATE), "gate": decision,
                 "gate_amq_passed": report.get("gate_amq", decision)["passed"]}  # fmt: skip
    return {f"{algo}, candidate": candidate, f"{algo}, deployed": candidate if decision["passed"] else sim_row}


def robot_check(candidates: list[Path], incumbent: Path, profile: str, folder: Path, cfg: SimPPOConfig,
                robot_seed: int) -> tuple[Path, list[dict]]:  # fmt: skip
    """sim_ppo's online check of its offline candidates: the robot runs them and the incumbent on the same episodes
    (other than the evaluation's) and picks at most one (sim_ppo.pick_on_robot)."""
    trial = RobotEvalConfig(episodes=cfg.online.acceptance_episodes, episode_s=cfg.online.episode_s,
                            seed=cfg.seed * 1000 + 499, robot_seed=robot_seed)  # fmt: skip

    def score(who: str, policy: Path, stop_after: int | None = None) -> dict:
        check = replace(trial, stop_after_ended_early=stop_after)
        return evaluation_of(policy, profile, folder / who, load_robot("go1"), check)

    return pick_on_robot(candidates, incumbent, score)


def print_rows(title: str, rows: dict) -> None:
    print(f"\n{title}")
    for name, r in rows.items():
        gaps = " ".join(f"{k} {r[k]:.0%}" if r.get(k) is not None else f"{k} n/a"
                        for k in ("gap_tracking", "gap_return"))  # fmt: skip
        gated = f"  gate {'passed' if r['gate']['passed'] else 'refused'}" if "gate" in r else ""
        print(f"  {name:22s} return {r['mean_return']:6.2f} ± {r['std_return']:5.2f}  tracking "
              f"{r['tracking_error_xy']:.3f} m/s  falls {r['fall_rate']:.2f}  {gaps}{gated}")


if __name__ == "__main__":
    main()
