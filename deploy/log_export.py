"""Logs in the tools people use: `load_log` (a pandas DataFrame), Parquet and MCAP (Foxglove, PlotJuggler).

The native g1log files (real_robot/datalog.py) stay the record; these are views of them, made on demand
(`real_robot logs FOLDER --export mcap|parquet`). A table has one column per scalar element, named
`<field>.<element>` from the record's labels (deploy/record.py, the robot spec's joint and foot names), e.g.
`q.FL_hip_joint`, `quaternion.w`, `command.vx`, `obs.gyro_2`; scalar fields keep their name (`step`, `phase`).

    from deploy.log_export import load_log
    df = load_log("data_logs/collect_20261205-101500")      # a log folder, or one episode_*.g1log file
    df[df.episode == 0].plot(x="robot_tick_us", y="q.FL_calf_joint")
    df.attrs["episodes"]   # per episode: index, file, outcome, reason, info;  df.attrs["meta"]: the log meta

MCAP channels (message times are the host clock of each record as Unix time; one file per log folder):
    /joint_states   sensor_msgs/JointState      q, dq, tau_est by joint name    every record
    /joint_targets  sensor_msgs/JointState      q_des (the PD target sent)      every record
    /imu            sensor_msgs/Imu             quaternion, gyro, accelerometer every record
    /command        geometry_msgs/TwistStamped  the policy's command            every record
    /odom, /tf      nav_msgs/Odometry, tf2_msgs/TFMessage (odom -> base)         records with odometry
    /diagnostics    diagnostic_msgs/DiagnosticArray: the safety state           1 s of robot time, and on change
    /log_record     JSON: every field no ROS message above carries (step, phase, action, obs, foot_force, ...)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deploy import ros_messages as ros
from deploy.record import element_labels
from real_robot.datalog import Episode, iter_episodes, read_episode
from robot_spec.spec import load_robot

ROS_FIELDS = {  # the record fields a ROS 2 channel of the MCAP export carries; /log_record holds the rest
    "q", "dq", "tau_est", "q_des", "quaternion", "gyro", "accelerometer", "command",
    "odom_position", "odom_quaternion", "odom_lin_vel", "odom_ang_vel",
}  # fmt: skip
JSON_TOPIC = "/log_record"


# --------------------------------------------------------------------------------------------- tables
def episodes(path: str | Path, skip_damaged: bool = False) -> Iterator[Episode]:
    """The episodes of a log folder, or the one episode file `path`."""
    path = Path(path)
    if path.is_file():
        yield read_episode(path)
    else:
        yield from iter_episodes(path, skip_damaged)


def labels_of(episode: Episode) -> dict[str, list[str]]:
    """Element names of each field: the record's labels for the log's robot; indices where they do not fit."""
    robot = episode.meta.get("robot")
    known = element_labels(load_robot(robot)) if robot else {}
    labels = {}
    for name, values in episode.records.items():
        size = int(np.prod(values.shape[1:], dtype=int)) if values.ndim > 1 else 0
        names = known.get(name, [])
        labels[name] = names if len(names) == size else [str(i) for i in range(size)]
    return labels


def flat_columns(episode: Episode, labels: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """One column per scalar element: `field` for a scalar field, `field.label` for each vector element."""
    columns = {}
    for name, values in episode.records.items():
        if not labels[name]:
            columns[name] = values
            continue
        flat = values.reshape(len(values), -1)
        for i, label in enumerate(labels[name]):
            columns[f"{name}.{label}"] = flat[:, i]
    return columns


def load_log(path: str | Path, skip_damaged: bool = False):
    """A log folder (or one episode file) as a pandas DataFrame: one row per record, an `episode` column and one
    column per scalar element (see the module notes), in the log's dtypes. `attrs["episodes"]` lists each
    episode's index, file, outcome, reason and info; `attrs["meta"]` is the log meta (policy, configs)."""
    import pandas as pd

    frames, summary, meta = [], [], {}
    for episode in episodes(path, skip_damaged):
        columns = flat_columns(episode, labels_of(episode))
        frames.append(pd.DataFrame({"episode": np.full(episode.num_records, episode.index, np.int32), **columns}))
        summary.append({"index": episode.index, "file": episode.source, "outcome": episode.outcome,
                        "reason": episode.reason, "info": episode.info})  # fmt: skip
        meta = meta or episode.meta
    table = pd.concat(frames, ignore_index=True)
    table.attrs = {"episodes": summary, "meta": meta}
    return table


def export_parquet(folder: str | Path, out: str | Path, skip_damaged: bool = False) -> Path:
    """`load_log(folder)` as one Parquet file (pyarrow); the attrs travel in its pandas metadata."""
    out = Path(out)
    load_log(folder, skip_damaged).to_parquet(out, engine="pyarrow", index=False)
    return out


