"""How long the stand-in robot and the SDK bridge take to start: every evaluation, robot check and collection
starts them (as subprocesses on loopback), so this is paid per stage of the pipeline and per test that uses them.

    python benchmarks/stand_in_start.py [--profile strong] [--starts 5]

Reported: seconds from launch until the first joint state arrives over LCM (`LoopbackRobot.start`), and until
both processes have stopped again, per start; and whether the stand-in's process imported torch (it needs none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot.loopback import LoopbackRobot  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="strong")
    p.add_argument("--starts", type=int, default=5)
    args = p.parse_args()
    if args.starts < 1:
        p.error(f"--starts must be at least 1, got {args.starts}")
    starts, totals = [], []
    for _ in range(args.starts):
        began = time.perf_counter()
        with LoopbackRobot(profile=args.profile):
            starts.append(time.perf_counter() - began)
        totals.append(time.perf_counter() - began)
    probe = "import sys, real_robot.sim_robot, real_robot.bridge; print('torch' in sys.modules)"
    torch_loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    result = {"start_s": starts, "start_and_stop_s": totals, "median_start_s": statistics.median(starts),
              "stand_in_imports_torch": torch_loaded == "True"}  # fmt: skip
    print(f"stand-in + bridge ({args.profile}): start {statistics.median(starts):.2f} s median "
          f"(max {max(starts):.2f}), start + stop {statistics.median(totals):.2f} s; imports torch: {torch_loaded}")
    save("stand_in_start", {"setting": vars(args), **result})


if __name__ == "__main__":
    main()
