"""Authenticated arming: only a holder of this user's secret can arm the bridge or the runtime, and only the
session that armed the bridge drives the motors.

- The secret: 32 random bytes in a file readable by its owner only (GO1_ARM_SECRET, default
  ~/.config/go1-sim2real/arm_secret), made on first use. Anyone who can read it can arm the robot.
- An arm_request carries an HMAC-SHA256 of its fields with the secret (`sign`); `ArmVerifier` accepts one only
  if the HMAC matches, its timestamp (CLOCK_MONOTONIC, one host) is within ARM_WINDOW_US of now and newer than
  the last one accepted (a replayed request is refused).
- A controller arms the bridge with a fresh random session token (`new_session`) and carries it in each
  pd_target; the bridge refuses targets with any other token. An arm with session 0 (the operator's
  `deploy arm`) re-arms without changing the session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from real_robot.lcm_types.go1lcm import arm_request_t

SECRET_ENV = "GO1_ARM_SECRET"
BIND = "bind"  # arm_request target: bind the bridge to the session, without re-arming a trip
ARM_WINDOW_US = 5_000_000  # an arm_request older or newer than this (sender's vs our monotonic clock) is refused


class ArmingError(RuntimeError):
    """The secret file is missing, unreadable or readable by others."""


def secret_path() -> Path:
    return Path(os.environ.get(SECRET_ENV) or Path.home() / ".config" / "go1-sim2real" / "arm_secret")


def load_secret(path: Path | None = None) -> bytes:
    """The per-user secret, made (mode 0600) if it does not exist yet; ArmingError if others may read it."""
    path = path or secret_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    except FileExistsError:
        pass
    except OSError as err:
        raise ArmingError(f"cannot create the arming secret {path}: {err.strerror}") from err
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ArmingError(f"arming secret {path} must belong to you and be readable by you only (chmod 600)")
        secret = path.read_bytes().strip()
    except OSError as err:
        raise ArmingError(f"cannot read the arming secret {path}: {err.strerror}") from err
    if len(secret) < 32:
        raise ArmingError(f"arming secret {path} is too short (delete it to make a new one)")
    return secret


def new_session() -> int:
    """A random non-zero session token (int64)."""
    return secrets.randbits(62) + 1


def _mac(msg: arm_request_t, secret: bytes) -> str:
    text = f"{msg.timestamp_us}|{msg.session}|{msg.target}|{msg.source}"
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def sign(msg: arm_request_t, secret: bytes) -> arm_request_t:
    msg.auth = _mac(msg, secret)
    return msg


def arm_request(secret: bytes, now_us: int, target: str, source: str, session: int = 0) -> arm_request_t:
    msg = arm_request_t()
    msg.timestamp_us, msg.source, msg.target, msg.session = now_us, source, target, session
    return sign(msg, secret)


class ArmVerifier:
    """Accepts an arm_request once: a valid HMAC, a timestamp near now and newer than the last one accepted."""

    def __init__(self, secret: bytes):
        self._secret = secret
        self._last_us: int | None = None
        self.refused = 0

    def accept(self, msg: arm_request_t, now_us: int) -> bool:
        fresh = abs(msg.timestamp_us - now_us) <= ARM_WINDOW_US and (self._last_us is None or msg.timestamp_us > self._last_us)
        if not (fresh and hmac.compare_digest(msg.auth.encode(), _mac(msg, self._secret).encode())):
            self.refused += 1
            return False
        self._last_us = msg.timestamp_us
        return True
