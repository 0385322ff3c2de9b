"""Loss-proof episode logs: round trip, a SIGKILLed writer, torn tails, damage, bad records, and `real_robot logs`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from real_robot import datalog
from real_robot.datalog import (
    FRAME,
    INTERRUPTED,
    DamagedLogError,
    LogError,
    LogWriter,
    iter_episodes,
    read_episode,
    read_log_folder,
)
from real_robot.logs_cli import main as logs_main
from real_robot.logs_cli import summarize

REPO = Path(__file__).resolve().parents[1]
SCHEMA = {
    "timestamp_us": ("int64", ()),
    "step": ("int32", ()),
    "tripped": ("bool", ()),
    "q": ("float32", (12,)),
    "foot_force": ("float64", (4,)),
}


def record(step: int) -> dict:
    return {
        "timestamp_us": 1_000_000 + 20_000 * step, "step": step, "tripped": step % 7 == 0,
        "q": np.full(12, 0.1 * step), "foot_force": [float(step), np.nan, 0.0, -1.0],
    }  # fmt: skip


def write_episode(writer: LogWriter, n: int, outcome: str | None = "timeout", first: int = 0) -> Path:
    path = writer.start_episode({"seed": first})
    for step in range(first, first + n):
        writer.append(record(step))
    if outcome is not None:
        writer.end_episode(outcome, reason=f"{outcome} after {n}", counts={"records": n})
    return path


def frame_offsets(path: Path) -> list[int]:
    """Start offset of every frame of an intact file, plus its length."""
    data, offsets = path.read_bytes(), [0]
    while offsets[-1] < len(data):
        offsets.append(offsets[-1] + FRAME.size + FRAME.unpack_from(data, offsets[-1])[2])
    return offsets


# --------------------------------------------------------------------------------------------- round trip
def test_round_trip(tmp_path):
    meta = {"policy_id": "abc123", "robot": {"joints": 12}, "config": {"speed": "low"}}
    with LogWriter(tmp_path, SCHEMA, meta) as writer:
        write_episode(writer, 30, "safety_trip")
        writer.start_episode({"schedule": "walk"})
        many = {name: np.stack([np.asarray(record(s)[name]) for s in range(5)]) for name in SCHEMA}
        writer.append_many(many)
        writer.append(record(5))
        writer.end_episode("operator_stop", "space bar")
        write_episode(writer, 0, "fall")  # an episode with no records is still an episode
    log = read_log_folder(tmp_path)
    assert [e.path.name for e in log] == ["episode_000000.g1log", "episode_000001.g1log", "episode_000002.g1log"]
    first, second, empty = log.episodes
    assert first.outcome == "safety_trip" and first.reason == "safety_trip after 30" and first.counts == {"records": 30}
    assert first.meta == meta and first.info == {"seed": 0} and second.info == {"schedule": "walk"}
    assert first.records["step"].tolist() == list(range(30)) and first.records["q"].shape == (30, 12)
    assert first.records["q"].dtype == np.float32 and first.records["tripped"].dtype == bool
    np.testing.assert_array_equal(first.records["foot_force"][3], [3.0, np.nan, 0.0, -1.0])  # NaN is kept as data
    assert first.duration_s == pytest.approx(29 * 0.02) and first.dropped_tail_bytes == 0
    assert second.records["step"].tolist() == list(range(6)) and second.outcome == "operator_stop"
    assert len(empty) == 0 and empty.outcome == "fall" and len(log) == 3 and log.num_records == 36
    assert not log.damaged and [e.source for e in iter_episodes(tmp_path)] == [e.source for e in log]
    # Reopening the folder numbers on; never overwrites.
    with LogWriter(tmp_path, SCHEMA, meta) as writer:
        assert write_episode(writer, 2).name == "episode_000003.g1log"


def test_fsync_at_least_every_interval_and_at_end(tmp_path, monkeypatch):
    clock = [0.0]
    writer = LogWriter(tmp_path, SCHEMA, fsync_interval_s=1.0, clock=lambda: clock[0])
    writer.start_episode()
    synced = []
    monkeypatch.setattr(datalog.os, "fsync", lambda fd: synced.append(clock[0]))
    for step in range(20):
        clock[0] += 0.25
        writer.append(record(step))
    assert synced == [1.0, 2.0, 3.0, 4.0, 5.0]  # once a second of the (fake) clock: every 4th record
    writer.end_episode("timeout")
    assert synced == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0]  # and at the end


# --------------------------------------------------------------------------------------------- killed writer
CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from real_robot.datalog import LogWriter
    schema = {"timestamp_us": ("int64", ()), "step": ("int64", ()), "q": ("float32", (12,))}
    with LogWriter(sys.argv[1], schema, {"who": "child"}) as log:
        log.start_episode()
        step = 0
        while True:
            stamp = time.monotonic_ns() // 1000
            log.append({"timestamp_us": stamp, "step": step, "q": np.full(12, step, np.float32)})
            if step % 500 == 0:
                print(step, stamp, flush=True)  # reported only after append() returned
            step += 1
""")


