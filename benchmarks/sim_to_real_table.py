"""The sim-to-real table on the stand-in for every method: sim policy, after offline, after online.

Runs `uni_o4 pipeline` for each method and seed (the first run of a seed collects the logs and evaluates the sim
policy; the other methods reuse both, so every method sees the same data and baseline), then saves mean and
spread over seeds per method and stage, and a plot. A finished pipeline folder is reused, so the script resumes.

    python benchmarks/sim_to_real_table.py --policy /path/to/policy.pt --methods uni_o4 iql o3f calql --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from uni_o4.cli import main as uni_o4  # noqa: E402
from uni_o4.registry import ALGOS  # noqa: E402

METRICS = ("mean_return", "reward_per_step", "tracking_error_xy", "fall_rate", "trip_rate")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, help="sim-pretrained policy (default: each pipeline pretrains)")
    p.add_argument("--methods", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--profile", default="strong")
    p.add_argument("--collect-steps", type=int, default=20000)
    p.add_argument("--eval-episodes", type=int, default=6, help="stand-in episodes per evaluation")
    p.add_argument("--online-preset", default="online_quick", help="configs/finetune/ preset of the online stage")
    p.add_argument("--root", type=Path, default=Path("runs/sim_to_real"))
    p.add_argument("--name", default="sim_to_real_table", help="results file name under benchmarks/results/")
    args = p.parse_args()

    runs: dict[str, list[list[dict]]] = {m: [] for m in args.methods}
    curves: dict[str, list[list[dict]]] = {m: [] for m in args.methods}  # online_history.json per seed
    for seed in args.seeds:
        data = first = None
        for method in args.methods:
            out = args.root / f"{method}_seed{seed}"
            argv = ["pipeline", "--algo", method, "--profile", args.profile, "--out", str(out), "--seed", str(seed),
                    "--collect-steps", str(args.collect_steps), "--eval-episodes", str(args.eval_episodes),
                    "--online-preset", args.online_preset]  # fmt: skip
            argv += ["--policy", str(args.policy)] if args.policy else []
            argv += ["--data", str(data)] if data else []
            if first is not None:
                reuse_sim_policy_rows(first, out)
            if uni_o4(argv) != 0:
                raise SystemExit(f"pipeline failed: {' '.join(argv)}")
            data, first = data or out / "data_logs", first or out
            runs[method].append(json.loads((out / "pipeline.json").read_text()))
            history = out / "online" / "online_history.json"
            curves[method].append(json.loads(history.read_text()) if history.is_file() else [])
    table = summarise(runs)
    for method, stages in table.items():
        for stage, row in stages.items():
            cells = ", ".join(f"{k} {row[k]['mean']:.4g}±{row[k]['std']:.2g}" for k in METRICS)
            print(f"{method:7s} {stage:20s} (n={row['seeds']}) {cells}")
    path = save(args.name, {"setting": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                       "table": table})
    plot(table, path.with_suffix(".png"))
    curve_path = path.with_name(f"{args.name}_learning_curve.png")
    plot_learning_curves(curves, curve_path)
    print(f"saved {path}, {path.with_suffix('.png')} and {curve_path}")


SIM_POLICY_ROWS = ("sim_policy_no_gap", "sim_policy")  # the pipeline's eval folders of its first two rows


def reuse_sim_policy_rows(source: Path, out: Path) -> None:
    """The sim policy's evaluations do not depend on the method: copy them (the pipeline skips what exists)."""
    for name in SIM_POLICY_ROWS:
        if (source / "eval" / name / "metrics.json").is_file() and not (out / "eval" / name).exists():
            shutil.copytree(source / "eval" / name, out / "eval" / name)


def summarise(runs: dict[str, list[list[dict]]]) -> dict:
    """method → stage → metric → mean and std over seeds."""
    table: dict = {}
    for method, seeds in runs.items():
        stages: dict[str, list[dict]] = {}
        for rows in seeds:
            for row in rows:
                stages.setdefault(f"{row['stage']} ({row['profile']})", []).append(row)
        table[method] = {
            stage: {"seeds": len(rows), **{k: {"mean": float(np.mean([r[k] for r in rows])),
                                               "std": float(np.std([r[k] for r in rows]))} for k in METRICS}}
            for stage, rows in stages.items()
        }  # fmt: skip
    return table


def plot(table: dict, path: Path) -> None:
    """Bars per stage (every stage any method reached), one colour per method, spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(stage for rows in table.values() for stage in rows))
    width = 0.8 / max(len(table), 1)
    panels = (("mean_return", "episode return"), ("reward_per_step", "reward per step"),
              ("tracking_error_xy", "tracking error (m/s)"), ("fall_rate", "falls per episode"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4))
    for ax, (key, label) in zip(axes, panels):
        for i, (method, rows) in enumerate(table.items()):
            reached = [k for k, stage in enumerate(stages) if stage in rows]
            ax.bar(np.array(reached) + width * i, [rows[stages[k]][key]["mean"] for k in reached], width,
                   yerr=[rows[stages[k]][key]["std"] for k in reached], label=method, capsize=2)  # fmt: skip
        ax.set_xticks(np.arange(len(stages)) + 0.4 - width / 2, stages, fontsize=6, rotation=15)
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(curves: dict[str, list[list[dict]]], path: Path) -> None:
    """Online rollouts' reward per step and falls against real steps, one line per method and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (method, seeds) in enumerate(curves.items()):
        for j, history in enumerate(seeds):
            if not history:
                continue
            steps = np.cumsum([h["policy_steps"] for h in history])
            label = method if j == 0 else None
            for ax, key in zip(axes, ("reward_per_step", "fall_rate")):
                ax.plot(steps, [h[key] for h in history], marker="o", color=f"C{i}", alpha=0.7, label=label)
    for ax, title in zip(axes, ("online rollouts: reward per step", "online rollouts: falls per episode")):
        ax.set(xlabel="real steps (cumulative)", title=title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
