"""`real_robot sockets --pid PID ...`: the sockets our processes hold, and whether each stays on loopback.

Lists every TCP/UDP socket of the given processes (iproute2's `ss`) and the host's memberships of the multicast
groups they are bound to (/proc/net/igmp); exits 1 if any socket is bound to an address other than loopback,
unless it is tied to the `lo` device (`0.0.0.0%lo`: SO_BINDTODEVICE, how LCM's sockets are confined; see
real_robot.lcm_bus). On a real robot the bridge's SDK socket faces the robot's network and is reported as such.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

_LINE = re.compile(r"^(?P<proto>\S+)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+)\s+(?P<peer>\S+)\s+users:(?P<users>.*)$")


@dataclass(frozen=True)
class Socket:
    proto: str
    host: str  # the local address, brackets stripped
    device: str  # "lo" for a socket tied to loopback (ss prints address%device), else ""
    port: str
    peer: str
    pids: tuple[int, ...]

    @property
    def loopback(self) -> bool:
        if self.device == "lo":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # "*"
            return False

    def __str__(self) -> str:
        where = f"{self.host}%{self.device}" if self.device else self.host
        verdict = "loopback" if self.loopback else "NOT LOOPBACK"
        return f"{self.proto:4s} {where}:{self.port:6s} peer {self.peer:22s} pids {','.join(map(str, self.pids)):12s} {verdict}"


def parse_ss(text: str) -> list[Socket]:
    sockets = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        address, _, port = match["local"].rpartition(":")
        host, _, device = address.partition("%")
        pids = tuple(int(p) for p in re.findall(r"pid=(\d+)", match["users"]))
        sockets.append(Socket(match["proto"], host.strip("[]"), device, port, match["peer"], pids))
    return sockets


def process_sockets(pids: set[int]) -> list[Socket]:
    if shutil.which("ss") is None:
        raise RuntimeError("needs iproute2's `ss` (apt-get install iproute2)")
    text = subprocess.run(["ss", "-Htuanp"], capture_output=True, text=True, check=True).stdout
    return [s for s in parse_ss(text) if pids & set(s.pids)]


def memberships(groups: set[str]) -> list[str]:
    """'device group' for each host membership of one of `groups` (IPv4, /proc/net/igmp)."""
    found, device = [], ""
    try:
        lines = open("/proc/net/igmp").read().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        if not line.startswith("\t"):
            device = line.split()[1]
            continue
        group = str(ipaddress.IPv4Address(bytes.fromhex(line.split()[0])[::-1]))
        if group in groups:
            found.append(f"{device} {group}")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="real_robot sockets", description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, action="append", required=True, help="a process to check (repeat)")
    args = p.parse_args(argv)
    try:
        sockets = process_sockets(set(args.pid))
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"real_robot sockets: {err}", file=sys.stderr)
        return 2
    for sock in sockets:
        print(sock)
    groups = {s.host for s in sockets if s.host.count(".") == 3 and ipaddress.ip_address(s.host).is_multicast}
    for line in memberships(groups):
        print(f"host membership {line}")  # of any process on this host, not only these
    outside = [s for s in sockets if not s.loopback]
    print(f"{len(sockets)} sockets, {len(outside)} not on loopback")
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
