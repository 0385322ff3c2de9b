"""`real_robot logs FOLDER...`: summarise and check log folders written by real_robot.datalog.

Per folder: episodes, policy steps (as `collect` counts them) and records (soft start and the first damping
step too), robot time, outcomes, safety trips and falls by reason, episodes with NaN/Inf readings (a sensor
fault; offline fine-tuning leaves those records out), interrupted episodes and torn tail bytes (a writer
killed mid-write: not damage), and every damaged file with its byte offset. A folder that holds no episodes
itself but has log folders inside (e.g. data_logs/) is summarised folder by folder. Exit code: 0 all intact, 1 damage found (0 with --skip-damaged, which accepts it),
2 bad input (missing or non-log folder).

`--export mcap|parquet` also writes each intact folder (damaged ones with --skip-damaged: their intact frames)
as one file beside it, `<folder>.mcap` / `<folder>.parquet` (or in `--out DIR`): MCAP with ROS 2 messages for
Foxglove and PlotJuggler, Parquet with one column per scalar element (deploy/log_export.py says what is where).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy.record import Phase
from real_robot.datalog import EPISODE_GLOB, DamagedLogError, LogError, episode_files, read_episode

EXIT_DAMAGED = 1
EXIT_BAD_INPUT = 2
TRIP_OUTCOMES = ("safety_trip", "fall")
EXPORTS = ("mcap", "parquet")


def summarize(folder: str | Path, skip_damaged: bool = False) -> dict:
    """Summary of one log folder. Every damaged file is listed; `passed` is False when there is damage,
    unless `skip_damaged` (the damaged files are then knowingly left out)."""
    files = episode_files(folder)
    episodes, damaged = [], []  # small per-episode summaries: the records are not kept
    for path in tqdm(files, desc=f"checking {folder}", unit="file", leave=False, disable=len(files) < 50):
        try:
            episode = read_episode(path)
        except DamagedLogError as err:
            damaged.append({"file": str(err.path), "offset": err.offset, "problem": err.problem})
            continue
        bad_records, bad_fields = non_finite_records(episode.records)
        episodes.append({
            "file": episode.source, "records": episode.num_records, "policy_steps": policy_steps(episode.records),
            "duration_s": round(episode.duration_s, 3), "outcome": episode.outcome, "reason": episode.reason,
            "dropped_tail_bytes": episode.dropped_tail_bytes, "non_finite_records": bad_records,
            "non_finite_fields": bad_fields,
        })  # fmt: skip
    trips = Counter(f"{e['outcome']}: {e['reason']}" for e in episodes if e["outcome"] in TRIP_OUTCOMES)
    return {
        "folder": str(folder),
        "episodes": len(episodes),
        "policy_steps": sum(e["policy_steps"] for e in episodes),
        "records": sum(e["records"] for e in episodes),
        "duration_s": round(sum(e["duration_s"] for e in episodes), 3),
        "outcomes": dict(sorted(Counter(e["outcome"] for e in episodes).items())),
        "trips": dict(trips.most_common()),
        "dropped_tail_bytes": sum(e["dropped_tail_bytes"] for e in episodes),
        "non_finite": [e for e in episodes if e["non_finite_records"]],
        "damaged": damaged,
        "passed": not damaged or skip_damaged,
        "per_episode": episodes,
    }


def policy_steps(records: dict[str, np.ndarray]) -> int:
    """Records of a policy step that acted (not tripped): what `collect --steps` counts. 0 without those fields."""
    if "phase" not in records or "tripped" not in records:
        return 0
    return int(np.sum((records["phase"] == Phase.POLICY) & (records["tripped"] == 0)))


def non_finite_records(records: dict[str, np.ndarray]) -> tuple[int, list[str]]:
    """How many records hold NaN/Inf in a float field, and which fields (a sensor fault; a missing odometry
    source is logged as NaN too)."""
    bad, fields = np.zeros(len(next(iter(records.values()), [])), dtype=bool), []
    for name, values in records.items():
        if values.dtype.kind == "f" and len(values):
            rows = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if rows.any():
                bad |= rows
                fields.append(name)
    return int(bad.sum()), fields


def log_folders(folder: Path) -> list[Path]:
    """`folder` itself if it holds episodes, else its sub-folders that do (data_logs/ -> one per run)."""
    if folder.is_dir() and not any(folder.glob(EPISODE_GLOB)):
        inner = sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob(EPISODE_GLOB)))
        if inner:
            return inner
    return [folder]


def format_summary(s: dict) -> str:
    status = "OK" if not s["damaged"] else ("DAMAGED (skipped)" if s["passed"] else "DAMAGED")
    if s["non_finite"]:
        status += f", {len(s['non_finite'])} episode(s) with NaN/Inf readings"
    lines = [
        f"{s['folder']}: {status}",
        f"  episodes {s['episodes']}, policy steps {s['policy_steps']} (records {s['records']}, with soft start and "
        f"damping), robot time {s['duration_s']:.1f} s",
        "  outcomes: " + (", ".join(f"{k} {v}" for k, v in s["outcomes"].items()) or "none"),
    ]
    lines += [f"  trip  {count:4d} × {reason}" for reason, count in s["trips"].items()]
    lines += [
        f"  NaN/Inf in {e['file']}: {e['non_finite_records']} of {e['records']} records "
        f"({', '.join(e['non_finite_fields'])}; {e['outcome']}): offline fine-tuning leaves those records out"
        for e in s["non_finite"]
    ]
    if s["dropped_tail_bytes"]:
        lines.append(f"  torn tails: {s['dropped_tail_bytes']} bytes after the last complete record (writer killed)")
    lines += [f"  damaged {d['file']} at byte {d['offset']}: {d['problem']}" for d in s["damaged"]]
    if "export" in s:
        lines.append(f"  export: {s['export']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="real_robot logs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="log folder(s), or a folder of log folders")
    p.add_argument("--skip-damaged", action="store_true",
                   help="accept damaged files (still listed) and exit 0; readers then load every other file")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON instead of text")
    p.add_argument("--export", choices=EXPORTS, help="also write each folder as <folder>.mcap (ROS 2 messages: "
                   "Foxglove, PlotJuggler) or <folder>.parquet (one column per element: pandas, Arrow tools)")
    p.add_argument("--out", type=Path, help="folder for the exported files (default: beside each log folder)")
    return p


def export(summary: dict, fmt: str, out_dir: Path | None) -> None:
    """Write the summarised folder as `fmt` (if it passed the check); record where in the summary."""
    from deploy.log_export import export_mcap, export_parquet  # pandas, pyarrow, mcap: only when asked for

    folder = Path(summary["folder"])
    if not summary["passed"]:
        summary["export"] = "not exported: damaged (--skip-damaged exports the intact frames)"
        return
    out = (out_dir or folder.parent) / f"{folder.name}.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    (export_mcap if fmt == "mcap" else export_parquet)(folder, out, skip_damaged=True)
    summary["export"] = str(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folders = [inner for folder in args.folders for inner in log_folders(folder)]
        summaries = [summarize(folder, args.skip_damaged) for folder in folders]
        if args.export:
            with warnings.catch_warnings():  # the damage is in the summary already
                warnings.simplefilter("ignore")
                for summary in summaries:
                    export(summary, args.export, args.out)
    except (FileNotFoundError, NotADirectoryError, LogError) as err:
        print(f"real_robot logs: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({"passed": all(s["passed"] for s in summaries), "folders": summaries}, indent=2))
    else:
        print("\n".join(format_summary(s) for s in summaries))
    return 0 if all(s["passed"] for s in summaries) else EXIT_DAMAGED


if __name__ == "__main__":
    sys.exit(main())
