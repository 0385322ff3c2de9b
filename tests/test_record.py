"""deploy.record: the typed step record and the log schema derived from it stay the on-disk schema logs have
always had (logs written before the record was typed still load), and new logs say which version they hold."""

from types import SimpleNamespace

import numpy as np

from deploy.record import SCHEMA_VERSION, SCHEMA_VERSION_KEY, StepRecord, record_schema
from deploy.runtime import load_runtime_config
from deploy.safety import load_safety_config
from deploy.session import RunLog, run_meta
from real_robot.datalog import LogWriter, read_log_folder
from uni_o4.log_dataset import LogDataConfig, dataset_from_log_folder

F32 = "float32"


def legacy_schema(n: int, feet: int, obs: int) -> dict:
    """The schema as real_robot/collect.py wrote it out by hand (version 1, before StepRecord)."""
    return {
        "timestamp_us": ("int64", ()), "robot_tick_us": ("int64", ()), "step": ("int32", ()), "phase": ("uint8", ()),
        "q": (F32, (n,)), "dq": (F32, (n,)), "tau_est": (F32, (n,)),
        "quaternion": (F32, (4,)), "rpy": (F32, (3,)), "gyro": (F32, (3,)), "accelerometer": (F32, (3,)),
        "foot_force": (F32, (feet,)),
        "odom_position": (F32, (3,)), "odom_quaternion": (F32, (4,)), "odom_lin_vel": (F32, (3,)),
        "odom_ang_vel": (F32, (3,)),
        "command": (F32, (3,)), "obs": (F32, (obs,)), "action": (F32, (n,)),
        "q_des": (F32, (n,)), "kp": (F32, (n,)), "kd": (F32, (n,)), "tripped": ("uint8", ()),
    }  # fmt: skip


def test_the_schema_is_the_one_logs_were_written_with(spec):
    legacy = legacy_schema(spec.num_joints, len(spec.foot_names), spec.observation.dim)
    assert list(record_schema(spec).items()) == list(legacy.items())  # names, dtypes, shapes and their order


def episode_rows(spec, steps: int) -> list[dict]:
    schema = record_schema(spec)
    rows = []
    for t in range(steps):
        row = {k: np.zeros(shape, dtype) for k, (dtype, shape) in schema.items()}
        row.update(timestamp_us=np.int64(1000 + t), step=np.int32(t), phase=np.uint8(1 if t < steps - 1 else 2))
        row["quaternion"][0] = row["odom_quaternion"][0] = 1.0
        row["q"][:] = spec.default_pose
        rows.append(row)
    return rows


def test_a_log_without_a_schema_version_still_loads(spec, tmp_path):
    """A log folder as the code before StepRecord wrote it: the hand-written schema, no version in the meta."""
    legacy = legacy_schema(spec.num_joints, len(spec.foot_names), spec.observation.dim)
    with LogWriter(tmp_path, legacy, {"robot": spec.name}) as writer:
        writer.start_episode({"first_step": 0})
        for row in episode_rows(spec, 6):
            writer.append(row)
        writer.end_episode("timeout", "limit")
    (episode,) = read_log_folder(tmp_path).episodes
    assert SCHEMA_VERSION_KEY not in episode.meta
    data, report = dataset_from_log_folder(tmp_path, spec, LogDataConfig(critic_fields=[]))
    assert report.transitions == 5 and len(data) == 5  # 5 policy steps, each with its successor


def test_new_logs_record_the_schema_version(spec, tmp_path):
    policy = SimpleNamespace(policy_id="abc", path=tmp_path / "policy.pt", contract={"robot": spec.name})
    meta = run_meta(spec, policy, load_runtime_config("runtime_fast"), load_safety_config(spec.name))
    with RunLog(tmp_path, spec, meta) as log:
        log.writer.start_episode({})
        log.writer.append(StepRecord(**episode_rows(spec, 1)[0]).row())
    (episode,) = read_log_folder(tmp_path).episodes
    assert episode.meta[SCHEMA_VERSION_KEY] == SCHEMA_VERSION == 1
