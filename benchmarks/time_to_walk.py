"""Time to walk: wall-clock of the default preset until the policy tracks forward commands.

"Walks" = on configs/eval/forward.yaml (vx in [0, 1] m/s, randomised dynamics, 20 s episodes) the mean
velocity-tracking error is < 0.25 m/s and no episode falls. Every saved checkpoint of a run is evaluated; the
training wall-clock at that iteration comes from the run's training_history.json (evaluation time excluded).
Target: ≤ 30 minutes on 2 CPU cores.

    python benchmarks/time_to_walk.py                 # trains the quick preset first (sim_pretrain train)
    python benchmarks/time_to_walk.py --run runs/go1/<run>
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.config import load_config, named_config  # noqa: E402
from robot_spec.policy_io import LoadedPolicy  # noqa: E402
from sim_pretrain.evaluate import EvalConfig, evaluate_policy  # noqa: E402
from sim_pretrain.train import actor_from_checkpoint, new_run_dir, train  # noqa: E402
from sim_pretrain.train_config import TrainConfig, load_train_config  # noqa: E402

MAX_ERROR = 0.25


def evaluate_checkpoints(run: Path) -> list[dict]:
    cfg = load_config(TrainConfig, run / "config.yaml")
    spec = load_robot(cfg.env.robot)
    history = json.loads((run / "training_history.json").read_text())
    wall = dict(zip(history["iteration"], history["wall_s"]))
    rows = []
    for ckpt in sorted(run.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1])):
        it = int(ckpt.stem.split("_")[1])
        policy = LoadedPolicy(actor_from_checkpoint(ckpt, cfg), spec.policy_contract(), ckpt.stem, ckpt)
        eval_cfg = load_config(EvalConfig, named_config("eval", "forward"))
        m = evaluate_policy(policy, eval_cfg, progress=False)
        walks = m["fall_rate"] == 0.0 and m["mean_tracking_error"] < MAX_ERROR
        rows.append({"iteration": it, "train_wall_s": wall.get(it), "fall_rate": m["fall_rate"],
                     "tracking_error": m["mean_tracking_error"], "walks": walks})
        print(f"it {it:5d}  train {rows[-1]['train_wall_s'] or 0:7.0f} s  falls {m['fall_rate']:.3f}  "
              f"error {m['mean_tracking_error']:.3f} m/s  {'WALKS' if walks else ''}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="an existing run folder (default: train the quick preset now)")
    args = parser.parse_args()
    run = args.run
    if run is None:
        run = new_run_dir(Path("runs") / "time_to_walk", "go1", "quick")
        train(load_train_config("go1", "quick"), run)
    rows = evaluate_checkpoints(run)
    first = next((r for r in rows if r["walks"]), None)
    if first:
        print(f"walks after {first['train_wall_s'] / 60:.1f} min of training (iteration {first['iteration']})")
    else:
        print("did not reach the walking criterion within the run")
    save("time_to_walk", {"run": str(run), "criterion": {"max_tracking_error": MAX_ERROR, "max_fall_rate": 0.0},
                          "minutes_to_walk": first["train_wall_s"] / 60 if first else None, "checkpoints": rows})


if __name__ == "__main__":
    main()
