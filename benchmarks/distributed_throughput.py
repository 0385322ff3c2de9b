"""Pretraining throughput in one process against torchrun's processes on this machine: env-steps/s of `sim_pretrain
train` (collection + PPO update) with the same total environments, 1 process x 2 threads against 2 processes x 1
thread (torchrun, gloo on loopback; each rank steps half the environments with one physics and one torch thread).

Read from rank 0's TensorBoard scalars (rsl_rl's Perf/total_fps counts every rank's steps; Perf/collection_time is
the rollout alone), iterations after the first `--warmup` ones; the runs alternate and the best of `--repeats` is
kept (other processes on the machine only ever slow a measurement down). The 2-core machine here is shared: run it
under nice and read the figures as measured on a busy machine.

    nice -n 19 python benchmarks/distributed_throughput.py [--envs 512] [--iterations 6] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import save  # noqa: E402
from robot_spec.config import load_config, named_config  # noqa: E402
from sim_pretrain.train_config import TrainConfig  # noqa: E402

PRESET = "quick"
MODES = {"1 process x 2 threads": 1, "2 processes x 1 thread": 2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(processes: int, envs: int, iterations: int, runs: Path) -> Path:
    """One `sim_pretrain train` on the quick preset with 2 physics and 2 torch threads in all (shared by the ranks)."""
    train = ["train", "--preset", PRESET, "--num-envs", str(envs), "--iterations", str(iterations), "--runs", str(runs),
             "--set", "env.num_threads=2", "torch_threads=2"]  # fmt: skip
    launcher = ["-m", "sim_pretrain.cli"] if processes == 1 else [
        "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "sim_pretrain.cli"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *launcher, *train], env=env, check=True, capture_output=True, timeout=900)
    (run_dir,) = (runs / "go1").iterdir()
    return run_dir


def rates(run_dir: Path, warmup: int, steps_per_iteration: int) -> dict:
    """Mean env-steps/s over the iterations after the warm-up: whole iterations, and the rollouts alone."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    fps = [e.value for e in events.Scalars("Perf/total_fps") if e.step >= warmup]
    collect = [e.value for e in events.Scalars("Perf/collection_time") if e.step >= warmup]
    return {"iterations_timed": len(fps), "env_steps_per_s": sum(fps) / len(fps),
            "collection_env_steps_per_s": steps_per_iteration * len(collect) / sum(collect)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=512, help="environments in all (default: 512)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first iterations left out of the timing")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    steps_per_env = load_config(TrainConfig, named_config("train", f"go1_{PRESET}")).ppo.num_steps_per_env
    best: dict[str, dict] = {}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode, processes in MODES.items():
                load = os.getloadavg()[0]  # how busy the machine was as this run began
                run_dir = run(processes, args.envs, args.iterations, Path(tmp) / f"{processes}_{repeat}")
                measured = rates(run_dir, args.warmup, steps_per_env * args.envs)
                runs.append({"mode": mode, "repeat": repeat, "load_avg_1min_before": load, **measured})
                print(f"{mode}: {measured['env_steps_per_s']:7.0f} env-steps/s training, "
                      f"{measured['collection_env_steps_per_s']:7.0f} collecting (repeat {repeat}, load {load:.1f})")
                if mode not in best or measured["env_steps_per_s"] > best[mode]["env_steps_per_s"]:
                    best[mode] = measured
    one, two = (best[mode]["env_steps_per_s"] for mode in MODES)
    print(f"2 processes / 1 process: {two / one:.2f}x (best of {args.repeats}, {args.envs} environments)")
    save("distributed_throughput", {
        "note": "measured on a busy machine (the lead's experiments on both cores, this run under nice -n 19); "
                "to be re-measured on an idle one",
        "command": " ".join(["nice -n 19 python benchmarks/distributed_throughput.py", *sys.argv[1:]]),
        "preset": PRESET, "num_envs": args.envs, "iterations": args.iterations, "warmup": args.warmup,
        "repeats": args.repeats, "best": best, "speedup_2_processes": two / one, "runs": runs,
    })  # fmt: skip


if __name__ == "__main__":
    main()
