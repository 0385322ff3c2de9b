"""Continue a pretraining run with wider randomisation: rough ground, the trunk's centre of mass moved, a wider
payload range, encoder backlash, and episodes that begin where deploy's soft start hands over (stand-up starts).
A new run folder (the old one is left as it was); then compare policies across profiles with
benchmarks/profile_sweep.py.

    python benchmarks/robust_pretrain.py --start runs/go1/<run> --iterations 300 --terrain 0.03 0.05 \
        --com 0.05 --added-mass -1 3 --out runs/go1/robust
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from robot_spec.config import load_config  # noqa: E402
from sim_pretrain.env_config import StandUpConfig, TerrainConfig  # noqa: E402
from sim_pretrain.train import latest_checkpoint, train  # noqa: E402
from sim_pretrain.train_config import TrainConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", type=Path, required=True, help="a pretraining run folder (its latest checkpoint)")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--terrain", type=float, nargs=2, metavar=("STEP_M", "SLOPE"),
                   help="rough ground (default: the run's)")
    p.add_argument("--com", type=float, help="trunk centre-of-mass displacement, m each axis (default: the run's)")
    p.add_argument("--added-mass", type=float, nargs=2, metavar=("LOW", "HIGH"), help="kg (default: the run's)")
    p.add_argument("--backlash", type=float, help="encoder dead zone up to this width, rad (default: the run's)")
    p.add_argument("--stand-up", type=float, help="share of episodes from a simulated stand-up (default: the run's)")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--physics-threads", type=int, help="mujoco.rollout threads (default: the run's)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if not (args.start / "config.yaml").is_file():
        p.error(f"--start {args.start}: not a pretraining run folder (no config.yaml there)")
    base = load_config(TrainConfig, args.start / "config.yaml")
    rand, env = base.env.randomization, base.env
    if args.com is not None:
        rand = dataclasses.replace(rand, com_displacement=args.com)
    if args.backlash is not None:
        rand = dataclasses.replace(rand, backlash=args.backlash)
    if args.added_mass is not None:
        rand = dataclasses.replace(rand, added_mass=list(args.added_mass))
    env = dataclasses.replace(env, randomization=rand)
    if args.physics_threads is not None:
        env = dataclasses.replace(env, num_threads=args.physics_threads)
    if args.terrain is not None:
        env = dataclasses.replace(env, terrain=TerrainConfig(step_height=args.terrain[0], slope=args.terrain[1]))
    if args.stand_up is not None:
        env = dataclasses.replace(env, stand_up=StandUpConfig(share=args.stand_up))
    cfg = dataclasses.replace(base, iterations=args.iterations, env=env, torch_threads=args.torch_threads)
    print(train(cfg, args.out, "cpu", init=latest_checkpoint(args.start)))


if __name__ == "__main__":
    main()
