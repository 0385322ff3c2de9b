"""Where our IQL gradient step spends its time, and the fastest it could be in float32 on this machine.

Profiles our eager IQL update (offpolicy_speed's setting: batch 256, 256-256 MLPs, twin Q) and splits its CPU
time into matrix products (aten::mm, addmm, bmm, baddbmm, forward and backward) and everything else. The matrix
products alone bound the step rate from above: with every other operation free, the step cannot beat
`steps / matmul seconds`. The bound is set against 2× d3rlpy's measured rate (benchmarks/results/offpolicy_speed.json)
to show whether the 2× target is reachable with float32 arithmetic, and against the configured update (its losses
through torch.compile, which fuses part of the "everything else").

    python benchmarks/iql_step_profile.py [--steps 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def unprofiled_rate(update, steps: int) -> float:
    import time

    for _ in range(20):  # the compiled update compiles here
        update()
    start = time.perf_counter()
    for _ in range(steps):
        update()
    return steps / (time.perf_counter() - start)


def profile_updates(steps: int) -> dict:
    import torch
    from torch.profiler import profile

    from benchmarks.offpolicy_speed import BATCH, ours_steps

    update = ours_steps("iql", plain=True)["update"]
    rate = unprofiled_rate(update, steps)
    with profile() as prof:
        for _ in range(steps):
            update()
    events = prof.key_averages()
    matmul_us = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    total_us = sum(e.self_cpu_time_total for e in events)
    return {"batch": BATCH, "threads": torch.get_num_threads(), "steps": steps,
            "steps_per_s_unprofiled": rate, "matmul_share_of_cpu_time": matmul_us / total_us,
            "matmul_ms_per_step": matmul_us / 1e3 / steps,
            "steps_per_s_bound_matmuls_only": steps / (matmul_us / 1e6),
            "steps_per_s_compiled": unprofiled_rate(ours_steps("iql")["update"], steps)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as offpolicy_speed's workers run, set before torch loads
        os.environ[name] = str(args.threads)
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks.common import RESULTS, save

    torch.set_num_threads(args.threads)
    result = profile_updates(args.steps)
    speed = json.loads((RESULTS / "offpolicy_speed.json").read_text())["by_threads"].get(str(args.threads))
    if speed:
        d3rlpy_loop = speed["steps_per_s"]["iql"]["d3rlpy"]["loop"]["best"]
        result["twice_d3rlpy_loop_steps_per_s"] = 2 * d3rlpy_loop
    print(f"eager IQL update: {result['steps_per_s_unprofiled']:.1f} steps/s; matrix products "
          f"{result['matmul_ms_per_step']:.2f} ms per step ({result['matmul_share_of_cpu_time']:.0%} of CPU time); "
          f"with everything else free: {result['steps_per_s_bound_matmuls_only']:.1f} steps/s at most; "
          f"compiled (as configured): {result['steps_per_s_compiled']:.1f} steps/s")
    if speed:
        print(f"2x d3rlpy's IQL (sampling + update, offpolicy_speed.json): {result['twice_d3rlpy_loop_steps_per_s']:.1f}"
              " steps/s")
    save("iql_step_profile", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
