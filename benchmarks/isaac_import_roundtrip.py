"""A walking policy exported as legged_gym would export it, imported back with `sim_pretrain import`: does the
import walk exactly as the original, in our simulator and on the stand-in over the real protocol (deploy runtime)?

Our sim policy (ActorMLP on our 45 observations) is re-expressed as legged_gym's `export_policy_as_jit` output:
a TorchScript nn.Sequential on legged_gym's 48 observations (lin_vel, ang_vel, gravity, commands, dof_pos,
dof_vel, actions), normalisation folded into the first layer, the lin_vel inputs unused (weights 0). It is then
imported with configs/import/legged_gym_a1_flat.yaml and `--map base_lin_vel=zero`. Reported: the largest action
difference on random observations, and sim eval / stand-in figures of both policies on the same episodes.
A synthetic walk-these-ways import (random weights) is also run for one stand-in episode to show the stateful
wrapper goes through the deploy runtime.

    python benchmarks/isaac_import_roundtrip.py --policy policy.pt [--profiles none strong] [--episodes 4]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from real_robot.datalog import read_log_folder  # noqa: E402
from robot_spec import load_robot  # noqa: E402
from robot_spec.policy_io import load_policy  # noqa: E402
from sim_pretrain.evaluate import EvalConfig, evaluate_policy  # noqa: E402
from sim_pretrain.isaac_import import import_policy  # noqa: E402
from uni_o4.robot_eval import RobotEvalConfig, evaluate_on_stand_in  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "import" / "legged_gym_a1_flat.yaml"
# legged_gym's 48 observations → ours (gravity 0:3, gyro 3:6, command 6:9, joint_pos 9:21, joint_vel 21:33,
# last_action 33:45); the scales agree (ang_vel 0.25, commands 2/2/0.25, dof_vel 0.05) and the joint order is one
LEGGED_GYM_FROM_OURS = [None] * 3 + list(range(3, 6)) + list(range(0, 3)) + list(range(6, 45))


def as_legged_gym_export(actor, path: Path) -> Path:
    """The actor as legged_gym's policy_1.pt: normalisation folded in, columns in legged_gym's order."""
    linears = [m for m in actor.mlp if isinstance(m, nn.Linear)]
    seq = nn.Sequential(*[nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m
                          for m in actor.mlp])  # fmt: skip
    seq[0] = nn.Linear(48, linears[0].out_features)
    with torch.no_grad():
        w0 = linears[0].weight / actor.obs_std  # (x − mean)/std folded into the first layer
        b0 = linears[0].bias - w0 @ actor.obs_mean
        seq[0].weight.zero_()
        for col, ours in enumerate(LEGGED_GYM_FROM_OURS):
            if ours is not None:
                seq[0].weight[:, col] = w0[:, ours]
        seq[0].bias.copy_(b0)
        for dst, src in zip([m for m in seq if isinstance(m, nn.Linear)][1:], linears[1:]):
            dst.load_state_dict(src.state_dict())
    torch.jit.script(seq.eval()).save(str(path))
    return path


def wtw_synthetic(run: Path) -> Path:
    """A walk-these-ways run folder (random weights, the published run's structure)."""
    import numpy as np

    from tests.test_isaac_import import export_as_jit, rsl_rl_actor, wtw_parameters

    params = wtw_parameters()
    export_as_jit(rsl_rl_actor(2100, hidden=(256, 128), out=2), run / "checkpoints/adaptation_module_latest.jit")
    body = rsl_rl_actor(2102, out=12, seed=1)
    with torch.no_grad():
        body[-1].weight.mul_(0.01), body[-1].bias.zero_()  # small actions: it stands rather than thrashes
    export_as_jit(body, run / "checkpoints/body_latest.jit")
    (run / "parameters.pkl").write_bytes(pickle.dumps(params))
    assert np.isfinite(params["Cfg"]["sim"]["dt"])
    return run


def ended_by(folder: Path) -> list[str]:
    """Why each episode ended (the tripping monitor, fall, timeout), in order."""
    return [f"{e.outcome}: {e.reason}" if e.reason else e.outcome for e in read_log_folder(folder).episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--profiles", nargs="+", default=["none", "strong"])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--episode-s", type=float, default=20.0)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "isaac_import_roundtrip",
                        help="stand-in log folders (kept, to read why episodes ended)")
    args = parser.parse_args()
    spec = load_robot("go1")
    original = load_policy(args.policy, spec)
    result: dict = {"policy": str(args.policy)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = as_legged_gym_export(original.actor, tmp / "policy_1.pt")
        imported_path = tmp / "imported.pt"
        import_policy("legged_gym", export, CONFIG, spec, imported_path, {"base_lin_vel": "zero"})
        imported = load_policy(imported_path, spec)
        obs = torch.randn(4096, spec.observation.dim)
        result["max_action_difference"] = float((imported(obs) - original(obs)).abs().max())
        print(f"largest action difference on 4096 random observations: {result['max_action_difference']:.2e}")
        sim_cfg = EvalConfig(commands=[[0.5, 0.0, 0.0], [0.0, 0.0, 0.8]], envs_per_command=4, episode_s=10.0)
        for name, pol in (("original", original), ("imported", imported)):
            m = evaluate_policy(pol, sim_cfg, progress=False)
            result[f"sim_{name}"] = {k: m[k] for k in ("fall_rate", "mean_tracking_error", "mean_return")}
            print(f"sim {name}: {result[f'sim_{name}']}")
        cfg = RobotEvalConfig(episodes=args.episodes, episode_s=args.episode_s)
        for profile in args.profiles:
            for name, path in (("original", args.policy), ("imported", imported_path)):
                logs = args.logs / f"{profile}_{name}"
                m = evaluate_on_stand_in(path, profile, logs, spec, cfg)
                result[f"stand_in_{profile}_{name}"] = {k: m[k] for k in (
                    "mean_return", "tracking_error_xy", "fall_rate", "trip_rate", "policy_steps")}  # fmt: skip
                result[f"stand_in_{profile}_{name}"]["ended_by"] = ended_by(logs)
                print(f"stand-in {profile} {name}: {result[f'stand_in_{profile}_{name}']}")
        run = wtw_synthetic(tmp / "wtw_run")
        import_policy("walk_these_ways", run, None, spec, tmp / "wtw.pt")
        logs = args.logs / "none_wtw_synthetic"
        m = evaluate_on_stand_in(tmp / "wtw.pt", "none", logs, spec, RobotEvalConfig(episodes=1, episode_s=5.0))
        result["stand_in_none_wtw_synthetic"] = {k: m[k] for k in ("policy_steps", "fall_rate", "trip_rate")}
        result["stand_in_none_wtw_synthetic"]["ended_by"] = ended_by(logs)
        print(f"stand-in none, synthetic walk-these-ways import: {result['stand_in_none_wtw_synthetic']}")
    save("isaac_import_roundtrip", result)


if __name__ == "__main__":
    main()
