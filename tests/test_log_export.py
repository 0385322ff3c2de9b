"""Logs in the tools people use: the MCAP export read back by the `mcap` reader (channels, message counts, values),
the Parquet export and `load_log` in pandas (one column per scalar element, values equal to the log), and
`real_robot logs --export`. The log is written here with known values: a trip, a phase change, missing odometry.
"""

import json
import re
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mcap.decoder import DecoderFactory as McapDecoderFactory
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from deploy import ros_messages
from deploy.log_export import ROS_FIELDS, export_mcap, load_log, unix_ns
from deploy.record import record_schema
from real_robot.datalog import LogWriter, read_log_folder
from real_robot.logs_cli import main as logs_main

STEP_US = 20_000
TRIP_REASON = "orientation: roll 1.234 outside [-0.8, 0.8]"


def write_log(folder: Path, spec) -> Path:
    """Episode 0: 150 records (3 s of robot time), soft start then the policy from record 60, no odometry for the
    first 20 records, a NaN foot force, tripped on its last record. Episode 1: 80 records, a timeout."""
    schema, rng = record_schema(spec), np.random.default_rng(0)
    with LogWriter(folder, schema, {"robot": spec.name, "policy_id": "test"}) as log:
        for n, outcome, reason, start_us in ((150, "safety_trip", TRIP_REASON, 10_000_000),
                                              (80, "timeout", "schedule done", 20_000_000)):  # fmt: skip
            log.start_episode({"schedule": "walk"})
            rows = {name: rng.standard_normal((n, *shape)).astype(dtype) for name, (dtype, shape) in schema.items()}
            rows.update(timestamp_us=start_us + STEP_US * np.arange(n), robot_tick_us=STEP_US * np.arange(n),
                        step=np.arange(n, dtype=np.int32), phase=np.zeros(n, np.uint8), tripped=np.zeros(n, np.uint8))
            if outcome == "safety_trip":
                rows["phase"][60:] = 1
                rows["tripped"][-1] = 1
                rows["odom_position"][:20] = np.nan
                rows["foot_force"][5, 2] = np.nan
            log.append_many(rows)
            log.end_episode(outcome, reason)
    return folder


@pytest.fixture()
def log_folder(tmp_path, spec):
    return write_log(tmp_path / "run1", spec)


class JsonDecoder(McapDecoderFactory):
    def decoder_for(self, message_encoding, schema):
        return json.loads if message_encoding == "json" else None


def read_mcap(path: Path):
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory(), JsonDecoder()])
        summary = reader.get_summary()
        counts = {c.topic: summary.statistics.channel_message_counts[c.id] for c in summary.channels.values()}
        schemas = {c.topic: summary.schemas[c.schema_id] for c in summary.channels.values()}
        messages = {}
        for _schema, channel, message, decoded in reader.iter_decoded_messages():
            messages.setdefault(channel.topic, []).append((message.log_time, decoded))
    return counts, schemas, messages


def test_mcap_export_reads_back_with_the_expected_channels_counts_and_values(log_folder, tmp_path, spec):
    written = export_mcap(log_folder, tmp_path / "run1.mcap")
    counts, schemas, messages = read_mcap(tmp_path / "run1.mcap")
    records = 150 + 80
    # Diagnostics: ep 0 at records 0, 50 (1 s), 60 (policy), 110 (1 s later), 149 (tripped); ep 1 at 0 and 50.
    assert counts == written == {
        "/joint_states": records, "/joint_targets": records, "/imu": records, "/command": records,
        "/odom": records - 20, "/tf": records - 20, "/diagnostics": 7, "/log_record": records,
    }  # fmt: skip
    joint_schema = schemas["/joint_states"]
    assert (joint_schema.name, joint_schema.encoding) == ("sensor_msgs/msg/JointState", "ros2msg")
    assert schemas["/log_record"].encoding == "jsonschema"

    episodes = read_log_folder(log_folder).episodes
    first = episodes[0]
    q, quat, odom = first.records["q"], first.records["quaternion"], first.records["odom_position"]
    log_times = [t for t, _ in messages["/joint_states"][:150]]
    assert log_times == [unix_ns(first, t) for t in first.records["timestamp_us"]]
    joints = [m for _, m in messages["/joint_states"][:150]]
    assert all(m.name == spec.joint_names for m in joints)
    np.testing.assert_array_equal([m.position for m in joints], q)
    np.testing.assert_array_equal([m.effort for m in joints], first.records["tau_est"])
    imu = messages["/imu"][7][1]
    assert (imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z) == tuple(quat[7])
    odometry = messages["/odom"][0][1]  # the first record with odometry is record 20
    assert (odometry.header.frame_id, odometry.child_frame_id) == ("odom", "base")
    assert (odometry.pose.pose.position.x, odometry.twist.twist.angular.z) == (
        odom[20, 0], first.records["odom_ang_vel"][20, 2])
    transform = messages["/tf"][0][1].transforms[0]
    assert transform.transform.translation.y == odom[20, 1] and transform.child_frame_id == "base"

    diagnostics = [m.status[0] for _, m in messages["/diagnostics"]]
    steps = [int(dict((kv.key, kv.value) for kv in s.values)["step"]) for s in diagnostics]
    assert steps == [0, 50, 60, 110, 149, 0, 50]
    assert [s.level for s in diagnostics] == [0, 0, 0, 0, 2, 0, 0]
    assert TRIP_REASON in diagnostics[4].message

    record = messages["/log_record"][5][1]
    assert not ROS_FIELDS & set(record)
    assert record["foot_force"]["RL_foot"] is None  # NaN: JSON null
    assert record["action"]["FR_calf_joint"] == pytest.approx(float(first.records["action"][5, 5]))
    assert record["step"] == 5 and record["obs"]["gyro_1"] == pytest.approx(float(first.records["obs"][5, 4]))


