"""Real-to-sim calibration: collect logs with the sim policy on the stand-in with a known reality-gap profile (fast
mode, action noise as the pipeline collects), run `real_robot calibrate` on them, and compare the identified
parameters with the profile's truth; fit error (held-out windows) before and after, and wall-clock times.

    python benchmarks/calibration.py --policy policy.pt [--profiles strong mild] [--steps 5000]
                                     [--logs strong=/path/to/log_folder]   # reuse a collection instead

The truth for the identified products: kp = strength x kp_factor; kd = strength x kd_factor plus the joint damping
the calibration folds into it ((damping_factor - 1) x the spec's joint damping / Kd, the same torque on the same
velocity); latency as the stand-in realises it (rounded up to a 2 ms board tick).
"""

from __future__ import annotations

import argparse
import glob
import numpy as np
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, save  # noqa: E402
from real_robot import calibrate as cal  # noqa: E402
from robot_spec.reality_gap import load_reality_gap  # noqa: E402
from robot_spec.spec import load_robot  # noqa: E402


def truth(profile_name: str) -> dict[str, float]:
    p, spec = load_reality_gap(profile_name), load_robot("go1")
    extra_damping = (p.joint_damping_factor - 1) * spec.body.joint_damping / spec.control.kd
    return {
        "friction": p.friction, "added_mass": p.added_mass, "latency": cal.latency_ticks(p.actuator_latency_s) * 0.002,
        "kp": p.motor_strength * p.kp_factor, "kd": p.motor_strength * p.kd_factor + extra_damping,
        "frictionloss": p.joint_frictionloss_factor, "damping": p.joint_damping_factor, "strength": p.motor_strength,
    }  # fmt: skip


def offsets_error(profile: str, found: list[float] | None) -> dict | None:
    """RMS of the encoder offsets the stand-in drew (robot seed 0: its first draw, real_robot.sim_robot
    StandInRobot._draw_biases) and of the fitted minus the drawn ones."""
    if found is None:
        return None
    true = np.random.default_rng(0).normal(0.0, load_reality_gap(profile).bias.joint_pos, 12)
    return {"true_rms": round(float(np.sqrt(np.mean(true**2))), 4),
            "error_rms": round(float(np.sqrt(np.mean((np.array(found) - true) ** 2))), 4)}  # fmt: skip


def collect(policy: Path, profile: str, folder: Path, steps: int, noise: float, seed: int) -> float:
    from uni_o4.robot_eval import collect_on_stand_in  # noqa: PLC0415

    started = time.monotonic()
    collect_on_stand_in(policy, profile, folder, steps=steps, action_noise=noise, seed=seed)
    return time.monotonic() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, help="default: the newest /work/shared_runs/go1/*/policy.pt")
    p.add_argument("--profiles", nargs="+", default=["strong", "mild"])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--action-noise", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logs", nargs="*", default=[], help="profile=folder: calibrate from an existing collection")
    p.add_argument("--windows", type=int, default=96)
    p.add_argument("--held-out", type=int, default=32)
    p.add_argument("--window-steps", type=int, default=5)
    p.add_argument("--max-evals", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--joint-offsets", action="store_true", help="fit the encoders' offsets too")
    p.add_argument("--name", default="calibration")
    args = p.parse_args()
    given = dict(item.split("=", 1) for item in args.logs)
    work = RESULTS / args.name
    rows = {}
    for profile in args.profiles:
        folder, collect_s = Path(given[profile]) if profile in given else work / f"logs_{profile}", None
        if profile not in given and not folder.exists():
            policy = args.policy or Path(sorted(glob.glob("/work/shared_runs/go1/*/policy.pt"))[-1])
            collect_s = collect(policy, profile, folder, args.steps, args.action_noise, args.seed)
        params = None  # all the data supports
        if args.joint_offsets:
            params = [*cal.choose_params(None, cal.load_logs([folder], load_robot("go1"))), cal.OFFSETS]
        settings = cal.CalibrationSettings(
            args.window_steps, args.windows, args.held_out, params, "strong",
            cal.SearchSettings(args.max_evals, workers=args.workers, seed=args.seed),
        )  # fmt: skip
        report = cal.calibrate([folder], work / f"calibrated_{profile}.yaml", settings)
        true = truth(profile)
        rows[profile] = {
            "logs": str(folder), "collect_s": collect_s and round(collect_s, 1), "calibrate_s": report["wall_s"],
            "policy_steps": report["policy_steps"], "walking_steps": report["walking_steps"],
            "parameters": {n: {"true": round(true[n], 4), "identified": report["identified"].get(n)}
                           for n in cal.PARAMS},  # fmt: skip
            "joint_offsets_rms_error": offsets_error(profile, report["joint_offsets"]),
            "fit_error_held_out": report["fit_error_rms"]["held_out"], "noise": report["noise"],
            "true_noise": load_reality_gap(profile).noise.__dict__, "evaluations": report["evaluations"],
        }  # fmt: skip
        print_row(profile, rows[profile])
    save(args.name, {"command": " ".join(sys.argv), "settings": vars(args) | {"policy": str(args.policy)},
                     "profiles": rows})  # fmt: skip


def print_row(profile: str, row: dict) -> None:
    print(f"\n{profile}: {row['policy_steps']} policy steps ({row['walking_steps']} walking), collect "
          f"{row['collect_s']} s, calibrate {row['calibrate_s']} s ({row['evaluations']} evaluations)")
    for name, v in row["parameters"].items():
        found = "nominal (not fitted)" if v["identified"] is None else f"{v['identified']:.4g}"
        print(f"  {name:13s} true {v['true']:<8.4g} identified {found}")
    print(f"  joint offsets (RMS): {row['joint_offsets_rms_error']}")
    e = row["fit_error_held_out"]
    print(f"  held-out RMS before -> after: q {e['before']['q']} -> {e['after']['q']} rad, dq {e['before']['dq']} -> "
          f"{e['after']['dq']} rad/s, trunk {e['before']['position']} -> {e['after']['position']} m; loss "
          f"{e['loss_before']} -> {e['loss_after']}")


if __name__ == "__main__":
    main()
