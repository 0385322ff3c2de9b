"""How well the calibration's loss tells robots apart: the replay loss of the true figures and of calibrated ones
on the same windows of one log, per error group.

If two calibrations far apart (say 1.8 and 3.4 kg of payload) reach the same loss, the logs cannot tell them apart;
if the true figures fit worse than a calibration, the replay misses something of the robot that the fit absorbs.

    python benchmarks/calibration_landscape.py --logs runs/logs --profile strong \
        --reports calib_a_report.json calib_b_report.json --windows 512 --horizon 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot import calibrate as cal  # noqa: E402
from robot_spec.reality_gap import load_reality_gap  # noqa: E402
from robot_spec.spec import load_robot  # noqa: E402


def true_values(profile: str) -> dict[str, float]:
    """A profile's figures in the calibration's terms (realised gains as products with strength)."""
    p = load_reality_gap(profile)
    return {"friction": p.friction, "added_mass": p.added_mass, "latency": p.actuator_latency_s,
            "strength": 1.0, "kp": p.motor_strength * p.kp_factor, "kd": p.motor_strength * p.kd_factor,
            "frictionloss": p.joint_frictionloss_factor, "damping": p.joint_damping_factor}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logs", type=Path, required=True)
    p.add_argument("--profile", required=True, help="the stand-in profile the logs came from (the truth)")
    p.add_argument("--reports", type=Path, nargs="*", default=[], help="real_robot calibrate reports to compare")
    p.add_argument("--windows", type=int, default=512)
    p.add_argument("--horizon", type=int, default=5, help="policy steps per window")
    p.add_argument("--seed", type=int, default=7, help="window draw (other than the calibrations' own)")
    p.add_argument("--name", default="calibration_landscape")
    args = p.parse_args()

    spec = load_robot("go1")
    windows = cal.make_windows(cal.load_logs([args.logs], spec), args.horizon, args.windows, args.seed)
    base = cal.nominal_base("strong", "landscape")
    candidates = {"truth": true_values(args.profile), "nominal": {}}
    candidates |= {str(r): json.loads(r.read_text())["identified"] for r in args.reports}
    rows = {}
    for name, values in candidates.items():
        err = cal.errors(cal.replay(spec, cal.candidate_profile(base, values), windows), windows.observed)
        groups = {k: round(float(np.mean((err[k] / s) ** 2)), 4) for k, s in cal.ERROR_SCALES.items()}
        rows[name] = {"loss": round(cal.loss(err), 4), "groups": groups, "values": values}
        print(f"{name:40.40s} loss {rows[name]['loss']:8.4f}  " + " ".join(f"{k} {v:.3f}" for k, v in groups.items()))
    save(args.name, {"setting": {k: str(v) for k, v in vars(args).items()}, "results": rows})


if __name__ == "__main__":
    main()
