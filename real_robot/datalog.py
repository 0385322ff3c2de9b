"""Append-only, loss-proof episode logs: one `.g1log` file per episode, fixed-size binary records.

Robot time is the scarcest resource, so the format is built to lose at most the last second:
- every `append` is one write(2) of a whole frame straight to the OS (no user-space buffer): a killed writer
  (SIGKILL, crash) loses nothing it appended; `os.fsync` runs at least every `fsync_interval_s` (default 1 s)
  on append and at `end_episode`/`close`, so a power cut loses at most that interval;
- an episode file appears only complete with its header (written to a temp file, fsynced, renamed);
- a file without a footer (writer killed) loads as outcome "interrupted" with every complete record, and a
  torn last frame (a frame cut short, or zeros left by a power cut) is just the interrupted tail, its size
  reported in `Episode.dropped_tail_bytes`: neither is damage;
- anything else is damage (a CRC mismatch, even in the last frame; garbage; frames out of order): it raises
  `DamagedLogError` naming the file and the byte offset; with `skip_damaged=True` the damage is reported
  (warning + `LogFolder.damaged`, by file and offset) and every intact frame is kept: those before the
  damage, and those after it from the next valid frame on (`salvage_episode`). Only a damaged header loses
  the file.

Schema: field name -> (numpy dtype, shape), e.g. {"timestamp_us": ("int64", ()), "q": ("float32", (12,))}.
Every schema has TIMESTAMP_FIELD ("timestamp_us", int64, CLOCK_MONOTONIC microseconds): every record carries
a monotonic timestamp. Records are rows of the little-endian numpy structured dtype built from the schema.

File layout, `<folder>/episode_000123.g1log`, a sequence of frames (little-endian):
    frame = MAGIC (4 bytes) | kind (1 byte) | payload length (u32) | CRC32 of kind+length+payload (u32) | payload
    kind H, first: JSON {format, version, schema, meta, info, episode, started_us, started_unix}
    kind R:        one or more records (whole rows)
    kind F, last:  JSON {outcome, reason, counts, records, ended_us, ended_unix}
`<folder>/meta.json` (atomic) holds {format, version, schema}: a folder holds one schema. `meta` (policy
identity, robot contract, config, ...) is the writer's and is stored in every episode's header; `info` is
per episode (command schedule, seed, ...).

    with LogWriter("data_logs/run1", schema, meta={"policy_id": ...}) as log:
        log.start_episode({"schedule": "walk"})
        log.append({"timestamp_us": now_us, "q": q, ...})    # one record; or append_many({field: rows})
        log.end_episode("timeout", reason="schedule done", counts={"trips": 0})
    for episode in read_log_folder("data_logs/run1"):    # LogFolder: .episodes, .damaged
        episode.records["q"], episode.outcome, episode.reason, episode.info, episode.meta, episode.path

One writer per folder at a time. Episodes are numbered on from the highest index present, never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from real_robot.clock import now_us

FORMAT = "g1log"
VERSION = 1
MAGIC = b"G1LF"
HEADER, RECORDS, FOOTER = b"H", b"R", b"F"
FRAME = struct.Struct("<4scII")  # magic, kind, payload length, CRC32
TIMESTAMP_FIELD = "timestamp_us"
OUTCOMES = ("timeout", "safety_trip", "fall", "operator_stop")
INTERRUPTED = "interrupted"  # read-only outcome: the file has no footer
EPISODE_GLOB = "episode_*.g1log"
EPISODE_NAME = re.compile(r"episode_(\d+)\.g1log")
FOLDER_META = "meta.json"

Schema = Mapping[str, tuple[str, tuple[int, ...]]]


class LogError(ValueError):
    """A log folder or file that cannot be used (not a log folder, schema conflict, ...)."""


class DamagedLogError(LogError):
    def __init__(self, path: Path, offset: int, problem: str):
        self.path, self.offset, self.problem = Path(path), offset, problem
        super().__init__(f"damaged log {path} at byte offset {offset}: {problem}")


# --------------------------------------------------------------------------------------------- schema
def record_dtype(schema: Schema) -> np.dtype:
    """The little-endian structured dtype of one record; LogError for a schema that cannot be logged."""
    if not schema:
        raise LogError("empty log schema")
    columns = []
    for name, spec in schema.items():
        try:
            dtype_name, shape = spec
            dtype, shape = np.dtype(dtype_name).newbyteorder("<"), tuple(int(n) for n in shape)
        except (TypeError, ValueError) as err:
            raise LogError(f"schema field {name!r}: expected (numpy dtype, shape), got {spec!r} ({err})") from err
        if not isinstance(name, str) or not name:
            raise LogError(f"schema field names must be non-empty strings, got {name!r}")
        if dtype.kind not in "biuf" or any(n < 0 for n in shape):
            raise LogError(f"schema field {name!r}: numeric or bool dtype and non-negative shape, got {spec!r}")
        columns.append((name, dtype, shape))
    stamp = schema.get(TIMESTAMP_FIELD)
    if stamp is None or np.dtype(stamp[0]) != np.int64 or tuple(stamp[1]) != ():
        raise LogError(f"schema must hold {TIMESTAMP_FIELD!r}: ('int64', ()), the monotonic stamp of every record")
    return np.dtype(columns)


def schema_of(dtype: np.dtype) -> dict[str, list]:
    """JSON form of a record dtype: {name: [dtype string, shape]} in row order."""
    return {name: [dtype[name].base.str, list(dtype[name].shape)] for name in dtype.names}


# --------------------------------------------------------------------------------------------- frames
def encode_frame(kind: bytes, payload: bytes) -> bytes:
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(kind + length.to_bytes(4, "little")))
    return FRAME.pack(MAGIC, kind, length, crc) + payload


def _json_frame(kind: bytes, content: dict) -> bytes:
    return encode_frame(kind, json.dumps(content).encode())


def _frame_at(data: bytes, offset: int) -> tuple[bytes, int, int] | str:
    """(kind, payload start, payload end) of the valid frame at `offset`, or what is wrong with it."""
    if data[offset : offset + len(MAGIC)] != MAGIC[: len(data) - offset]:
        return "no frame marker (garbage)"
    if len(data) - offset < FRAME.size:
        return "incomplete frame header"
    _magic, kind, length, crc = FRAME.unpack_from(data, offset)
    start, end = offset + FRAME.size, offset + FRAME.size + length
    if end > len(data):
        return f"frame of {length} bytes runs past the end of the file"
    view = memoryview(data)
    if zlib.crc32(view[start:end], zlib.crc32(view[offset + 4 : offset + 9])) != crc:
        return "CRC mismatch"
    return kind, start, end


def _is_torn_tail(data: bytes, offset: int) -> bool:
    """Whether the bytes from `offset` to the end are what a stopped writer leaves: the start of a frame cut
    short (a killed write), or zeros (a filesystem's unwritten blocks after a power cut)."""
    tail = data[offset:]
    if not tail.strip(b"\0"):
        return True
    if len(tail) < FRAME.size:
        return MAGIC.startswith(tail[:4])
    magic, _kind, length, _crc = FRAME.unpack_from(data, offset)
    return magic == MAGIC and offset + FRAME.size + length > len(data)


def _read_frames(path: Path, data: bytes, damage: list[DamagedLogError] | None = None,
                 ) -> tuple[list[tuple[int, bytes, int, int]], int]:  # fmt: skip
    """Every valid frame as (offset, kind, start, end), and the number of torn tail bytes after them. Damage
    raises DamagedLogError; or, given a `damage` list, is appended to it and skipped to the next valid frame."""
    frames, offset = [], 0
    while offset < len(data):
        frame = _frame_at(data, offset)
        if isinstance(frame, str):
            resume = _next_valid_frame(data, offset)
            if resume is None and _is_torn_tail(data, offset):
                return frames, len(data) - offset
            end = len(data) if resume is None else resume
            err = DamagedLogError(path, offset, f"{frame}; bytes {offset}..{end} ({end - offset}) dropped")
            if damage is None:
                raise err
            damage.append(err)
            if resume is None:
                return frames, 0
            offset = resume
            continue
        frames.append((offset, *frame))
        offset = frame[2]
    return frames, 0


def _next_valid_frame(data: bytes, offset: int) -> int | None:
    """The offset of the first valid frame after `offset`, if any (then the bad bytes are damage, not a torn
    tail)."""
    offset = data.find(MAGIC, offset + 1)
    while offset >= 0:
        if not isinstance(_frame_at(data, offset), str):
            return offset
        offset = data.find(MAGIC, offset + 1)
    return None


# --------------------------------------------------------------------------------------------- writing
def _fsync_dir(folder: Path) -> None:
    """Make a created/renamed file's directory entry durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, content: bytes) -> None:
    """Write `content` to a temp file, fsync it, rename it to `path`: `path` is either absent or complete."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _folder_schema(folder: Path, dtype: np.dtype) -> None:
    """Write meta.json for a new folder; refuse an existing folder that holds another schema."""
    path, schema = folder / FOLDER_META, schema_of(dtype)
    if path.exists():
        try:
            existing = json.loads(path.read_text()).get("schema")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise LogError(f"{path} is not a g1log folder description ({err}); use another folder") from err
        if existing != schema:
            raise LogError(f"{folder} holds logs with another schema; use a new folder (its {FOLDER_META}: {existing})")
        return
    _write_durably(path, json.dumps({"format": FORMAT, "version": VERSION, "schema": schema}, indent=1).encode())


def _episode_index(path: Path) -> int | None:
    match = EPISODE_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LogWriter:
    """Writes episodes of one schema into `folder`. Not thread-safe: one writer per folder."""

    def __init__(
        self, folder: str | Path, schema: Schema, meta: Mapping[str, Any] | None = None,
        fsync_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
    ):  # fmt: skip
        if fsync_interval_s <= 0:
            raise ValueError(f"fsync_interval_s must be positive, got {fsync_interval_s}")
        self.folder = Path(folder)
        self.dtype = record_dtype(schema)
        self.meta = dict(meta or {})
        json.dumps(self.meta)  # fail now, not at the first episode, if meta cannot be stored
        self.fsync_interval_s, self._clock = fsync_interval_s, clock
        self.folder.mkdir(parents=True, exist_ok=True)
        _folder_schema(self.folder, self.dtype)
        self._names = set(self.dtype.names)
        self._columns = [(name, self.dtype[name].shape, self.dtype[name].base) for name in self.dtype.names]
        self._row = np.zeros((), self.dtype)
        self._fd: int | None = None
        self.episode_path: Path | None = None
        self.num_records = 0  # in the open episode
        self._last_sync = 0.0

    # -- episodes
    def start_episode(self, info: Mapping[str, Any] | None = None) -> Path:
        """Create the next episode file (header durable on return); returns its path."""
        if self._fd is not None:
            raise RuntimeError(f"episode {self.episode_path} is still open: end_episode() first")
        indices = [_episode_index(p) for p in self.folder.glob(EPISODE_GLOB)]
        index = max([i for i in indices if i is not None], default=-1) + 1
        path = self.folder / f"episode_{index:06d}.g1log"
        header = {
            "format": FORMAT, "version": VERSION, "schema": schema_of(self.dtype), "meta": self.meta,
            "info": dict(info or {}), "episode": index, "started_us": now_us(),
            "started_unix": time.time(),
        }  # fmt: skip
        _write_durably(path, _json_frame(HEADER, header))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.episode_path, self.num_records, self._last_sync = path, 0, self._clock()
        return path

    def append(self, record: Mapping[str, Any]) -> None:
        """Log one record: exactly the schema's fields, each of its shape and a dtype that casts (same kind)."""
        if record.keys() != self._names:
            raise ValueError(_field_mismatch(record.keys(), self._names))
        row = self._row
        for name, shape, dtype in self._columns:
            value = np.asarray(record[name])
            _check_value(name, value, shape, dtype)
            row[name] = value
        self._write(RECORDS, row.tobytes())
        self.num_records += 1

    def append_many(self, records: Mapping[str, Any]) -> None:
        """Log n records at once: {field: array of shape (n, *field shape)}. One frame, for fast collection."""
        if records.keys() != self._names:
            raise ValueError(_field_mismatch(records.keys(), self._names))
        stamps_shape = np.shape(records[TIMESTAMP_FIELD])
        if len(stamps_shape) != 1:
            raise ValueError(f"append_many: {TIMESTAMP_FIELD!r} must be 1-d (n stamps), got shape {stamps_shape}")
        n = stamps_shape[0]
        rows = np.empty(n, self.dtype)
        for name, shape, dtype in self._columns:
            value = np.asarray(records[name])
            _check_value(name, value, (n, *shape), dtype)
            rows[name] = value
        if n:
            self._write(RECORDS, rows.tobytes())
            self.num_records += n

    def end_episode(self, outcome: str, reason: str = "", counts: Mapping[str, int] | None = None) -> Path:
        """Write the footer, fsync and close the episode file; returns its path."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown episode outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
        footer = {
            "outcome": outcome, "reason": str(reason), "counts": dict(counts or {}), "records": self.num_records,
            "ended_us": now_us(), "ended_unix": time.time(),
        }  # fmt: skip
        self._write(FOOTER, json.dumps(footer).encode())
        path = self.episode_path
        self._close_file()
        return path

    def sync(self) -> None:
        """fsync the open episode now (also done automatically every fsync_interval_s)."""
        if self._fd is not None:
            os.fsync(self._fd)
            self._last_sync = self._clock()

    def close(self) -> None:
        """fsync and close. An episode still open has no footer and reads back as "interrupted"."""
        if self._fd is not None:
            self._close_file()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- internals
    def _write(self, kind: bytes, payload: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("no open episode: call start_episode() first")
        _write_all(self._fd, encode_frame(kind, payload))  # straight to the OS: survives the process dying
        if self._clock() - self._last_sync >= self.fsync_interval_s:
            self.sync()  # bounds what a power cut can take

    def _close_file(self) -> None:
        self.sync()
        os.close(self._fd)
        self._fd = None


def _field_mismatch(given, expected: set[str]) -> str:
    missing, unknown = sorted(expected - set(given)), sorted(set(given) - expected)
    parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
    return f"log record fields do not match the schema: {'; '.join(parts)}"


def _check_value(name: str, value: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if value.shape != shape:
        raise ValueError(f"log field {name!r}: shape {value.shape}, the schema says {shape}")
    if not np.can_cast(value.dtype, dtype, casting="same_kind"):
        raise ValueError(f"log field {name!r}: {value.dtype} values do not fit the schema's {dtype}")


# --------------------------------------------------------------------------------------------- reading
@dataclass
class Episode:
    path: Path
    records: dict[str, np.ndarray]  # field -> array (n, *shape), in time order
    outcome: str  # one of OUTCOMES, or "interrupted" (no footer)
    reason: str
    info: dict
    meta: dict
    counts: dict = field(default_factory=dict)
    dropped_tail_bytes: int = 0  # a torn last frame (writer killed mid-write)
    index: int = -1  # the episode number (header)
    started_us: int = 0  # when the writer started it: host monotonic (the records' clock) ...
    started_unix: float = 0.0  # ... and Unix time, so record stamps map to dates

    @property
    def source(self) -> str:
        return self.path.name

    @property
    def num_records(self) -> int:
        return len(self.records[TIMESTAMP_FIELD])

    @property
    def duration_s(self) -> float:
        stamps = self.records[TIMESTAMP_FIELD]
        return float(stamps[-1] - stamps[0]) / 1e6 if len(stamps) > 1 else 0.0

    def __len__(self) -> int:
        return self.num_records


@dataclass
class LogFolder:
    path: Path
    episodes: list[Episode]
    damaged: list[DamagedLogError]  # only with skip_damaged=True

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_records(self) -> int:
        return sum(e.num_records for e in self.episodes)


def read_episode(path: str | Path) -> Episode:
    """Load one episode file; DamagedLogError (file and offset) if it is damaged."""
    return _read_episode(Path(path), None)


def salvage_episode(path: str | Path) -> tuple[Episode, list[DamagedLogError]]:
    """Every intact frame of a damaged episode file (before each damaged stretch, and after it from the next
    valid frame on), and the damage: file, offset and bytes dropped. Raises DamagedLogError if the header is
    damaged (nothing is usable without the schema)."""
    damage: list[DamagedLogError] = []
    episode = _read_episode(Path(path), damage)
    return episode, damage


def _read_episode(path: Path, damage: list[DamagedLogError] | None) -> Episode:
    try:
        data = path.read_bytes()
    except OSError as err:  # a directory, a symlink loop, no permission: not an episode we can read
        raise DamagedLogError(path, 0, f"cannot read it: {err.strerror or err}") from err
    frames, tail = _read_frames(path, data, damage)
    if not frames or frames[0][1] != HEADER or frames[0][0] != 0:
        raise DamagedLogError(path, 0, "no header frame: not a g1log episode file")
    header = _json_payload(path, data, frames[0])
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise DamagedLogError(path, 0, f"format {header.get('format')} v{header.get('version')}, "
                                       f"this reader reads {FORMAT} v{VERSION}")  # fmt: skip
    try:
        dtype = record_dtype({name: tuple(spec) for name, spec in header["schema"].items()})
    except (KeyError, TypeError, AttributeError, LogError) as err:
        raise DamagedLogError(path, 0, f"header holds no usable schema ({err})") from err
    rows, footer = [], None
    for offset, kind, start, end in frames[1:]:
        try:
            if footer is not None:
                raise DamagedLogError(path, offset, "frame after the episode footer")
            if kind == RECORDS and (end - start) % dtype.itemsize == 0:
                rows.append(data[start:end])
            elif kind == FOOTER:
                footer = _json_payload(path, data, (offset, kind, start, end))
            else:
                raise DamagedLogError(path, offset, f"unexpected frame {kind!r} of {end - start} bytes "
                                                    f"(records are {dtype.itemsize} bytes)")  # fmt: skip
        except DamagedLogError as err:
            if damage is None:
                raise
            damage.append(err)
    table = np.frombuffer(b"".join(rows), dtype)
    footer = footer or {"outcome": INTERRUPTED, "reason": "no footer: the writer stopped mid-episode"}
    return Episode(
        path=path, records={name: table[name].copy() for name in dtype.names}, outcome=footer["outcome"],
        reason=footer.get("reason", ""), info=header.get("info", {}), meta=header.get("meta", {}),
        counts=footer.get("counts", {}), dropped_tail_bytes=tail, index=int(header.get("episode", -1)),
        started_us=int(header.get("started_us", 0)), started_unix=float(header.get("started_unix", 0.0)),
    )  # fmt: skip


def _json_payload(path: Path, data: bytes, frame: tuple[int, bytes, int, int]) -> dict:
    offset, kind, start, end = frame
    try:
        content = json.loads(data[start:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedLogError(path, offset, f"frame {kind!r} does not hold JSON ({err})") from err
    if not isinstance(content, dict):
        raise DamagedLogError(path, offset, f"frame {kind!r} holds {type(content).__name__}, not a JSON object")
    return content


def episode_files(folder: str | Path) -> list[Path]:
    """The episode files of a log folder in episode order; clear errors for a missing or non-log folder."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"log folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a log folder (a file): {folder}")
    files = sorted(p for p in folder.glob(EPISODE_GLOB) if _episode_index(p) is not None)
    if not files:
        what = f"has {FOLDER_META} but no episodes yet" if (folder / FOLDER_META).exists() else "is not a log folder"
        raise LogError(f"{folder} {what} (no episode_*.g1log files)")
    return files


def scan_log_folder(folder: str | Path) -> Iterator[Episode | DamagedLogError]:
    """Each episode file loaded, or its DamagedLogError (returned, not raised): for tools that report all damage."""
    for path in episode_files(folder):
        try:
            yield read_episode(path)
        except DamagedLogError as err:
            yield err


def iter_episodes(folder: str | Path, skip_damaged: bool = False) -> Iterator[Episode]:
    """Episodes one at a time. A damaged file raises DamagedLogError, or with skip_damaged warns (file and offset)
    and yields its intact frames (`salvage_episode`)."""
    for item in scan_log_folder(folder):
        if isinstance(item, DamagedLogError):
            if not skip_damaged:
                raise item
            kept, damage = _salvage(item)
            for err in damage:
                warnings.warn(f"skipping {err}", stacklevel=2)
            yield from kept
        else:
            yield item


def set_aside(folder: str | Path) -> None:
    """A log folder an interrupted run left behind is renamed beside itself, never overwritten or deleted."""
    folder = Path(folder)
    if not folder.exists():
        return
    stem = f"{folder.name}_interrupted_{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = folder.with_name(stem), 1
    while target.exists():  # two set aside within a second
        target, n = folder.with_name(f"{stem}_{n}"), n + 1
    folder.rename(target)


def read_log_folder(folder: str | Path, skip_damaged: bool = False) -> LogFolder:
    """Every episode of a folder. A damaged file raises DamagedLogError; with skip_damaged its damage is listed
    in `.damaged` (and warned about, by file and offset) and its intact frames load (`salvage_episode`)."""
    episodes, damaged = [], []
    for item in scan_log_folder(folder):
        if isinstance(item, DamagedLogError):
            if not skip_damaged:
                raise item
            kept, damage = _salvage(item)
            for err in damage:
                warnings.warn(f"skipping {err}", stacklevel=2)
            damaged += damage
            episodes += kept
        else:
            episodes.append(item)
    return LogFolder(Path(folder), episodes, damaged)


def _salvage(err: DamagedLogError) -> tuple[list[Episode], list[DamagedLogError]]:
    """The intact part of the file `err` names (none if its header is damaged) and all its damage."""
    try:
        episode, damage = salvage_episode(err.path)
    except DamagedLogError as header_damage:
        return [], [header_damage]
    return ([episode] if episode.num_records else []), damage
