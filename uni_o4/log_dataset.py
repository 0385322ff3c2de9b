"""Offline dataset from robot logs (deploy/record.py: StepRecord), with rewards relabelled by the simulator's definition.

One log record per 50 Hz step holds the raw measurements, the observation the policy saw and the action it
took. A transition is (obs_t, a_t, r_t, obs_{t+1}) for every acting step t: policy phase, not tripped, with
the next record in the same episode one control step later (a gap in `step` means lost records: the episode
is cut there). The reward r_t reads the measurements of record t+1 (the state a_t led to), the command and
action of record t, and is computed by sim_pretrain/rewards.py's RewardFunction with a RewardTracker
replayed in time order, exactly as the simulator computes it. A fall or safety trip makes the episode's last
transition terminal; a timeout, operator stop or interruption does not (bootstrapping continues).
A record with NaN/Inf readings (a sensor fault: the record of a `non_finite` trip) is left out and the episode
cut there, with a `NonFiniteRecordsWarning` naming the file.

The critics and the dynamics model may also read measurements the policy cannot see (`critic_fields`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deploy.record import FIELD_NAMES, OUTCOMES, TERMINAL_OUTCOMES, Phase
from robot_spec.config import ConfigError
from robot_spec.observation import projected_gravity
from robot_spec.policy_map import observation_terms
from robot_spec.spec import RobotSpec
from sim_pretrain.rewards import RewardConfig, RewardFunction, RewardInputs, RewardTracker
from uni_o4.dataset import OfflineDataset

# Extra measurements for critics and dynamics, by name: (record field, columns taken).
CRITIC_FIELDS = {
    "odom_lin_vel": ("odom_lin_vel", slice(None)),
    "odom_ang_vel": ("odom_ang_vel", slice(None)),
    "base_height": ("odom_position", slice(2, 3)),
    "foot_force": ("foot_force", slice(None)),
    "tau_est": ("tau_est", slice(None)),
    "accelerometer": ("accelerometer", slice(None)),
}
# The reward reads the body's motion from odometry (a tracking camera's: what the robot did), not from the IMU, whose
# noise and bias are the robot's sensors' and would charge a policy for them; joints from the encoders.
REWARD_FIELDS = ("q", "dq", "tau_est", "foot_force", "odom_position", "odom_quaternion", "odom_lin_vel", "odom_ang_vel",
                 "command", "action")  # fmt: skip
OBSERVED_FIELDS = ("quaternion", "gyro")  # the IMU, for the policy's observations
RECORD_FIELDS = ("timestamp_us", "step", "phase", "obs", "tripped", *OBSERVED_FIELDS, *REWARD_FIELDS)  # what a dataset reads
if unknown := {*RECORD_FIELDS, *(f for f, _ in CRITIC_FIELDS.values())} - set(FIELD_NAMES):
    raise ImportError(f"uni_o4.log_dataset reads fields the log record (deploy.record) lacks: {sorted(unknown)}")


class NonFiniteRecordsWarning(UserWarning):
    """A log episode holds records with NaN/Inf readings: they are left out and the episode is cut there."""


@dataclass
class LogDataConfig:
    critic_fields: list[str] = field(default_factory=lambda: ["odom_lin_vel", "base_height", "foot_force", "tau_est"])
    # Foot contact = foot force above this. The simulator's touch sensors (N) use 1.0 (sim_pretrain/env.py);
    # a real Go1's foot-force readings are uncalibrated counts and need their own threshold.
    contact_force_threshold: float = 1.0
    discount: float = 0.99
    rewards: RewardConfig = field(default_factory=RewardConfig)  # the pretraining run's reward definition

    def __post_init__(self) -> None:
        unknown = sorted(set(self.critic_fields) - set(CRITIC_FIELDS))
        if unknown:
            raise ConfigError(f"unknown critic field(s) {unknown}; known: {sorted(CRITIC_FIELDS)}")


@dataclass
class LogEpisode:
    """One episode's records as arrays with a leading time dimension, and how it ended."""

    records: dict[str, np.ndarray]
    outcome: str
    source: str = ""


@dataclass
class LogReport:
    episodes: int = 0
    segments: int = 0  # contiguous acting runs (an episode with lost records gives several)
    transitions: int = 0
    terminals: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    empty_episodes: list[str] = field(default_factory=list)  # no acting step with a successor
    files_hash: str = ""


