"""Does the calibration's local optimum decide what fine-tuning gets? One robot's logs, several calibrations.

On the logs of one stand-in robot: `real_robot calibrate` once per search seed (its own windows and CMA-ES path,
sim_ppo's budget), sim_ppo's PPO (its quick preset, from --policy, the robot's logged starts) in each simulator,
and variants of the training ranges; every policy evaluated on the same stand-in episodes. Rows: the calibrated
figures, their held-out replay loss, and each policy's return / tracking error / falls.

A run is SEARCH_SEED:PPO_SEED:VARIANT. A variant is "as_is" (the preset's ranges around the fit), or defined by
--variants NAME=JSON (sim_pretrain's DynamicsConfig.ranges: explicit per-figure intervals) or NAME=spans (each
figure drawn over the span its logs cannot tell apart: the calibration's flat_over and its profile likelihood
`plausible`, which is computed, --refit-evals evaluations per re-fit, for the calibrations a spans run uses).

    python benchmarks/calibration_fits.py --logs runs/pipeline/data_logs --profile strong \
        --runs 0:0:as_is 0:1:as_is 1:0:as_is 0:0:wide_friction 0:0:spans \
        --variants wide_friction='{"friction": [0.25, 1.25]}' spans=spans
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluation_of  # noqa: E402
from uni_o4.sim_ppo import calibrate_from, load_sim_ppo_config, robot_starts, tune  # noqa: E402

# A calibration's figures (real_robot.calibrate.PARAMS) as the training simulator's (DynamicsConfig.ranges keys)
AS_DYNAMICS = {"friction": "friction", "added_mass": "added_mass", "latency": "latency_s", "kp": "kp_factor",
               "kd": "kd_factor", "frictionloss": "joint_frictionloss_factor"}
KEYS = ("mean_return", "tracking_error_xy", "fall_rate", "trip_rate", "episodes")


def spans(calibration: dict, spread: float, mass_spread: float, latency_spread: float) -> dict:
    """Ranges covering each figure's fit ± the preset's spread and its spans of equal held-out loss."""
    centre, out = calibration["identified"], {}
    around = {"friction": spread, "kp": spread, "kd": spread}
    for name, figure in AS_DYNAMICS.items():
        found = [calibration[k][name] for k in ("flat_over", "plausible") if name in (calibration.get(k) or {})]
        if name not in centre or not found:
            continue
        c = centre[name]
        width = {"added_mass": mass_spread, "latency": latency_spread}.get(name, c * around.get(name, 0.0))
        low, high = min(c - width, *(s[0] for s in found)), max(c + width, *(s[1] for s in found))
        out[figure] = [low if name == "added_mass" else max(low, 0.0), high]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", type=Path, required=True, help="one robot's log folder (real_robot collect)")
    p.add_argument("--profile", default="strong", help="the stand-in profile the logs came from")
    p.add_argument("--robot-seed", type=int, default=0, help="the stand-in robot of the logs (pipeline --seed)")
    p.add_argument("--policy", type=Path, default=Path("policies/go1_robust/policy.pt"))
    p.add_argument("--runs", nargs="+", default=["0:0:as_is", "1:0:as_is"], help="SEARCH_SEED:PPO_SEED:VARIANT")
    p.add_argument("--variants", nargs="*", default=[], help="NAME=JSON ranges or NAME=spans (see above)")
    p.add_argument("--refit-evals", type=int, default=60, help="calibrate's profile likelihood, for spans runs")
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--root", type=Path, default=Path("runs/calibration_fits"))
    p.add_argument("--name", default="calibration_fits")
    args = p.parse_args()

    if not args.logs.is_dir():
        p.error(f"--logs {args.logs}: no such log folder")
    spec, cfg = load_robot("go1"), load_sim_ppo_config("sim_ppo_quick")
    evaluation = RobotEvalConfig(episodes=args.episodes, episode_s=20.0, seed=args.robot_seed + 100,
                                 robot_seed=args.robot_seed)  # fmt: skip
    variants = {"as_is": "{}", **dict(v.split("=", 1) for v in args.variants)}
    try:
        runs = [(int(a), int(b), v) for a, b, v in (r.split(":") for r in args.runs)]
    except ValueError:
        p.error(f"--runs {' '.join(args.runs)}: expected SEARCH_SEED:PPO_SEED:VARIANT, e.g. 0:0:as_is")
    if unknown := {v for *_, v in runs} - set(variants):
        p.error(f"--runs: variants {sorted(unknown)} not defined by --variants")
    starts = robot_starts([args.logs], args.root / "starts")
    with_spans = {seed for seed, _, v in runs if variants[v] == "spans"}  # calibrations that need `plausible`
    rows = {"sim policy": evaluation_of(args.policy, args.profile, args.root / "eval_sim", spec, evaluation)}
    for search_seed, ppo_seed, name in runs:
        spans_run = variants[name] == "spans"
        budget = replace(cfg.calibration, refit_evals=args.refit_evals if search_seed in with_spans else 0)
        profile, calibration = calibrate_from([args.logs], args.root / f"calibration_s{search_seed}",
                                              replace(cfg, calibration=budget), fits=1, seed=search_seed)  # fmt: skip
        d = cfg.dynamics
        ranges = spans(calibration, d.spread, d.added_mass_spread, d.latency_spread_s) if spans_run \
            else json.loads(variants[name])  # fmt: skip
        tag = f"s{search_seed}_p{ppo_seed}_{name}"
        run_cfg = replace(cfg, seed=ppo_seed, dynamics=replace(d, ranges=ranges))
        policy = tune(args.policy, profile, starts, run_cfg.iterations, args.root / f"ppo_{tag}", run_cfg, "cpu",
                      seed=ppo_seed)  # fmt: skip
        metrics = evaluation_of(policy, args.profile, args.root / f"eval_{tag}", spec, evaluation)
        fit = {"identified": calibration["identified"],
               "held_out_loss": calibration["fit_error_rms"]["held_out"]["loss_after"]}  # fmt: skip
        rows[tag] = {**{k: metrics[k] for k in KEYS}, "calibration": fit, "ranges": ranges}
        print(f"{tag}: return {metrics['mean_return']:.2f}, tracking {metrics['tracking_error_xy']:.3f} m/s, "
              f"falls {metrics['fall_rate']:.2f}; fit {fit}")  # fmt: skip
    rows["sim policy"] = {k: rows["sim policy"][k] for k in KEYS}
    save(args.name, {"setting": {k: str(v) for k, v in vars(args).items()}, "results": rows})


if __name__ == "__main__":
    main()
