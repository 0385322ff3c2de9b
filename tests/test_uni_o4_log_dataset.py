"""uni_o4.log_dataset: relabelled rewards equal the simulator's, phases/terminals/gaps, clear errors."""

import numpy as np
import pytest
import torch

from sim_pretrain.env import Go1Env
from sim_pretrain.env_config import CommandConfig, EnvConfig, RandomizationConfig, TerminationConfig
from sim_pretrain.rewards import RewardConfig
from uni_o4.log_dataset import (
    LogDataConfig,
    LogEpisode,
    dataset_from_episodes,
    dataset_from_log_folder,
    make_reward_function,
    relabel_rewards,
)


def _record(env: Go1Env, row: int) -> dict:
    m = env.measured
    force = torch.from_numpy(env.sensor_out[:, -1, env.sensors["feet_touch"]]).float()
    return {
        "q": m["joint_pos"][row], "dq": m["joint_vel"][row], "tau_est": m["torques"][row], "quaternion": m["quat"][row],
        "gyro": m["ang_vel"][row], "foot_force": force[row], "odom_lin_vel": m["lin_vel"][row],
        "odom_position": torch.tensor([0.0, 0.0, m["base_height"][row].item()]), "odom_quaternion": m["quat"][row],
        "odom_ang_vel": m["ang_vel"][row],
    }  # fmt: skip


@pytest.fixture(scope="module")
def sim_log():
    """A fake log built from the simulator's own measurements, with the rewards the simulator gave."""
    cfg = EnvConfig(
        num_envs=3, num_threads=1, episode_length_s=100.0, seed=5,
        randomization=RandomizationConfig(push_velocity=0.0),
        commands=CommandConfig(resample_s=0.2, zero_probability=0.0),  # commands change mid-log
        termination=TerminationConfig(max_roll_pitch=3.2, trunk_contact_force=1e9, min_base_height=-1.0),
    )  # fmt: skip
    env = Go1Env(cfg)
    gen = torch.Generator().manual_seed(0)
    steps, rows = 40, [[] for _ in range(3)]
    env_rewards = []
    for t in range(steps + 1):
        command, obs = env.commands.clone(), env.get_observations()["policy"].clone()
        action = 0.5 * torch.randn(3, 12, generator=gen)
        for r in range(3):
            rows[r].append({**_record(env, r), "command": command[r], "obs": obs[r], "action": action[r]})
        if t < steps:
            _, reward, dones, _ = env.step(action)
            assert not dones.any()
            env_rewards.append(reward.clone())
    term_sums = {name: sums.clone() for name, sums in env.episode_sums.items()}
    env.close()
    episodes = []
    for r in range(3):
        records = {k: torch.stack([rec[k] for rec in rows[r]]).numpy() for k in rows[r][0]}
        records.update(timestamp_us=np.arange(steps + 1) * 20_000, step=np.arange(steps + 1),
                       phase=np.ones(steps + 1, np.uint8), tripped=np.zeros(steps + 1, np.uint8))  # fmt: skip
        episodes.append(LogEpisode(records, "timeout", f"sim-row-{r}"))
    return episodes, torch.stack(env_rewards, dim=1), term_sums  # rewards (rows, steps); per-term episode sums


def test_relabelled_rewards_equal_the_simulators(sim_log, spec):
    episodes, env_rewards, term_sums = sim_log
    cfg = LogDataConfig()
    records = [e.records for e in episodes]
    rewards = relabel_rewards(records, make_reward_function(spec, cfg.rewards), 1.0)
    assert (env_rewards > 0).float().mean() > 0.3  # the comparison is not between zeros
    for r in range(3):
        torch.testing.assert_close(torch.from_numpy(rewards[r]), env_rewards[r], atol=1e-6, rtol=1e-5)
    # Term by term (the total is clipped at zero, which could hide a wrong term): one term at a time,
    # summed over the episode, against the simulator's own per-term episode sums.
    active = 0
    for name, scale in cfg.rewards.scales.items():
        single = RewardConfig(scales={name: scale}, only_positive=False)
        per_step = relabel_rewards(records, make_reward_function(spec, single), 1.0)
        sums = torch.tensor([float(x.sum()) for x in per_step])
        torch.testing.assert_close(sums, term_sums[name], atol=1e-5, rtol=1e-4, msg=name)
        active += bool(sums.abs().max() > 1e-6)
    assert active >= 9  # nearly every term is exercised (joint limits may stay untouched)

    data, report = dataset_from_episodes(episodes, spec, cfg)
    assert report.transitions == len(data) == 3 * 40 and report.terminals == 0
    torch.testing.assert_close(data.rewards, env_rewards.reshape(-1), atol=1e-6, rtol=1e-5)
    # next_obs of step t is the obs the policy saw at t+1; critic_obs = odometry velocity, height, forces, torques.
    torch.testing.assert_close(data.next_obs[:39], data.obs[1:40])
    assert data.critic_dim == 3 + 1 + 4 + 12 and data.timeouts.sum() == 3


