"""Off-policy baseline speed: gradient steps/s of our IQL and Cal-QL against d3rlpy's IQL and CalQL.

Same synthetic data on both sides (48-d observations, 12-d actions, 100 episodes × 1000 steps, a few true
terminals), batch 256, the same network sizes (every MLP 256-256, twin Q, Cal-QL with 10 action samples per
group and max target backup), the same torch thread count. Ours runs twice: as configured (configs/finetune:
IQL's losses through torch.compile, Cal-QL's sampled actions' Q in bfloat16 where the CPU has it) and plain
(IQL eager, Cal-QL all in float32: what d3rlpy does on a CPU, where its compile_graph is off). Two figures
per algorithm:
- loop:    sample a batch from the dataset + one update (what a training loop pays per step);
- update:  one update on an already prepared batch (the learning computation alone).
Each measurement runs in a fresh subprocess: d3rlpy in its own venv (it is not a project dependency), ours
in this one. Rounds alternate between the two sides and the best round counts, so load from other
processes hurts both alike.

    python benchmarks/offpolicy_speed.py [--steps 50] [--rounds 3] [--threads 2 1] [--bench-python PATH]

d3rlpy's venv:  python -m venv /work/bench-venv && /work/bench-venv/bin/pip install torch==2.13.0 d3rlpy
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OBS_DIM, ACTION_DIM, BATCH, HIDDEN = 48, 12, 256, [256, 256]
EPISODES, EPISODE_LENGTH = 100, 1000
ALGORITHMS = ("iql", "calql")
PLAIN_SIDE = "ours_plain"  # ours without its speed-ups
PLAIN_OVERRIDES = {"iql": {"compile": False}, "calql": {"penalty_precision": "float32"}}
CHUNK = 5  # steps timed together
DEFAULT_BENCH_PYTHON = "/work/bench-venv/bin/python"


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The shared data (numpy only: both venvs can build it). Every 10th episode ends in a true terminal."""
    rng = np.random.default_rng(seed)
    n = EPISODES * EPISODE_LENGTH
    obs = rng.normal(size=(n + EPISODES, OBS_DIM)).astype(np.float32)  # one extra final observation per episode
    keep = np.ones(n + EPISODES, dtype=bool)
    keep[EPISODE_LENGTH :: EPISODE_LENGTH + 1] = False  # the final observations are only ever next_obs
    index = np.flatnonzero(keep)
    ends = np.zeros(n, dtype=bool)
    ends[EPISODE_LENGTH - 1 :: EPISODE_LENGTH] = True
    terminals = ends & (np.arange(n) // EPISODE_LENGTH % 10 == 9)
    return {
        "obs": obs[index], "next_obs": obs[index + 1],
        "actions": rng.uniform(-1.0, 1.0, size=(n, ACTION_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32), "terminals": terminals, "timeouts": ends & ~terminals,
    }  # fmt: skip


def rate(step: Callable[[], object], n: int, warmup: int = 5) -> dict[str, float]:
    """Steps/s over chunks of CHUNK steps: the best chunk (the machine's speed when other load lets go,
    as timeit's min) and the median chunk (what a long run on a shared machine gets)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(max(1, n // CHUNK)):
        start = time.perf_counter()
        for _ in range(CHUNK):
            step()
        rates.append(CHUNK / (time.perf_counter() - start))
    return {"best": max(rates), "median": float(np.median(rates))}


# --------------------------------------------------------------------------------------------- ours
def ours_steps(algorithm: str, plain: bool = False) -> dict[str, Callable[[], object]]:
    import torch

    sys.path.insert(0, str(REPO))
    from uni_o4.baselines import SafeActionSet
    from uni_o4.registry import load_baseline_config, make_algorithm
    from uni_o4.dataset import OfflineDataset

    arrays = synthetic_arrays()
    data = OfflineDataset.from_arrays(**arrays, discount=0.99)
    sizes = {"actor_hidden_dims": HIDDEN, "critic_hidden_dims": HIDDEN, "batch_size": BATCH, "num_q": 2}
    if algorithm == "calql":
        sizes |= {"num_action_samples": 10, "max_target_backup": True}
    if plain:
        sizes |= PLAIN_OVERRIDES[algorithm]
    cfg = load_baseline_config(algorithm, overrides=sizes)
    algo = make_algorithm(algorithm, cfg, data, SafeActionSet.for_robot("go1"))
    generator = torch.Generator().manual_seed(0)
    batch = data.sample(BATCH, generator)
    return {
        "loop": lambda: algo.update(data.sample(BATCH, generator)),
        "update": lambda: algo.update(batch),
    }


# --------------------------------------------------------------------------------------------- d3rlpy
def d3rlpy_steps(algorithm: str) -> dict[str, Callable[[], object]]:
    import d3rlpy
    from d3rlpy.torch_utility import TorchMiniBatch

    arrays = synthetic_arrays()
    dataset = d3rlpy.dataset.MDPDataset(
        arrays["obs"], arrays["actions"], arrays["rewards"], arrays["terminals"], arrays["timeouts"]
    )
    common = {"batch_size": BATCH, "gamma": 0.99, "tau": 0.005, "n_critics": 2}
    if algorithm == "iql":
        config = d3rlpy.algos.IQLConfig(
            **common, actor_learning_rate=3e-4, critic_learning_rate=3e-4, expectile=0.7, weight_temp=3.0,
            max_weight=100.0,
        )  # fmt: skip
    else:
        config = d3rlpy.algos.CalQLConfig(
            **common, actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
            alpha_learning_rate=0.0, conservative_weight=5.0, n_action_samples=10, max_q_backup=True,
        )  # fmt: skip
    algo = config.create(device="cpu:0")
    algo.build_with_dataset(dataset)
    batch = dataset.sample_transition_batch(BATCH)
    torch_batch = TorchMiniBatch.from_batch(
        batch, gamma=0.99, compute_returns_to_go=algo.need_returns_to_go, device="cpu:0"
    )
    grad_step = iter(range(10**9))
    return {
        "loop": lambda: algo.update(dataset.sample_transition_batch(BATCH)),
        "update": lambda: algo.impl.update(torch_batch, next(grad_step)),
    }


def measure(side: str, algorithm: str, steps: int, threads: int) -> dict[str, dict[str, float]]:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if side == "d3rlpy":
        steps_fns = d3rlpy_steps(algorithm)
    else:
        steps_fns = ours_steps(algorithm, plain=side == PLAIN_SIDE)
    return {kind: rate(fn, steps) for kind, fn in steps_fns.items()}


def run_worker(python: str, side: str, algorithm: str, steps: int, threads: int) -> dict[str, dict[str, float]]:
    """One side in a fresh process (both sides alike), with its thread count fixed from the start."""
    cmd = [python, __file__, "--worker", side, "--algorithm", algorithm, "--steps", str(steps),
           "--threads", str(threads)]  # fmt: skip
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(bench_python: str, algorithms: list[str], steps: int, rounds: int, threads: int) -> dict:
    """best[algorithm][side][kind][statistic] over alternating rounds, and our speed-up per algorithm and kind."""
    from tqdm import tqdm

    best: dict[str, dict] = {}
    jobs = [(a, r) for a in algorithms for r in range(rounds)]
    for algorithm, _ in tqdm(jobs, desc=f"{threads} thread(s)"):
        sides = [("ours", sys.executable), (PLAIN_SIDE, sys.executable), ("d3rlpy", bench_python)]
        for side, python in sides:
            for kind, stats in run_worker(python, side, algorithm, steps, threads).items():
                slot = best.setdefault(algorithm, {}).setdefault(side, {}).setdefault(kind, {})
                for stat, value in stats.items():
                    slot[stat] = max(slot.get(stat, 0.0), value)
    speedup = {}
    for algorithm, sides in best.items():
        for side in (s for s in sides if s != "d3rlpy"):
            for kind, ours in sides[side].items():
                theirs = sides["d3rlpy"][kind]
                ratio = {stat: ours[stat] / theirs[stat] for stat in ours}
                speedup[f"{algorithm}_{kind}" + ("" if side == "ours" else f"_{side}")] = ratio
                print(f"{threads} thread(s) {algorithm:6s} {kind:6s} {side:12s} {ours['best']:6.1f} steps/s "
                      f"(median {ours['median']:6.1f})   d3rlpy {theirs['best']:6.1f} "
                      f"(median {theirs['median']:6.1f})   {ratio['best']:4.2f}x (median {ratio['median']:4.2f}x)")
    return {"steps_per_s": best, "speedup": speedup}


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help=f"timed gradient steps per measurement ({CHUNK} a chunk)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per algorithm; the best counts")
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch thread counts (both sides)")
    parser.add_argument("--bench-python", default=DEFAULT_BENCH_PYTHON, help="python of the venv holding d3rlpy")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--worker", choices=("ours", PLAIN_SIDE, "d3rlpy"), help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", choices=ALGORITHMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < CHUNK or args.rounds < 1 or min(args.threads) < 1:
        parser.error(f"--steps must be ≥ {CHUNK}, --rounds and --threads ≥ 1")
    if args.worker:  # one side, one algorithm; JSON on the last stdout line
        print(json.dumps(measure(args.worker, args.algorithm, args.steps, args.threads[0])))
        return 0
    if not Path(args.bench_python).is_file():
        parser.error(f"--bench-python {args.bench_python} not found; create d3rlpy's venv first (see --help)")

    results = {str(t): compare(args.bench_python, args.algorithms, args.steps, args.rounds, t) for t in args.threads}
    sys.path.insert(0, str(REPO))
    from benchmarks.common import save

    d3rlpy_version = subprocess.run([args.bench_python, "-c", "import d3rlpy; print(d3rlpy.__version__)"],
                                    capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    setting = {"obs_dim": OBS_DIM, "action_dim": ACTION_DIM, "batch_size": BATCH, "hidden_dims": HIDDEN,
               "transitions": EPISODES * EPISODE_LENGTH, "episode_length": EPISODE_LENGTH, "steps": args.steps,
               "rounds": args.rounds, "chunk": CHUNK, "d3rlpy_version": d3rlpy_version}  # fmt: skip
    save("offpolicy_speed", {"setting": setting, "by_threads": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