def test_parquet_export_has_one_column_per_element_with_the_logs_values(log_folder, tmp_path, spec, capsys):
    assert logs_main([str(log_folder), "--export", "parquet", "--out", str(tmp_path / "out")]) == 0
    assert "export: " in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "out" / "run1.parquet")
    schema = record_schema(spec)
    assert len(table.columns) == 1 + sum(int(np.prod(shape)) for _dtype, shape in schema.values())  # + episode
    assert len(table) == 230 and table["episode"].tolist() == [0] * 150 + [1] * 80
    for column in ("q.FL_hip_joint", "dq.RR_calf_joint", "quaternion.w", "command.yaw_rate", "foot_force.RL_foot",
                   "obs.last_action_11", "odom_position.z", "step", "phase", "tripped"):  # fmt: skip
        assert column in table.columns
    episodes = read_log_folder(log_folder).episodes
    for episode in episodes:
        rows = table[table.episode == episode.index]
        for name, values in episode.records.items():
            flat = values.reshape(len(values), -1)
            columns = [name] if values.ndim == 1 else [c for c in table.columns if c.startswith(f"{name}.")]
            np.testing.assert_array_equal(rows[columns].to_numpy(), flat)
            assert all(rows[c].dtype == values.dtype for c in columns)
    np.testing.assert_array_equal(table["q.RL_thigh_joint"].to_numpy()[:150], episodes[0].records["q"][:, 7])
    assert table.attrs["episodes"][0]["outcome"] == "safety_trip" and table.attrs["meta"]["policy_id"] == "test"


def test_load_log_reads_a_folder_or_one_episode_file(log_folder):
    table = load_log(log_folder)
    assert table.shape[0] == 230 and table.attrs["episodes"][1]["reason"] == "schedule done"
    one = load_log(log_folder / "episode_000001.g1log")
    assert len(one) == 80 and (one["episode"] == 1).all()
    pd.testing.assert_frame_equal(one.reset_index(drop=True), table[table.episode == 1].reset_index(drop=True))


def test_export_of_a_damaged_folder_needs_skip_damaged(log_folder, tmp_path, capsys):
    path = log_folder / "episode_000001.g1log"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert logs_main([str(log_folder), "--export", "mcap", "--out", str(tmp_path / "out")]) == 1
    assert "not exported: damaged" in capsys.readouterr().out and not (tmp_path / "out" / "run1.mcap").exists()
    assert logs_main([str(log_folder), "--export", "mcap", "--out", str(tmp_path / "out"), "--skip-damaged"]) == 0
    counts, _schemas, _messages = read_mcap(tmp_path / "out" / "run1.mcap")
    assert counts["/joint_states"] == 150  # episode 0; episode 1 was one frame of records, now damaged


def msg_fields(text: str, package: str) -> list[tuple[str, str]]:
    """(type, name) of each field of a .msg text, nested types package-qualified, comments and constants dropped."""
    fields = []
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if len(line.split()) < 2 or "=" in line:  # blank, or a constant
            continue
        kind, name = line.split()[:2]
        base = re.sub(r"\[.*", "", kind)
        if base[0].isupper() and "/" not in base:
            kind = f"{package}/{kind}"
        fields.append((kind, name))
    return fields


def test_the_mcap_message_definitions_are_the_ros_packages_own():
    """MSGDEFS (the schemas the export writes) against the .msg files the message wheels install (ros2 extra)."""
    pytest.importorskip("sensor_msgs.msg", reason="the ros2 extra")
    share = Path(sysconfig.get_path("data")) / "share"
    checked = 0
    for datatype, text in ros_messages.MSGDEFS.items():
        package, name = datatype.split("/")
        installed = share / package / "msg" / f"{name}.msg"
        if not installed.is_file():
            assert package == "tf2_msgs", f"{installed} missing"  # tf2_msgs: no wheel on the package index
            continue
        assert msg_fields(text, package) == msg_fields(installed.read_text(), package), datatype
        checked += 1
    assert checked == len(ros_messages.MSGDEFS) - 1