# --------------------------------------------------------------------------------------------- MCAP
def unix_ns(episode: Episode, timestamp_us: int) -> int:
    """A record's host monotonic stamp as Unix time (ns), by the episode header's pair of clocks."""
    return round(episode.started_unix * 1e9) + (int(timestamp_us) - episode.started_us) * 1000


def _json_value(value: float | int):
    """JSON has no NaN or infinity: a missing reading is null."""
    value = value.item()
    return value if not isinstance(value, float) or math.isfinite(value) else None


def json_record(episode: Episode, labels: dict[str, list[str]], i: int) -> dict:
    """The fields of record `i` that no ROS message carries, nested by element name."""
    record = {}
    for name, values in episode.records.items():
        if name in ROS_FIELDS:
            continue
        if labels[name]:
            flat = values[i].reshape(-1)
            record[name] = {label: _json_value(flat[j]) for j, label in enumerate(labels[name])}
        else:
            record[name] = _json_value(values[i])
    return record


def json_schema(episode: Episode, labels: dict[str, list[str]]) -> dict:
    number = {"type": ["number", "null"]}
    properties = {
        name: {"type": "object", "properties": {label: number for label in labels[name]}} if labels[name] else number
        for name in episode.records if name not in ROS_FIELDS
    }  # fmt: skip
    return {"type": "object", "title": "g1log record", "properties": properties}


def ros_channel_messages(row: dict, stamp_ns: int, joint_names: list[str], trip: str,
                         diagnostics: ros.DiagnosticsSchedule) -> Iterator[tuple[str, str, dict]]:  # fmt: skip
    """(topic, ROS type, message) for one record."""
    yield "/joint_states", "sensor_msgs/JointState", ros.joint_state(row, stamp_ns, joint_names)
    yield "/joint_targets", "sensor_msgs/JointState", ros.joint_targets(row, stamp_ns, joint_names)
    yield "/imu", "sensor_msgs/Imu", ros.imu(row, stamp_ns)
    yield "/command", "geometry_msgs/TwistStamped", ros.command(row, stamp_ns)
    if ros.has_odometry(row):
        yield "/odom", "nav_msgs/Odometry", ros.odometry(row, stamp_ns)
        yield "/tf", "tf2_msgs/TFMessage", ros.transform(row, stamp_ns)
    if diagnostics.due(row, trip):
        yield "/diagnostics", "diagnostic_msgs/DiagnosticArray", ros.diagnostics(row, stamp_ns, trip)


def export_mcap(folder: str | Path, out: str | Path, skip_damaged: bool = False) -> dict[str, int]:
    """A log folder (or one episode file) as one MCAP file (see the module notes); messages per topic."""
    from mcap.well_known import MessageEncoding, SchemaEncoding
    from mcap_ros2.writer import Writer

    counts: dict[str, int] = {}
    schemas, json_channel = {}, None
    with open(out, "wb") as stream, Writer(stream) as writer:
        mcap = writer._writer  # the plain MCAP writer underneath, for the one JSON channel
        for episode in episodes(folder, skip_damaged):
            labels = labels_of(episode)
            joint_names = labels.get("q") or []
            if json_channel is None:
                schema_id = mcap.register_schema("g1log_record", SchemaEncoding.JSONSchema,
                                                 json.dumps(json_schema(episode, labels)).encode())  # fmt: skip
                json_channel = mcap.register_channel(JSON_TOPIC, MessageEncoding.JSON, schema_id)
                writer.add_metadata("log_meta", {"folder": str(folder), "meta": json.dumps(episode.meta)})
            writer.add_metadata(f"episode_{episode.index:06d}", {
                "file": episode.source, "outcome": episode.outcome, "reason": episode.reason,
                "info": json.dumps(episode.info),
            })  # fmt: skip
            diagnostics = ros.DiagnosticsSchedule()
            last = episode.num_records - 1
            for i in range(episode.num_records):
                row = {name: values[i] for name, values in episode.records.items()}
                stamp_ns = unix_ns(episode, row["timestamp_us"])
                trip = episode.reason if i == last and row["tripped"] else ""  # the footer names the trip
                for topic, datatype, message in ros_channel_messages(row, stamp_ns, joint_names, trip, diagnostics):
                    if datatype not in schemas:
                        schemas[datatype] = writer.register_msgdef(datatype.replace("/", "/msg/"), ros.msgdef(datatype))
                    writer.write_message(topic, schemas[datatype], message, log_time=stamp_ns, publish_time=stamp_ns)
                    counts[topic] = counts.get(topic, 0) + 1
                mcap.add_message(json_channel, log_time=stamp_ns, publish_time=stamp_ns, sequence=i,
                                 data=json.dumps(json_record(episode, labels, i)).encode())  # fmt: skip
                counts[JSON_TOPIC] = counts.get(JSON_TOPIC, 0) + 1
    return counts