# --------------------------------------------------------------------------------------------- relabelling
def make_reward_function(spec: RobotSpec, cfg: RewardConfig) -> RewardFunction:
    lower = torch.tensor(spec.position_lower, dtype=torch.float32)
    upper = torch.tensor(spec.position_upper, dtype=torch.float32)
    return RewardFunction(cfg, lower, upper, spec.control.policy_dt)


def relabel_rewards(
    segments: list[dict[str, np.ndarray]], reward_fn: RewardFunction, contact_threshold: float
) -> list[np.ndarray]:
    """Rewards of every segment's transitions t → t+1 (length T−1 for T records), replayed in time order."""
    return relabel_reward_terms(segments, reward_fn, contact_threshold)[0]


def relabel_reward_terms(
    segments: list[dict[str, np.ndarray]], reward_fn: RewardFunction, contact_threshold: float
) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Per segment, the rewards of its transitions t → t+1 (length T−1 for T records) and each term's share of
    them (scaled, before the total's only_positive clip), replayed in time order.

    Segments are padded and run as one batch; each starts like a simulator episode after reset (tracker at
    zero) except the previous joint velocity, taken from its first record (the simulator's is 0 at reset, as
    is a resting robot's).
    """
    lengths = [len(s["q"]) for s in segments]
    if min(lengths, default=0) < 2:
        raise ValueError("every segment needs at least 2 records to give a transition")
    padded = {k: _pad([torch.as_tensor(s[k], dtype=torch.float32) for s in segments]) for k in REWARD_FIELDS}
    b, num_joints, num_feet = len(segments), padded["q"].shape[-1], padded["foot_force"].shape[-1]
    tracker = RewardTracker(b, num_joints, num_feet)
    tracker.last_joint_vel = padded["dq"][:, 0].clone()
    rewards = torch.zeros(b, max(lengths) - 1)
    terms = {name: torch.zeros(b, max(lengths) - 1) for name in reward_fn.cfg.scales}
    for t in range(max(lengths) - 1):
        now, after = (lambda k: padded[k][:, t]), (lambda k: padded[k][:, t + 1])
        inputs = RewardInputs(
            command=now("command"), lin_vel=after("odom_lin_vel"), ang_vel=after("odom_ang_vel"),
            projected_gravity=projected_gravity(after("odom_quaternion")), base_height=after("odom_position")[:, 2],
            joint_pos=after("q"), joint_vel=after("dq"), torques=after("tau_est"), action=now("action"),
            foot_contact=after("foot_force") > contact_threshold,
        )  # fmt: skip
        rewards[:, t], step_terms = reward_fn(inputs, tracker)
        for name, value in step_terms.items():
            terms[name][:, t] = value
    return ([rewards[i, : n - 1].numpy() for i, n in enumerate(lengths)],
            [{name: v[i, : n - 1].numpy() for name, v in terms.items()} for i, n in enumerate(lengths)])  # fmt: skip


def _pad(arrays: list[torch.Tensor]) -> torch.Tensor:
    """(B, T_max, ·), padded by repeating each sequence's last record (finite values; never read)."""
    t_max = max(len(a) for a in arrays)
    return torch.stack([torch.cat([a, a[-1:].expand(t_max - len(a), *a.shape[1:])]) for a in arrays])


# --------------------------------------------------------------------------------------------- episodes → dataset
def acting_segments(records: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Record indices of each contiguous run of acting steps plus the record that follows the run's last step.

    Acting = policy phase and not tripped. A run ends at a non-acting record (which still serves as the
    successor: it measured what the last action did) or at a gap in `step` (lost records: no successor).
    """
    acting = (records["phase"] == Phase.POLICY) & (records["tripped"] == 0)
    follows = np.zeros(len(acting), dtype=bool)  # record t is the control step right after record t−1
    follows[1:] = np.diff(records["step"].astype(np.int64)) == 1
    segments, t = [], 0
    while t < len(acting):
        if acting[t]:
            start = t
            while t + 1 < len(acting) and acting[t + 1] and follows[t + 1]:
                t += 1
            end = t + 1 if t + 1 < len(acting) and follows[t + 1] else t  # the successor, when it was recorded
            if end > start:
                segments.append(np.arange(start, end + 1))
        t += 1
    return segments


def episode_segments(episode: LogEpisode, critic_fields: Iterable[str] = ()) -> list[dict[str, np.ndarray]]:
    """Time-ordered, validated records cut into acting segments (each ends with a successor record)."""
    needed = [*RECORD_FIELDS, *(CRITIC_FIELDS[name][0] for name in critic_fields)]
    missing = sorted({k for k in needed if k not in episode.records})
    if missing:
        raise ValueError(f"log episode {episode.source or '?'} lacks field(s) {missing}")
    if episode.outcome not in OUTCOMES:
        known = sorted(OUTCOMES)
        raise ValueError(f"log episode {episode.source or '?'}: unknown outcome {episode.outcome!r}; known {known}")
    order = np.argsort(episode.records["timestamp_us"], kind="stable")
    records = {k: np.asarray(v)[order] for k, v in episode.records.items()}
    finite, bad_fields = finite_records(records, needed)
    acting = acting_segments(records)
    segments = [run for idx in acting for run in finite_runs(idx, finite)]
    acting_bad = sum(int((~finite[idx]).sum()) for idx in acting)
    if acting_bad:
        warnings.warn(f"log {episode.source or '?'} ({episode.outcome}): {acting_bad} record(s) with NaN/Inf in "
                      f"{', '.join(bad_fields)} left out, the episode cut there", NonFiniteRecordsWarning,
                      stacklevel=2)  # fmt: skip
    return [{k: v[idx] for k, v in records.items()} for idx in segments]


def finite_records(records: dict[str, np.ndarray], fields: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """Per record, whether every float value of `fields` is finite; and the fields that are not."""
    finite, bad_fields = np.ones(len(records["timestamp_us"]), dtype=bool), []
    for name in dict.fromkeys(fields):
        values = np.asarray(records[name])
        if values.dtype.kind == "f":
            rows = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if not rows.all():
                finite &= rows
                bad_fields.append(name)
    return finite, bad_fields


def finite_runs(idx: np.ndarray, finite: np.ndarray) -> list[np.ndarray]:
    """A segment's record indices split at records that are not finite (left out); runs of >= 2 records."""
    bad = np.flatnonzero(~finite[idx])
    runs = [piece[1:] if i else piece for i, piece in enumerate(np.split(idx, bad))]  # a piece starts at a bad one
    return [run for run in runs if len(run) >= 2]


def next_observations(segment: dict[str, np.ndarray], spec: RobotSpec) -> np.ndarray:
    """obs of records 1..T−1 as the policy would see them; the final (non-acting) record's obs is rebuilt
    from its measurements, since a record written after a trip or in damping may carry no policy obs."""
    layout = spec.observation
    nxt = np.asarray(segment["obs"][1:], dtype=np.float32).copy()
    last = {k: segment[k][-1] for k in ("quaternion", "gyro", "command", "q", "dq")}
    raw = observation_terms(spec, last["quaternion"], last["gyro"], last["command"], last["q"], last["dq"],
                            segment["action"][-2])  # fmt: skip
    frame = layout.frame(raw)[0].numpy()
    older = segment["obs"][-2][: layout.dim - layout.frame_dim]  # history: newest frame first
    acting_successor = segment["phase"][-1] == Phase.POLICY and segment["tripped"][-1] == 0
    if not acting_successor:
        nxt[-1] = np.concatenate([frame, older])
    return nxt


def dataset_from_episodes(
    episodes: Iterable[LogEpisode], spec: RobotSpec, cfg: LogDataConfig, device: str | torch.device = "cpu"
) -> tuple[OfflineDataset, LogReport]:
    """Transitions of every episode's acting segments, rewards relabelled; terminal at a fall/trip's last step."""
    report = LogReport()
    segments, terminal_flags = [], []
    for episode in episodes:
        report.episodes += 1
        report.outcomes[episode.outcome] = report.outcomes.get(episode.outcome, 0) + 1
        parts = episode_segments(episode, cfg.critic_fields)
        if not parts:
            report.empty_episodes.append(episode.source)
        for k, part in enumerate(parts):
            segments.append(part)
            ends_episode = k == len(parts) - 1 and not _is_acting(part, -1)
            terminal_flags.append(ends_episode and episode.outcome in TERMINAL_OUTCOMES)
    if not segments:
        raise ValueError(f"no transitions: {report.episodes} episode(s) hold no policy-phase step with a successor")
    rewards = relabel_rewards(segments, make_reward_function(spec, cfg.rewards), cfg.contact_force_threshold)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminals",
                                                           "episode_ids", "critic_obs", "next_critic_obs")}  # fmt: skip
    for i, (segment, reward, terminal) in enumerate(zip(segments, rewards, terminal_flags)):
        n = len(reward)
        extra = _critic_obs(segment, cfg.critic_fields)
        columns["obs"].append(segment["obs"][:-1])
        columns["actions"].append(segment["action"][:-1])
        columns["rewards"].append(reward)
        columns["next_obs"].append(next_observations(segment, spec))
        columns["terminals"].append(np.r_[np.zeros(n - 1), float(terminal)])
        columns["episode_ids"].append(np.full(n, i))
        columns["critic_obs"].append(extra[:-1])
        columns["next_critic_obs"].append(extra[1:])
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    if not cfg.critic_fields:
        arrays.pop("critic_obs"), arrays.pop("next_critic_obs")
    data = OfflineDataset.from_arrays(**arrays, discount=cfg.discount, device=device)
    report.segments, report.transitions, report.terminals = len(segments), len(data), int(data.terminals.sum())
    return data, report


def _is_acting(segment: dict[str, np.ndarray], t: int) -> bool:
    return bool(segment["phase"][t] == Phase.POLICY and segment["tripped"][t] == 0)


def _critic_obs(segment: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    if not names:
        return np.zeros((len(segment["q"]), 0), dtype=np.float32)
    sources = (CRITIC_FIELDS[name] for name in names)
    return np.concatenate([np.asarray(segment[field][:, cols], dtype=np.float32) for field, cols in sources], axis=1)


# --------------------------------------------------------------------------------------------- log folders
def dataset_from_log_folder(
    folder: str | Path | list[str | Path], spec: RobotSpec, cfg: LogDataConfig, skip_damaged: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[OfflineDataset, LogReport]:  # fmt: skip
    """Every log folder written by `real_robot collect` in or below `folder` (or several) as one dataset."""
    from real_robot.datalog import read_log_folder  # the log format's own reader (damage detection lives there)

    roots = folder if isinstance(folder, list) else [folder]
    folders = [f for root in roots for f in log_folders(root)]
    episodes = [_as_episode(e) for f in folders for e in read_log_folder(f, skip_damaged=skip_damaged)]
    if not episodes:
        raise ValueError(f"{', '.join(map(str, roots))}: no readable log episodes")
    data, report = dataset_from_episodes(episodes, spec, cfg, device)
    report.files_hash = files_hash(folders)
    return data, report


def log_folders(root: str | Path) -> list[Path]:
    """The log folders (holding episode files) at or below `root`; a clear error when there are none."""
    from real_robot.datalog import EPISODE_GLOB

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"log folder not found: {root}")
    folders = sorted({p.parent for p in root.rglob(EPISODE_GLOB)})
    if not folders:
        raise ValueError(f"{root} holds no log episodes (no {EPISODE_GLOB} files in it or below)")
    return folders


def _as_episode(episode) -> LogEpisode:
    """Adapt the reader's episode object: `records` (structured array or dict of arrays), `outcome`, `source`."""
    if isinstance(episode, LogEpisode):
        return episode
    records = episode["records"] if isinstance(episode, dict) else episode.records
    outcome = episode["outcome"] if isinstance(episode, dict) else episode.outcome
    if isinstance(episode, dict):
        source = episode.get("source", "")
    else:  # the reader's episode: its path (folder and file) names it among every folder of data_logs/
        source = getattr(episode, "path", None) or getattr(episode, "source", "")
    if isinstance(records, np.ndarray) and records.dtype.names:
        records = {name: records[name] for name in records.dtype.names}
    return LogEpisode(dict(records), str(outcome), str(source))


def files_hash(folders: list[Path]) -> str:
    """Hash of every file's name and bytes in `folders` (provenance of a dataset)."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
