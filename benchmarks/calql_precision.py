"""Cal-QL's bfloat16 penalty against float32: speed and what it changes in learning, on the same batches.

Two Cal-QL learners from the same seed train side by side on the same robot logs, batch for batch; only
`penalty_precision` differs (float32, bfloat16: the sampled actions' Q in bfloat16, see uni_o4/baselines/calql.py).
Steps alternate between them, so machine load hits both alike. Printed and saved: steps/s of each, the
learning curves (TD loss, conservative loss, mean Q at the data), and how far apart the two final policies
act (deterministic actions on the dataset's observations). Plot: benchmarks/results/calql_precision.png.

    python benchmarks/calql_precision.py --data data_logs/ [--steps 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("float32", "bfloat16")
CURVES = ("td_loss", "conservative_loss", "q_mean", "entropy")
RECORD_EVERY = 25


def learners(data, seed: int) -> dict:
    from uni_o4.baselines import SafeActionSet
    from uni_o4.registry import load_baseline_config, make_algorithm

    safe_set = SafeActionSet.for_robot("go1")
    return {p: make_algorithm("calql", load_baseline_config("calql", overrides={"seed": seed, "penalty_precision": p}),
                              data, safe_set) for p in PRECISIONS}  # fmt: skip


def train_side_by_side(algos: dict, data, steps: int, seed: int) -> tuple[dict, dict]:
    """(curves[precision][name] every RECORD_EVERY steps, seconds spent in updates per precision)."""
    import torch
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    curves = {p: {name: [] for name in CURVES} for p in algos}
    seconds = dict.fromkeys(algos, 0.0)
    for step in tqdm(range(steps), desc="Cal-QL float32 | bfloat16"):
        batch = data.sample(algos["float32"].cfg.batch_size, generator)
        for precision, algo in algos.items():
            start = time.perf_counter()
            info = algo.update(batch)
            seconds[precision] += time.perf_counter() - start
            if step % RECORD_EVERY == 0:
                for name in CURVES:
                    curves[precision][name].append(info[name])
    return curves, seconds


def action_gap(algos: dict, data) -> dict:
    """Mean |a_bf16 − a_fp32| of the deterministic policies on the dataset's observations, and its ratio to the
    mean |a_fp32| (how far apart the two runs ended, against how large the actions are)."""
    import torch

    with torch.no_grad():
        obs = data.obs[:: max(1, len(data) // 4096)]
        exact, fast = (algos[p].act(obs, deterministic=True) for p in PRECISIONS)
    gap = float((fast - exact).abs().mean())
    return {"mean_abs_gap": gap, "relative_to_mean_abs_action": gap / float(exact.abs().mean())}


def plot(curves: dict, steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, name in zip(axes, CURVES, strict=True):
        for precision in PRECISIONS:
            ax.plot(steps, curves[precision][name], label=precision, alpha=0.8)
        ax.set_title(name)
        ax.set_xlabel("gradient step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="robot log folder(s)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.common import RESULTS, save
    from robot_spec import load_robot
    from uni_o4.methods import baseline_data_config
    from uni_o4.log_dataset import dataset_from_log_folder

    torch.set_num_threads(args.threads)
    data, _ = dataset_from_log_folder(args.data, load_robot("go1"), baseline_data_config(), False, "cpu")
    algos = learners(data, args.seed)
    curves, seconds = train_side_by_side(algos, data, args.steps, args.seed)
    rates = {p: args.steps / seconds[p] for p in PRECISIONS}
    tail = {p: {name: float(np.mean(values[-20:])) for name, values in curves[p].items()} for p in PRECISIONS}
    gap = action_gap(algos, data)
    for p in PRECISIONS:
        print(f"{p:9s} {rates[p]:6.1f} steps/s   last 500 steps: "
              + "  ".join(f"{name} {value:.4f}" for name, value in tail[p].items()))  # fmt: skip
    print(f"bfloat16 speed-up {rates['bfloat16'] / rates['float32']:.2f}x; final policies' actions differ by "
          f"{gap['mean_abs_gap']:.4f} ({gap['relative_to_mean_abs_action']:.1%} of the mean |action|)")
    steps = list(range(0, args.steps, RECORD_EVERY))
    plot(curves, steps, RESULTS / "calql_precision.png")
    save("calql_precision", {
        "setting": {"data": [str(d) for d in args.data], "transitions": len(data), "steps": args.steps,
                    "seed": args.seed, "threads": args.threads},
        "steps_per_s": rates, "last_500_steps_mean": tail, "final_action_gap": gap,
        "curves": {"steps": steps, **curves},
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
