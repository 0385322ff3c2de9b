"""A real published Isaac Gym checkpoint through `sim_pretrain import`: does it walk on our Go1, in our simulator
and on the stand-in, and if not, why?

The file is unitree_rl_gym's pretrained Go2 policy (`deploy/pre_train/go2/motion.pt`, an export_policy_as_jit
TorchScript MLP 48 → 512 → 256 → 128 → 12, ELU) with its MuJoCo deploy YAML (`deploy/deploy_mujoco/configs/go2.yaml`),
as published in unitreerobotics/unitree_rl_gym pull request 62 (commit a1a6e8db..., see README "Coming from Isaac
Gym"). Its observation starts with base linear velocity, which a Go1 cannot measure: it is imported with
`--map base_lin_vel=command` (and `=zero`). Reported, on the same episodes:
- our simulator (sim_pretrain.evaluate): the imports, the network fed the simulator's TRUE base velocity (a
  diagnostic, not deployable: it separates the missing velocity from model differences), the same with Go2's
  extra 2.3 kg on the trunk, and optionally a reference policy (ours);
- the stand-in over the real protocol (uni_o4.robot_eval.evaluate_on_stand_in) for the deployable import.

    python benchmarks/import_real_checkpoint.py --policy motion.pt --config go2.yaml \
        [--sha256 HEX] [--reference policy.pt] [--profiles none strong] [--episodes 3] [--parts sim stand_in]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, save  # noqa: E402
from benchmarks.isaac_import_roundtrip import ended_by  # noqa: E402
from real_robot import loopback  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402
from sim_pretrain import evaluate  # noqa: E402
from sim_pretrain.evaluate import EvalConfig, evaluate_policy  # noqa: E402
from sim_pretrain.isaac_import import import_policy  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluate_on_stand_in  # noqa: E402

SIM = dict(commands=[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.8]], envs_per_command=4, episode_s=10.0)
GO2_EXTRA_TRUNK_KG = 2.3  # Go2's URDF (15.02 kg) over our Go1 (12.74 kg); most of it is the trunk's


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_source_observation(obs: torch.Tensor, lin_vel: torch.Tensor) -> torch.Tensor:
    """Ours (gravity, gyro·0.25, cmd·(2, 2, 0.25), joint_pos, joint_vel·0.05, last_action; its joint order and
    default pose are the Go2 task's) → unitree_rl_gym's 48 (lin_vel·2, ang_vel·0.25, gravity, the rest)."""
    return torch.cat([lin_vel * 2.0, obs[:, 3:6], obs[:, 0:3], obs[:, 6:]], dim=1)


class TrueVelocity:
    """Diagnostic only: the source network fed the simulator's true body-frame base velocity."""

    def __init__(self, network: torch.jit.ScriptModule, imported):
        self.network, self.imported, self.env = network, imported, None
        self.contract, self.policy_id, self.path = imported.contract, "true_lin_vel", "true_lin_vel"

    def actor(self, obs: torch.Tensor) -> torch.Tensor:
        return self.network(as_source_observation(obs, self.env.measured["lin_vel"])).clamp(-10.0, 10.0)


def evaluate_with_true_velocity(policy: TrueVelocity, cfg: EvalConfig) -> dict:
    make = evaluate._make_env

    def keep_env(*args):
        policy.env = make(*args)
        return policy.env

    evaluate._make_env = keep_env  # the evaluation's own env, so the policy can read its true velocity
    try:
        return evaluate_policy(policy, cfg, progress=False)
    finally:
        evaluate._make_env = make


def check_mapping(network, imported, spec) -> float:
    """Our re-expression of their observation must give the import's actions when lin_vel := the command."""
    obs = torch.randn(2048, spec.observation.dim)
    lin = torch.cat([obs[:, 6:8] / 2.0, torch.zeros(len(obs), 1)], dim=1)
    with torch.no_grad():
        return float((network(as_source_observation(obs, lin)) - imported.actor(obs)).abs().max())


def summary(metrics: dict) -> dict:
    keep = ("fall_rate", "mean_tracking_error", "mean_return")
    rows = {str(r["command"]): {k: round(r[k], 4) for k in ("fall_rate", "tracking_error_xy", "mean_return")}
            for r in metrics["per_command"]}  # fmt: skip
    return {**{k: metrics[k] for k in keep}, "per_command": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True, help="the published policy file (motion.pt)")
    parser.add_argument("--config", type=Path, required=True, help="its deploy YAML (go2.yaml)")
    parser.add_argument("--origin", default="unitreerobotics/unitree_rl_gym refs/pull/62/merge "
                        "a1a6e8dbdeff54b03ee8b14396f4254e401bb0eb deploy/pre_train/go2/motion.pt")
    parser.add_argument("--sha256", help="refuse a file with another digest")
    parser.add_argument("--reference", type=Path, help="also evaluate this policy in the simulator (ours)")
    parser.add_argument("--profiles", nargs="*", default=["none", "strong"])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--episode-s", type=float, default=20.0)
    parser.add_argument("--parts", nargs="+", choices=("sim", "stand_in"), default=["sim", "stand_in"],
                        help="what to run; a part's figures replace that part's in an earlier result file")
    parser.add_argument("--startup-timeout-s", type=float, default=30.0,
                        help="how long the stand-in may take to start (longer on a loaded machine at nice 19)")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "import_real_checkpoint")
    args = parser.parse_args()
    loopback.LoopbackRobot = functools.partial(loopback.LoopbackRobot, startup_timeout_s=args.startup_timeout_s)
    digest = sha256(args.policy)
    if args.sha256 and digest != args.sha256:
        sys.exit(f"{args.policy}: sha256 {digest}, expected {args.sha256}")
    spec = load_robot("go1")
    earlier = RESULTS / "import_real_checkpoint.json"
    result: dict = json.loads(earlier.read_text()) if earlier.is_file() else {}
    result.pop("machine", None)
    result |= {"origin": args.origin, "policy": str(args.policy), "sha256": digest,
               "config_sha256": sha256(args.config), "sim_config": SIM, "parts_last_run": args.parts}  # fmt: skip
    args.logs.mkdir(parents=True, exist_ok=True)
    imports = {}
    for standin in ("command", "zero"):
        imports[standin] = args.logs / f"imported_lin_vel_{standin}.pt"
        import_policy("unitree_rl_gym", args.policy, args.config, spec, imports[standin], {"base_lin_vel": standin})
    network = torch.jit.load(str(args.policy), map_location="cpu").eval()
    imported = load_policy(imports["command"], spec)
    result["mapping_check_max_difference"] = check_mapping(network, imported, spec)
    print(f"our re-expression of its observation vs the import: {result['mapping_check_max_difference']:.2e}")

    runs = {}
    if "sim" in args.parts:
        runs = {f"imported_lin_vel_{k}": (lambda p=p: load_policy(p, spec)) for k, p in imports.items()}
        runs["true_lin_vel"] = lambda: TrueVelocity(network, imported)
        runs["true_lin_vel_go2_mass"] = lambda: TrueVelocity(network, imported)
        if args.reference:
            runs["reference"] = lambda: load_policy(args.reference, spec)
    for name, make in runs.items():
        cfg = EvalConfig(**SIM)
        if name.endswith("go2_mass"):
            cfg.env.randomization.added_mass = [GO2_EXTRA_TRUNK_KG, GO2_EXTRA_TRUNK_KG]
        policy = make()
        with torch.no_grad():
            m = evaluate_with_true_velocity(policy, cfg) if isinstance(policy, TrueVelocity) else \
                evaluate_policy(policy, cfg, progress=False)  # fmt: skip
        result[f"sim_{name}"] = summary(m)
        print(f"sim {name}: {result[f'sim_{name}']}", flush=True)

    robot_cfg = RobotEvalConfig(episodes=args.episodes, episode_s=args.episode_s)
    for profile in args.profiles if "stand_in" in args.parts else []:
        logs = args.logs / f"stand_in_{profile}"
        m = evaluate_on_stand_in(imports["command"], profile, logs, spec, robot_cfg)
        result[f"stand_in_{profile}"] = {k: m[k] for k in (
            "mean_return", "tracking_error_xy", "fall_rate", "trip_rate", "policy_steps")}  # fmt: skip
        result[f"stand_in_{profile}"]["ended_by"] = ended_by(logs)
        print(f"stand-in {profile}: {result[f'stand_in_{profile}']}", flush=True)
    save("import_real_checkpoint", result)


if __name__ == "__main__":
    main()
