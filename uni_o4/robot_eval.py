"""How well a policy does on the robot, measured from its logs: return, velocity tracking, falls.

The return is the simulator's reward (the same definition training used, relabelled from the logged
measurements by uni_o4/log_dataset.py) summed over an episode's policy phase, so sim and robot figures speak
the same units. `evaluate_on_stand_in` runs a policy on the stand-in robot over the real protocol (stand-in +
SDK bridge + `real_robot collect`, deterministic, a fixed command schedule) and measures its logs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deploy.runtime import Behaviour
from deploy.session import CollectConfig, SessionConfig, collect
from real_robot.datalog import read_log_folder, set_aside
from robot_spec.policy_io import policy_digest
from robot_spec.spec import RobotSpec
from uni_o4.log_dataset import LogDataConfig, LogEpisode, episode_segments, make_reward_function, relabel_reward_terms


@dataclass
class RobotEvalConfig:
    episodes: int = 4
    episode_s: float = 20.0
    schedule: str = "walk"  # configs/deploy/schedule_<name>.yaml
    speed: str = "high"
    seed: int = 0  # the stand-in's sensor noise, per episode
    robot_seed: int = 0  # which stand-in robot: its calibration errors (the same robot all along: keep it fixed)
    stop_after_ended_early: int | None = None  # deploy.session.CollectConfig's: a check that cannot pass stops


# A stall: for a whole second the command asks the robot to move and its legs stand still (the joints' angles spread
# less than this). On strong some fine-tuned policies froze for a whole backward turn in some episodes and not in
# others, which the mean tracking error hides (docs/reality_gap.md); walking spreads them 0.07 rad, standing 0.02.
# A second here and there is ordinary (the sim policy on strong: about one per 20 s episode, at command changes).
STALL_JOINT_STD = 0.04  # rad, mean over the joints
MOVING_COMMAND = (0.2, 0.3)  # |v_xy| m/s, |yaw rate| rad/s: a command at or above either asks for steps
# Stalled seconds per episode a candidate may add to the incumbent's before a check on the robot refuses it: the
# freezing candidates on strong added 3-4, the others none (their counts differ by < 1 between policies that walk).
STALL_MARGIN_S = 1.0


def stalled_seconds(command: np.ndarray, q: np.ndarray, steps_per_s: int) -> int:
    """Whole seconds (consecutive windows of policy steps) in which every command asks for motion and the legs do
    not move."""
    stalled = 0
    for start in range(0, len(command) - steps_per_s + 1, steps_per_s):
        window = slice(start, start + steps_per_s)
        cmd = command[window]
        moving = (np.linalg.norm(cmd[:, :2], axis=1) >= MOVING_COMMAND[0]) | (np.abs(cmd[:, 2]) >= MOVING_COMMAND[1])
        stalled += bool(moving.all() and q[window].std(axis=0).mean() < STALL_JOINT_STD)
    return stalled


def stalls_more(candidate: dict, incumbent: dict) -> str:
    """Why `candidate` stalls clearly more than `incumbent` (their metrics: `stalled_s` per episode), or "" when
    it does not."""
    c, i = candidate.get("stalled_s", 0.0), incumbent.get("stalled_s", 0.0)
    return f"stalled {c:.1f} s per episode > {i:.1f} + {STALL_MARGIN_S:g}" if c > i + STALL_MARGIN_S else ""


def episode_metrics(episode: LogEpisode, spec: RobotSpec, cfg: LogDataConfig) -> dict:
    """Return (the training reward: its total clipped at zero as training clips it), the sum of the reward terms
    without that clip and each term's sum, policy steps, mean xy / yaw tracking error (body frame, odometry: what the
    body did, not what its noisy IMU said), stalled seconds and outcome of one episode."""
    segments = episode_segments(episode)
    reward_fn = make_reward_function(spec, cfg.rewards)
    rewards, terms = relabel_reward_terms(segments, reward_fn, cfg.contact_force_threshold) if segments else ([], [])
    term_sums = {name: float(sum(t[name].sum() for t in terms)) for name in reward_fn.cfg.scales}
    steps = sum(len(r) for r in rewards)
    if steps:
        cmd = np.concatenate([s["command"][:-1] for s in segments])
        lin = np.concatenate([s["odom_lin_vel"][1:] for s in segments])  # what each command led to
        yaw = np.concatenate([s["odom_ang_vel"][1:, 2] for s in segments])
        err_xy = float(np.linalg.norm(lin[:, :2] - cmd[:, :2], axis=1).mean())
        err_yaw = float(np.abs(yaw - cmd[:, 2]).mean())
    else:
        err_xy = err_yaw = float("nan")
    stalled = sum(stalled_seconds(s["command"], s["q"], spec.control.policy_hz) for s in segments)
    return {
        "source": episode.source, "outcome": episode.outcome, "policy_steps": steps,
        "return": float(sum(r.sum() for r in rewards)), "return_unclipped": sum(term_sums.values()),
        "return_terms": term_sums, "tracking_error_xy": err_xy, "tracking_error_yaw": err_yaw,
        "stalled_s": stalled,
    }  # fmt: skip


def log_metrics(folder: str | Path, spec: RobotSpec, cfg: LogDataConfig | None = None) -> dict:
    """Per-episode metrics of a log folder and their mean and spread (episodes as the unit)."""
    cfg = cfg or LogDataConfig()
    episodes = [LogEpisode(e.records, e.outcome, e.source) for e in read_log_folder(folder)]
    if not episodes:
        raise ValueError(f"{folder} holds no log episodes")
    rows = [episode_metrics(e, spec, cfg) for e in episodes]
    returns = np.array([r["return"] for r in rows])
    steps = sum(r["policy_steps"] for r in rows)
    return {
        "episodes": len(rows), "policy_steps": steps,
        "mean_return": float(returns.mean()), "std_return": float(returns.std()),
        "reward_per_step": float(returns.sum() / max(steps, 1)),
        "mean_return_unclipped": float(np.mean([r["return_unclipped"] for r in rows])),
        "mean_return_terms": {name: float(np.mean([r["return_terms"][name] for r in rows]))
                              for name in rows[0]["return_terms"]},
        "tracking_error_xy": _weighted(rows, "tracking_error_xy"), "tracking_error_yaw": _weighted(rows, "tracking_error_yaw"),
        "fall_rate": float(np.mean([r["outcome"] == "fall" for r in rows])),
        "trip_rate": float(np.mean([r["outcome"] == "safety_trip" for r in rows])),
        "stalled_s": float(np.mean([r["stalled_s"] for r in rows])),  # per episode
        "per_episode": rows,
    }  # fmt: skip


def _weighted(rows: list[dict], key: str) -> float:
    """Mean over steps (an episode that fell early weighs less)."""
    pairs = [(r[key], r["policy_steps"]) for r in rows if r["policy_steps"]]
    return float(sum(v * n for v, n in pairs) / sum(n for _, n in pairs)) if pairs else float("nan")


def evaluate_on_stand_in(policy: str | Path, profile: str, out: str | Path, spec: RobotSpec,
                         cfg: RobotEvalConfig | None = None) -> dict:  # fmt: skip
    """Run `policy` on the stand-in robot (fast lockstep, real protocol) for cfg.episodes episodes, logging to
    `out`, and measure the logs. Metrics (and the settings they were measured with) go to out/metrics.json."""
    cfg = cfg or RobotEvalConfig()
    out = Path(out)
    collect_on_stand_in(policy, profile, out, cfg.episodes, cfg.episode_s, cfg.schedule, cfg.speed, cfg.seed,
                        robot_seed=cfg.robot_seed, robot=spec.name,
                        stop_after_ended_early=cfg.stop_after_ended_early)  # fmt: skip
    return measure(policy, profile, out, spec, cfg)


def measure(policy: str | Path, profile: str, out: Path, spec: RobotSpec, cfg: RobotEvalConfig) -> dict:
    """The metrics of an evaluation's logs in `out`, also written to out/metrics.json with the settings it ran with."""
    metrics = {"policy": str(policy), "policy_sha256": _digest_or_none(policy), "profile": profile,
               "evaluation": asdict(cfg), **log_metrics(out, spec)}  # fmt: skip
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluation_of(policy: str | Path, profile: str, out: str | Path, spec: RobotSpec,
                  cfg: RobotEvalConfig | None = None) -> dict:  # fmt: skip
    """`evaluate_on_stand_in`'s metrics; when that evaluation of this policy with these settings was done before
    (its out/metrics.json names them) they are measured again from its logs, not run again (a rerun resumes, and a
    metric defined since applies to it); an interrupted one, or one of another policy or other settings (more
    episodes, another robot), is set aside first."""
    cfg = cfg or RobotEvalConfig()
    metrics_file = Path(out) / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if _same_policy(metrics, policy) and _same_settings(metrics, cfg):
            return measure(policy, metrics.get("profile", profile), Path(out), spec, cfg)
    set_aside(Path(out))
    return evaluate_on_stand_in(policy, profile, out, spec, cfg)