def _synthetic_records(n: int, spec, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    return {
        "timestamp_us": np.arange(n, dtype=np.int64) * 20_000, "step": np.arange(n, dtype=np.int32),
        "phase": np.ones(n, np.uint8), "tripped": np.zeros(n, np.uint8),
        "q": spec.default_pose + rng.normal(0, 0.05, (n, 12)), "dq": rng.normal(0, 0.5, (n, 12)),
        "tau_est": rng.normal(0, 2, (n, 12)), "quaternion": quat, "gyro": rng.normal(0, 0.1, (n, 3)),
        "foot_force": rng.uniform(0, 30, (n, 4)), "odom_position": np.tile([0.0, 0.0, 0.28], (n, 1)),
        "odom_quaternion": quat,
        "odom_lin_vel": rng.normal(0, 0.2, (n, 3)), "odom_ang_vel": rng.normal(0, 0.1, (n, 3)),
        "accelerometer": rng.normal(0, 1, (n, 3)), "command": np.tile([0.5, 0.0, 0.0], (n, 1)),
        "obs": rng.normal(size=(n, spec.observation.dim)), "action": rng.normal(0, 0.3, (n, 12)),
    }  # fmt: skip


def test_phases_trips_and_gaps_shape_the_transitions(spec):
    fall = _synthetic_records(12, spec)
    fall["phase"][:2] = 0  # soft start: no transitions
    fall["phase"][10:] = 2  # damping after the trip
    fall["tripped"][10:] = 1
    timeout = _synthetic_records(8, spec, seed=1)
    timeout["step"][5:] += 3  # three records lost: the episode is cut after record 4
    timeout_shuffled = {k: v[::-1].copy() for k, v in timeout.items()}  # replayed in time order anyway
    data, report = dataset_from_episodes(
        [LogEpisode(fall, "fall"), LogEpisode(timeout_shuffled, "timeout")], spec, LogDataConfig(critic_fields=[])
    )
    # fall: acting records 2..9, successor 10 → 8 transitions, the last one terminal.
    # timeout: records 0..4 and 5..7 → 4 + 2 transitions, none terminal.
    assert report.segments == 3 and len(data) == 8 + 4 + 2 and data.critic_obs is None
    assert data.terminals.tolist() == [False] * 7 + [True] + [False] * 6
    torch.testing.assert_close(data.obs[:8], torch.as_tensor(fall["obs"][2:10], dtype=torch.float32))
    # The post-trip record's obs is rebuilt from its measurements: standing level, last action = the action taken.
    s = spec.observation.slices()
    rebuilt = data.next_obs[7]
    torch.testing.assert_close(rebuilt[s["projected_gravity"]], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(rebuilt[s["last_action"]], torch.as_tensor(fall["action"][9], dtype=torch.float32))
    assert data.returns[7] == data.rewards[7]  # terminal: nothing after the fall


@pytest.mark.parametrize(
    "change, critic_fields, message",
    [
        (lambda r: r.pop("odom_lin_vel"), [], "lacks field"),
        (lambda r: r.pop("accelerometer"), ["accelerometer"], r"lacks field\(s\) \['accelerometer'\]"),
        (lambda r: r["phase"].fill(0), [], "no transitions"),
    ],
)
def test_bad_logs_give_clear_errors(spec, change, critic_fields, message):
    records = _synthetic_records(5, spec)
    change(records)
    with pytest.raises(ValueError, match=message):
        dataset_from_episodes([LogEpisode(records, "timeout", "ep0")], spec, LogDataConfig(critic_fields=critic_fields))
    if critic_fields:  # the same log is fine for a config that does not ask for the missing measurement
        dataset_from_episodes([LogEpisode(records, "timeout", "ep0")], spec, LogDataConfig(critic_fields=[]))


def test_unknown_outcome_and_missing_folder(spec, tmp_path):
    with pytest.raises(ValueError, match="unknown outcome"):
        dataset_from_episodes([LogEpisode(_synthetic_records(5, spec), "exploded")], spec, LogDataConfig())
    with pytest.raises(FileNotFoundError, match="log folder not found"):
        dataset_from_log_folder(tmp_path / "nope", spec, LogDataConfig())
    with pytest.raises(ValueError, match="unknown critic field"):
        LogDataConfig(critic_fields=["lidar"])


def _write_log(folder, spec, records, outcome="timeout"):
    """A real log folder (real_robot.datalog) holding one episode of `records` (other fields zero)."""
    from deploy.record import record_schema
    from real_robot.datalog import LogWriter

    schema = record_schema(spec)
    n = len(records["q"])
    full = {k: np.zeros((n, *shape), dtype=dtype) for k, (dtype, shape) in schema.items()}
    full.update({k: np.asarray(v).astype(full[k].dtype) for k, v in records.items() if k in full})
    with LogWriter(folder, schema, {"test": True}) as writer:
        writer.start_episode()
        writer.append_many(full)
        writer.end_episode(outcome)


def test_log_folders_below_a_root_are_read_together_and_damage_is_reported(spec, tmp_path):
    """`--offline data_logs/` reads every collect_* folder below it; a damaged file stops the read (naming
    the file) unless skip_damaged, which uses every intact episode; an empty folder is a clear error."""
    _write_log(tmp_path / "collect_a", spec, _synthetic_records(6, spec), "operator_stop")
    _write_log(tmp_path / "collect_b", spec, _synthetic_records(6, spec), "fall")
    data, report = dataset_from_log_folder(tmp_path, spec, LogDataConfig())
    assert len(data) == 10 and report.outcomes == {"operator_stop": 1, "fall": 1}
    assert len(report.files_hash) == 16
    episode = next((tmp_path / "collect_b").glob("episode_*"))
    raw = bytearray(episode.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    episode.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=episode.name):
        dataset_from_log_folder(tmp_path, spec, LogDataConfig())
    with pytest.warns(UserWarning, match=episode.name):
        data, report = dataset_from_log_folder(tmp_path, spec, LogDataConfig(), skip_damaged=True)
    assert len(data) == 5 and report.outcomes == {"operator_stop": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no log episodes"):
        dataset_from_log_folder(tmp_path / "empty", spec, LogDataConfig())


def test_the_evaluation_measures_the_body_by_odometry_and_breaks_the_return_into_its_terms(spec):
    from uni_o4.robot_eval import episode_metrics

    records = _synthetic_records(30, spec)
    clean = episode_metrics(LogEpisode(records, "timeout"), spec, LogDataConfig())
    noisy = {**records, "gyro": records["gyro"] + np.random.default_rng(3).normal(0.05, 0.3, (30, 3))}
    tilted = {**noisy, "quaternion": np.tile([0.98, 0.2, 0.0, 0.0], (30, 1))}
    measured = episode_metrics(LogEpisode(tilted, "timeout"), spec, LogDataConfig())
    # the IMU's noise, bias and attitude error are the robot's sensors', not what its body did: nothing changes
    assert {k: measured[k] for k in ("return", "tracking_error_yaw", "return_terms")} == \
        {k: clean[k] for k in ("return", "tracking_error_yaw", "return_terms")}  # fmt: skip
    odom_yaw = np.abs(records["odom_ang_vel"][1:, 2] - records["command"][:-1, 2]).mean()
    assert clean["tracking_error_yaw"] == pytest.approx(odom_yaw)
    assert clean["return_unclipped"] == pytest.approx(sum(clean["return_terms"].values()))
    assert clean["return"] >= clean["return_unclipped"]  # the clip only ever raises a step's total to zero
