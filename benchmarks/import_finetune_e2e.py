"""An imported Isaac Gym policy fine-tuned end to end: legged_gym export → `sim_pretrain import` → logs collected
with the import on the stand-in → `uni_o4 finetune --offline --init <import>` → the fine-tuned policy evaluated.

The legged_gym-format file is our sim policy written the way legged_gym's export_policy_as_jit writes one
(benchmarks/isaac_import_roundtrip.py: policy_1.pt on legged_gym's 48 observations), imported with
configs/import/legged_gym_a1_flat.yaml and `--map base_lin_vel=zero`. Reported: how far fine-tuning moved the
imported network's own weights, the gate's simulator figures, and stand-in figures of the import and of what the
gate deployed, on the same episodes.

    python benchmarks/import_finetune_e2e.py --policy policy.pt [--profile strong] [--collect-steps 3000] \
        [--preset uni_o4_tiny] [--episodes 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from benchmarks.isaac_import_roundtrip import as_legged_gym_export, ended_by  # noqa: E402
from real_robot import loopback  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402
from sim_pretrain import cli as sim_cli  # noqa: E402
from uni_o4 import cli as uni_o4_cli  # noqa: E402
from uni_o4.log_dataset import log_folders  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, collect_on_stand_in, evaluate_on_stand_in  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "import" / "legged_gym_a1_flat.yaml"


def weight_change(before, after) -> float:
    """‖after − before‖ / ‖before‖ over every parameter and buffer of the two actors (same layers)."""
    a, b = before.state_dict(), after.state_dict()
    assert a.keys() == b.keys(), "fine-tuning changed the network's layers"
    change = sum(float((b[k] - a[k]).norm()) ** 2 for k in a) ** 0.5
    return change / sum(float(a[k].norm()) ** 2 for k in a) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="our sim policy, exported the legged_gym way")
    parser.add_argument("--profile", default="strong", help="the stand-in robot the logs come from")
    parser.add_argument("--collect-steps", type=int, default=3000)
    parser.add_argument("--action-noise", type=float, default=0.15)
    parser.add_argument("--preset", default="uni_o4_tiny", help="configs/finetune/<preset>.yaml")
    parser.add_argument("--logs", type=Path, help="logs already collected with this import (skips collecting)")
    parser.add_argument("--episodes", type=int, default=3, help="stand-in evaluation episodes per policy (0: none)")
    parser.add_argument("--startup-timeout-s", type=float, default=30.0,
                        help="how long the stand-in may take to start (longer on a loaded machine at nice 19)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "import_finetune_e2e")
    args = parser.parse_args()
    loopback.LoopbackRobot = functools.partial(loopback.LoopbackRobot, startup_timeout_s=args.startup_timeout_s)
    spec = load_robot("go1")
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    export = as_legged_gym_export(load_policy(args.policy, spec).actor, root / "policy_1.pt")
    imported = root / "imported" / "policy.pt"
    assert sim_cli.main(["import", "--from", "legged_gym", "--policy", str(export), "--config", str(CONFIG),
                         "--map", "base_lin_vel=zero", "--out", str(imported)]) == 0  # fmt: skip
    logs = args.logs or root / "logs"
    if not args.logs:
        collect_on_stand_in(imported, args.profile, logs, steps=args.collect_steps, action_noise=args.action_noise)
    out = root / "finetune"
    assert uni_o4_cli.main(["finetune", "--offline", str(logs), "--init", str(imported), "--preset", args.preset,
                            "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    candidate = out / "candidate" / "policy.pt"
    result: dict = {
        "policy": str(args.policy), "logs": str(logs), "profile": args.profile, "preset": args.preset,
        "collected": None if args.logs else {"steps": args.collect_steps, "action_noise": args.action_noise},
        "logs_ended_by": {str(folder): ended_by(folder) for folder in log_folders(logs)},
        "dataset": {k: report["data"][k] for k in ("transitions", "episodes", "terminals", "outcomes")},
        "candidate_weight_change": weight_change(load_policy(imported, spec).actor, load_policy(candidate, spec).actor),
        "gate": report["gate"], "gate_sim": {k: report["sim_eval"][k] for k in
                                             ("fall_rate", "mean_tracking_error", "mean_return")},
    }  # fmt: skip
    print(f"candidate moved {result['candidate_weight_change']:.4f} of the import's weight norm; "
          f"gate: {result['gate']}", flush=True)
    cfg = RobotEvalConfig(episodes=args.episodes)
    for name, path in (("imported", imported), ("deployed", out / "deploy" / "policy.pt")) if args.episodes else ():
        m = evaluate_on_stand_in(path, args.profile, root / f"eval_{name}", spec, cfg)
        result[f"stand_in_{name}"] = {k: m[k] for k in (
            "mean_return", "tracking_error_xy", "fall_rate", "trip_rate", "policy_steps")}  # fmt: skip
        result[f"stand_in_{name}"]["ended_by"] = ended_by(root / f"eval_{name}")
        print(f"stand-in {args.profile} {name}: {result[f'stand_in_{name}']}", flush=True)
    save("import_finetune_e2e", result)


if __name__ == "__main__":
    main()