def _same_policy(metrics: dict, policy: str | Path) -> bool:
    """Whether cached metrics are of `policy`: the same file, or one with the same bytes (a run folder whose
    policy came from a clone since moved, or a copy, is not evaluated again)."""
    recorded = Path(metrics.get("policy", policy))
    if recorded.resolve() == Path(policy).resolve():
        return True
    digest = _digest_or_none(policy)
    return digest is not None and digest in (metrics.get("policy_sha256"), _digest_or_none(recorded))


def _digest_or_none(path: str | Path) -> str | None:
    return policy_digest(path) if Path(path).is_file() else None


def _same_settings(metrics: dict, cfg: RobotEvalConfig) -> bool:
    """Whether cached metrics were measured as `cfg` asks; files from before they named their settings only say
    how many episodes they hold (a check stopped early holds fewer: it is run again)."""
    if "evaluation" in metrics:
        return metrics["evaluation"] == asdict(cfg)
    return metrics.get("episodes", cfg.episodes) >= cfg.episodes


def collect_on_stand_in(policy: str | Path, profile: str, out: str | Path, episodes: int | None = None,
                        episode_s: float = 20.0, schedule: str = "walk", speed: str = "high", seed: int = 0,
                        steps: int | None = None, behaviour: Behaviour | None = None,
                        extra_meta: dict | None = None, action_noise: float = 0.0,
                        robot_seed: int = 0, robot: str = "go1",
                        stop_after_ended_early: int | None = None) -> None:  # fmt: skip
    """A collection (deploy.session) against a fresh stand-in robot + bridge on loopback (fast mode), `steps`
    policy steps if given, else `episodes` episodes; `behaviour`, `extra_meta` and `action_noise` as in
    deploy.session. `robot_seed` picks the robot (its sensor biases), `seed` the sensor noise of each episode and
    the action noise: a pipeline collects, fine-tunes and evaluates on one robot, as it would on hardware.
    `stop_after_ended_early`: CollectConfig's. KeyboardInterrupt when the operator stopped it short (Ctrl-C)."""
    from real_robot.loopback import LoopbackRobot

    amount = {"steps": steps} if steps is not None else {"episodes": episodes}
    run = CollectConfig(Path(policy), **amount, episode_s=episode_s, schedule=schedule, speed=speed, out=Path(out),
                        action_noise=action_noise, seed=seed, stand_in_profile=profile,
                        stop_after_ended_early=stop_after_ended_early)  # fmt: skip
    with LoopbackRobot(profile=profile, fast=True, seed=robot_seed, robot=robot) as stand_in:
        collector = collect(stand_in_session(stand_in), run, behaviour, extra_meta)
    if collector.cut_short:  # a short log must never pass for the amount asked
        raise KeyboardInterrupt(f"stopped by the operator after {collector.steps} policy steps, "
                                f"{collector.episodes} episodes (kept in {out})")  # fmt: skip


def stand_in_session(robot) -> SessionConfig:
    """The session config of a collection on a loopback stand-in robot (fast lockstep)."""
    return SessionConfig(robot=robot.robot, lcm_url=robot.lcm_url, channel_prefix=robot.prefix,
                         runtime_config="runtime_fast")  # fmt: skip