def test_sigkilled_writer_loses_nothing_it_appended(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        deadline, first_stamp = time.monotonic() + 20, None
        step = stamp = -1
        while time.monotonic() < deadline:  # let it write for 1.5 s of its clock: past at least one fsync
            line = child.stdout.readline()
            assert line, "the writer died"
            step, stamp = map(int, line.split())
            first_stamp = stamp if first_stamp is None else first_stamp
            if stamp - first_stamp >= 1_500_000:
                break
    finally:
        child.kill()  # SIGKILL, at an arbitrary point of the write loop
        child.wait()
    assert stamp - first_stamp >= 1_500_000, "the writer was too slow to report"
    episode = read_episode(tmp_path / "episode_000000.g1log")
    records = episode.records
    assert episode.outcome == INTERRUPTED and episode.meta == {"who": "child"}
    assert len(records["step"]) > step and records["timestamp_us"][step] == stamp  # every reported record is there
    np.testing.assert_array_equal(records["step"], np.arange(len(records["step"])))  # and nothing is missing
    assert np.all(np.diff(records["timestamp_us"]) >= 0)


def test_torn_tail_loads_the_intact_prefix(tmp_path):
    with LogWriter(tmp_path, SCHEMA) as writer:
        path = write_episode(writer, 4, "timeout")
    data, offsets = path.read_bytes(), frame_offsets(path)
    header_end, footer_start = offsets[1], offsets[-2]
    torn = tmp_path / "torn"
    torn.mkdir()
    for cut in range(header_end, len(data)):  # every possible end of a killed write
        (torn / path.name).write_bytes(data[:cut])
        episode = read_episode(torn / path.name)
        complete = sum(1 for end in offsets[2:-1] if end <= cut)  # record frames wholly before the cut
        assert episode.outcome == INTERRUPTED and episode.num_records == complete
        assert episode.records["step"].tolist() == list(range(complete))
        assert episode.dropped_tail_bytes == cut - offsets[1 + complete]
    assert offsets[-2] == footer_start and read_episode(path).outcome == "timeout"


@pytest.mark.parametrize("tail", [b"half", b"zeros"])
def test_a_torn_tail_is_not_damage_for_the_folder(tmp_path, tail):
    with LogWriter(tmp_path, SCHEMA) as writer:
        write_episode(writer, 3, "timeout")
        path = write_episode(writer, 5, outcome=None)
    with open(path, "ab") as f:  # half a frame, as a kill leaves it; or zeros, as a power cut may
        f.write(datalog.encode_frame(datalog.RECORDS, b"\x01" * 40)[:30] if tail == b"half" else bytes(30))
    log = read_log_folder(tmp_path)
    assert [e.outcome for e in log] == ["timeout", INTERRUPTED] and log.episodes[1].num_records == 5
    assert log.episodes[1].dropped_tail_bytes == 30 and not log.damaged


@pytest.mark.parametrize("last_frame", ["footer", "record"])
def test_a_corrupt_last_frame_is_damage_not_a_torn_tail(tmp_path, last_frame):
    """A kill leaves a frame cut short; a complete last frame with a bad CRC (or garbage) is damage."""
    with LogWriter(tmp_path, SCHEMA) as writer:
        path = write_episode(writer, 5, "fall" if last_frame == "footer" else None)
    offset = frame_offsets(path)[-2]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedLogError, match=f"offset {offset}: CRC mismatch"):
        read_episode(path)
    path.write_bytes(bytes(data[:offset]) + b"garbage")
    with pytest.raises(DamagedLogError, match=f"offset {offset}: no frame marker"):
        read_episode(path)


# --------------------------------------------------------------------------------------------- damage
@pytest.mark.parametrize("where", ["payload", "length", "magic", "inserted"])
def test_damage_in_the_middle_names_file_and_offset(tmp_path, where):
    with LogWriter(tmp_path, SCHEMA) as writer:
        for i in range(3):
            write_episode(writer, 40, "timeout", first=100 * i)
    path = tmp_path / "episode_000001.g1log"
    offset = frame_offsets(path)[1 + 20]  # record frame 20
    data = bytearray(path.read_bytes())
    if where == "inserted":
        data[offset:offset] = b"garbage"
    else:
        data[offset + {"payload": FRAME.size + 3, "length": 6, "magic": 1}[where]] ^= 0x40
    path.write_bytes(bytes(data))

    with pytest.raises(DamagedLogError, match=f"{path} at byte offset {offset}:") as err:
        read_log_folder(tmp_path)
    assert err.value.path == path and err.value.offset == offset
    with pytest.warns(UserWarning, match="skipping damaged log"):
        log = read_log_folder(tmp_path, skip_damaged=True)
    # every intact frame stays: those before the damage and, from the next valid frame on, those after it
    kept = list(range(100, 140)) if where == "inserted" else list(range(100, 120)) + list(range(121, 140))
    assert [e.source for e in log] == [f"episode_00000{i}.g1log" for i in range(3)]
    assert log.episodes[1].records["step"].tolist() == kept and log.episodes[1].outcome == "timeout"
    assert log.episodes[2].records["step"].tolist() == list(range(200, 240))
    assert [(d.path, d.offset) for d in log.damaged] == [(path, offset)]
    assert "dropped" in log.damaged[0].problem
    with pytest.warns(UserWarning):
        assert len(list(iter_episodes(tmp_path, skip_damaged=True))) == 3


