"""Exit codes shared by every command (sim_pretrain, real_robot, deploy, uni_o4); the README's table lists them.

A script can tell a clean run from a safety trip, an operator's Ctrl-C or a collection that came up short.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done as asked
    FAILED = 1  # could not run: no state from the bridge, a damaged log (real_robot logs), ...
    BAD_INPUT = 2  # a bad argument, config or file (one line on stderr, no traceback)
    SAFETY_TRIP = 3  # a safety monitor (or the bridge) ended the run or kept the robot from starting
    SHORTFALL = 4  # ended with less than asked (e.g. collect --steps N logged fewer than N)
    ABORTED = 130  # the operator stopped the run (Ctrl-C) before it was done; the shell's code for SIGINT
