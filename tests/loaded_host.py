"""Allowances of the tests that start a stand-in robot: CI hosts have 2 cores, and other work may run beside the
suite."""

# LoopbackRobot's start-up (stand-in + bridge processes up and talking): over 30 s, its default, at load 15 on 2 cores
STARTUP_S = 120
