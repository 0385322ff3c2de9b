"""Log writer and reader speed (real_robot/datalog.py) with a collector-like record, fsync policy on.

Writes one episode record by record (`append`, the 50 Hz path), one with `append_many` batches (faster than
real-time collection), then reads the folder back. The record holds what the collector logs: timestamps,
joint q/dq/tau_est, IMU, foot force, odometry, command, policy observation and action, PD targets, safety.
Sizes come from the robot spec. Figures: records/s, and the writer's share of one 50 Hz control period.

    python benchmarks/datalog_throughput.py [--records 50000] [--batch 100] [--dir /path/on/the/log/disk]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import save  # noqa: E402
from real_robot.datalog import LogWriter, read_log_folder  # noqa: E402
from robot_spec import load_robot  # noqa: E402


def collector_schema(spec) -> dict:
    j, feet, obs = spec.num_joints, len(spec.foot_names), spec.observation.dim
    return {
        "timestamp_us": ("int64", ()), "robot_tick_us": ("int64", ()), "step": ("int64", ()), "phase": ("int8", ()),
        "q": ("float32", (j,)), "dq": ("float32", (j,)), "tau_est": ("float32", (j,)),
        "quaternion": ("float32", (4,)), "gyro": ("float32", (3,)), "accelerometer": ("float32", (3,)),
        "foot_force": ("float32", (feet,)), "odom_position": ("float32", (3,)), "odom_lin_vel": ("float32", (3,)),
        "odom_ang_vel": ("float32", (3,)), "command": ("float32", (3,)), "obs": ("float32", (obs,)),
        "action": ("float32", (j,)), "q_des": ("float32", (j,)), "kp": ("float32", (j,)), "kd": ("float32", (j,)),
        "tripped": ("bool", ()), "trip_count": ("int32", ()),
    }  # fmt: skip


def random_records(schema: dict, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float64/int64 values, as the runtime produces them (the writer casts to the schema)."""
    out = {}
    for name, (dtype, shape) in schema.items():
        values = rng.normal(size=(n, *shape))
        out[name] = {"f": values, "b": values > 0}.get(np.dtype(dtype).kind, np.round(values).astype(np.int64))
    out["timestamp_us"] = np.arange(n, dtype=np.int64) * 20_000
    return out


def bench_append(folder: Path, schema: dict, rows: dict, fsync_s: float) -> float:
    n = len(rows["timestamp_us"])
    with LogWriter(folder, schema, {"bench": "append"}, fsync_interval_s=fsync_s) as log:
        log.start_episode()
        records = [{name: rows[name][i] for name in schema} for i in range(n)]  # built outside the timed loop
        start = time.perf_counter()
        for record in tqdm(records, desc="append", unit="rec", mininterval=1.0):
            log.append(record)
        log.end_episode("timeout")
        return n / (time.perf_counter() - start)


def bench_append_many(folder: Path, schema: dict, rows: dict, batch: int, fsync_s: float) -> float:
    n = len(rows["timestamp_us"])
    with LogWriter(folder, schema, {"bench": "append_many"}, fsync_interval_s=fsync_s) as log:
        log.start_episode()
        start = time.perf_counter()
        for i in tqdm(range(0, n, batch), desc=f"append_many({batch})", unit="batch", mininterval=1.0):
            log.append_many({name: rows[name][i : i + batch] for name in schema})
        log.end_episode("timeout")
        return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000, help="records per episode (default: 50000)")
    parser.add_argument("--batch", type=int, default=100, help="records per append_many call (default: 100)")
    parser.add_argument("--fsync-interval", type=float, default=1.0, help="seconds between fsyncs (default: 1)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp folder); use the log disk")
    args = parser.parse_args(argv)
    if args.records < 1 or args.batch < 1:
        parser.error("--records and --batch must be positive")

    spec = load_robot("go1")
    schema = collector_schema(spec)
    rows = random_records(schema, args.records, np.random.default_rng(0))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="datalog_bench_") as tmp:
        folder = Path(tmp) / "logs"
        append_rate = bench_append(folder, schema, rows, args.fsync_interval)
        many_rate = bench_append_many(folder, schema, rows, args.batch, args.fsync_interval)
        file_bytes = sum(p.stat().st_size for p in folder.glob("*.g1log"))
        start = time.perf_counter()
        log = read_log_folder(folder)
        read_s = time.perf_counter() - start
        assert log.num_records == 2 * args.records
    record_bytes = int(sum(np.dtype(t).itemsize * int(np.prod(s)) for t, s in schema.values()))
    policy_period_s = 1.0 / spec.control.policy_hz
    result = {
        "records_per_episode": args.records,
        "record_bytes": record_bytes,
        "fsync_interval_s": args.fsync_interval,
        "append_records_per_s": round(append_rate),
        "append_us_per_record": round(1e6 / append_rate, 1),
        "append_share_of_50hz_period": round(1 / append_rate / policy_period_s, 5),
        f"append_many_{args.batch}_records_per_s": round(many_rate),
        "read_records_per_s": round(2 * args.records / read_s),
        "read_mb_per_s": round(file_bytes / read_s / 1e6, 1),
        "bytes_per_record_on_disk": round(file_bytes / (2 * args.records), 1),
    }
    for key, value in result.items():
        print(f"{key:32s} {value}")
    save("datalog_throughput", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