def test_damaged_header_and_frames_after_the_footer(tmp_path):
    with LogWriter(tmp_path, SCHEMA) as writer:
        first = write_episode(writer, 3)
        second = write_episode(writer, 3)
    data = bytearray(first.read_bytes())
    data[FRAME.size + 5] ^= 0x01
    first.write_bytes(bytes(data))
    with pytest.raises(DamagedLogError, match="offset 0"):
        read_episode(first)
    with open(second, "ab") as f:
        f.write(datalog.encode_frame(datalog.RECORDS, bytes(LogWriter(tmp_path, SCHEMA).dtype.itemsize)))
    with pytest.raises(DamagedLogError, match="frame after the episode footer"):
        read_episode(second)


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("q"), r"missing \['q'\]"),
        (lambda r: r.update(lidar=1.0), r"unknown \['lidar'\]"),
        (lambda r: r.update(q=np.zeros(11)), "'q': shape"),
        (lambda r: r.update(q=0.0), "'q': shape"),  # a scalar must not broadcast silently
        (lambda r: r.update(step=1.5), "'step': float64 values do not fit"),
        (lambda r: r.update(timestamp_us=np.array([1, 2])), "'timestamp_us': shape"),
    ],
)
def test_wrong_fields_are_rejected(tmp_path, change, message):
    with LogWriter(tmp_path, SCHEMA) as writer:
        writer.start_episode()
        bad = record(1)
        change(bad)
        with pytest.raises(ValueError, match=message):
            writer.append(bad)
        writer.append(record(1))  # a rejected record leaves nothing behind
        writer.end_episode("timeout")
    assert read_log_folder(tmp_path).num_records == 1


def test_misuse_and_bad_folders_give_clear_errors(tmp_path):
    with pytest.raises(LogError, match="must hold 'timestamp_us'"):
        LogWriter(tmp_path / "a", {"q": ("float32", (12,))})
    with pytest.raises(LogError, match="numeric or bool"):
        LogWriter(tmp_path / "a", {**SCHEMA, "name": ("U8", ())})
    writer = LogWriter(tmp_path / "a", SCHEMA)
    with pytest.raises(RuntimeError, match="start_episode"):
        writer.append(record(0))
    writer.start_episode()
    with pytest.raises(RuntimeError, match="still open"):
        writer.start_episode()
    with pytest.raises(ValueError, match="unknown episode outcome 'exploded'"):
        writer.end_episode("exploded")
    writer.close()
    assert read_log_folder(tmp_path / "a").episodes[0].outcome == INTERRUPTED  # closed without a footer
    with pytest.raises(LogError, match="another schema"):
        LogWriter(tmp_path / "a", {**SCHEMA, "extra": ("float32", ())})
    with pytest.raises(FileNotFoundError, match="log folder not found"):
        read_log_folder(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    with pytest.raises(LogError, match="is not a log folder"):
        read_log_folder(tmp_path / "notes")
    LogWriter(tmp_path / "fresh", SCHEMA).close()
    with pytest.raises(LogError, match="no episodes yet"):
        read_log_folder(tmp_path / "fresh")


# --------------------------------------------------------------------------------------------- real_robot logs
def test_logs_command_summarises_and_checks(tmp_path, capsys):
    run = tmp_path / "run1"
    with LogWriter(run, SCHEMA, {"policy_id": "p"}) as writer:
        write_episode(writer, 50, "timeout")
        write_episode(writer, 10, "safety_trip")
        write_episode(writer, 5, outcome=None)
    summary = summarize(run)
    assert summary["episodes"] == 3 and summary["records"] == 65 and summary["passed"] and not summary["damaged"]
    assert summary["outcomes"] == {"interrupted": 1, "safety_trip": 1, "timeout": 1}
    assert summary["trips"] == {"safety_trip: safety_trip after 10": 1}
    assert summary["duration_s"] == pytest.approx((49 + 9 + 4) * 0.02)
    assert logs_main([str(tmp_path)]) == 0  # a folder of log folders
    assert "run1: OK" in capsys.readouterr().out

    damaged = run / "episode_000001.g1log"
    data = bytearray(damaged.read_bytes())
    data[frame_offsets(damaged)[3] + FRAME.size] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert logs_main([str(run), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["passed"] and report["folders"][0]["episodes"] == 2
    assert report["folders"][0]["damaged"][0]["file"] == str(damaged)
    assert logs_main([str(run), "--skip-damaged"]) == 0
    assert "DAMAGED (skipped)" in capsys.readouterr().out
    assert logs_main([str(tmp_path / "missing")]) == 2
    assert "log folder not found" in capsys.readouterr().err
