"""real_robot calibrate: parameters recovered from a stand-in log of a known profile; the replay reproduces the
stand-in; standing data fits only what it can identify; bad data gets a one-line error (exit 2).

Tolerances (a 1500-step open-loop gait log with encoder-grade joint noise, 40 windows of 0.1 s,
120 CMA-ES evaluations): friction ±0.1, effective Kp ±10 %, payload ±1.5 kg. They cover the spread measured over
8 calibrations of this log (seeds 0-3 with 40 windows/120 evaluations and 48/240): friction -0.06..+0.07,
Kp -6.4..+7.9 %, payload -0.74..+1.28 kg. The payload is weakly identified from this little data: it trades against
Kp (a standing robot sags by m g / Kp). Joint-angle noise biases payload and Kp low (the replay starts from the
noisy angles; parameters that soften the response to them fit better): at 0.002 rad the payload came out 0.6 kg low.
Kd, joint friction and latency trade off against one another at this data size (benchmarks/
calibration.py reports them on policy logs); here they stay nominal, as in the generating profile.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from real_robot import calibrate as cal
from real_robot import unitree_wire as wire
from deploy.record import record_schema
from real_robot.datalog import LogWriter, read_log_folder
from real_robot.sim_robot import MotorLaw, StandInRobot, rotate_into_body
from robot_spec.reality_gap import RealityGapProfile, SensorNoise, load_reality_gap

# ------------------------------------------------------------------------------------ a log of a known profile
# The stand-in (real_robot.sim_robot.StandInRobot, fast mode, no LCM) is driven in-process as the bridge drives it in
# lockstep: each target answers the state of one tick and is commanded every tick of the next policy period. Only
# the wire is skipped (packing and CRCs in Python cost more than the physics): commands enter the robot's latency
# queue as its UDP receiver would put them there, and states are its LowState before encoding. After a soft start
# the targets are a trot-like open-loop gait around the default pose plus noise, which excites the joints (gains,
# latency, joint friction) and moves the feet over the floor. Odometry is the stand-in's ground truth, as it
# publishes it. Records follow real_robot.collect.record_schema.
TICKS_PER_STEP = 10  # 50 Hz policy on the 500 Hz board
SOFT_START_STEPS = 75
GAIT_HZ = 2.0


def gait_target(spec, step: int, rng: np.random.Generator, noise: float, amplitude: float) -> np.ndarray:
    """Diagonal leg pairs swing in antiphase: thigh forward and calf folded while a foot is up."""
    t = step / spec.control.policy_hz
    phase = 2 * np.pi * GAIT_HZ * t + np.array([0.0, np.pi, np.pi, 0.0])  # FR, FL, RR, RL
    lift = np.maximum(np.sin(phase), 0.0)
    offsets = np.zeros((4, 3))
    offsets[:, 0] = 0.1 * np.sin(2 * np.pi * 0.5 * t)  # hips sway sideways, slowly
    offsets[:, 1] = amplitude * 0.5 * np.cos(phase)  # thighs swing
    offsets[:, 2] = -amplitude * lift  # calves fold while swinging
    return spec.default_pose + offsets.reshape(-1) + rng.normal(0.0, noise, spec.num_joints)


class InProcessStandIn(StandInRobot):
    """The stand-in without its UDP wire: `command` is what the next ticks receive; `state` the last LowState."""

    command: wire.LowCmd | None = None
    state: wire.LowState | None = None

    def _receive_commands(self) -> None:
        if self.command is not None:  # as StandInRobot._receive_commands queues a received LowCmd
            self.stats.commands += 1
            due = self.robot_time + self.profile.actuator_latency_s
            self.pending.append((due, MotorLaw.from_low_cmd(self.command, self.spec, self.profile)))

    def _send_state(self) -> None:
        self.state = self._low_state()


class Driver:
    """The test's bridge + controller: one command per tick, one record per policy step."""

    def __init__(self, robot: InProcessStandIn):
        self.robot, self.spec = robot, robot.spec

    @property
    def state(self) -> wire.LowState:
        return self.robot.state

    def period(self, q_des: np.ndarray, kp: float, kd: float) -> None:
        cmd = wire.LowCmd()
        n = self.spec.num_joints
        cmd.mode[:n] = wire.SERVO_MODE
        cmd.q[:n], cmd.dq[:n] = self.spec.to_sdk_order(q_des), 0.0
        cmd.kp[:n], cmd.kd[:n] = kp, kd
        self.robot.command = cmd
        for _ in range(TICKS_PER_STEP):
            self.robot.step()

    def record(self, step: int, phase: int, q_des: np.ndarray, kp: float, kd: float) -> dict:
        s, d, spec, n = self.state, self.robot.data, self.spec, self.spec.num_joints
        from_sdk = lambda values: spec.from_sdk_order(np.asarray(values)[:n])  # noqa: E731
        return {
            "timestamp_us": np.int64(s.tick), "robot_tick_us": np.int64(s.tick), "step": np.int32(step),
            "phase": np.uint8(phase), "q": from_sdk(s.q), "dq": from_sdk(s.dq), "tau_est": from_sdk(s.tau_est),
            "quaternion": s.quaternion, "rpy": s.rpy, "gyro": s.gyroscope, "accelerometer": s.accelerometer,
            "foot_force": np.asarray(s.foot_force), "odom_position": d.qpos[0:3].copy(),
            "odom_quaternion": d.qpos[3:7].copy(), "odom_lin_vel": rotate_into_body(d.qpos[3:7], d.qvel[0:3]),
            "odom_ang_vel": d.qvel[3:6].copy(), "command": np.zeros(3), "obs": np.zeros(spec.observation.dim),
            "action": np.zeros(n), "q_des": q_des, "kp": np.full(n, kp), "kd": np.full(n, kd),
            "tripped": np.uint8(0),
        }  # fmt: skip


def write_gait_log(folder: Path, profile: RealityGapProfile, policy_steps: int, seed: int = 0,
                   noise: float = 0.05, amplitude: float = 0.5, episode_steps: int = 500) -> None:  # fmt: skip
    """`policy_steps` policy-phase records in episodes of `episode_steps`, each after a soft start."""
    rng = np.random.default_rng(seed)
    with InProcessStandIn(profile, port=0, fast=True, seed=seed, lcm_url=None) as robot:
        spec, driver = robot.spec, Driver(robot)
        kp, kd = spec.control.kp, spec.control.kd
        with LogWriter(folder, record_schema(spec), {"stand_in_profile": profile.name}) as log:
            done, episode = 0, 0
            while done < policy_steps:
                robot.reset(seed=episode + 1)
                driver.period(spec.lying_pose, 0.0, 0.0)  # the reset lands; motors still off
                log.start_episode({"episode": episode})
                start = driver.state and spec.from_sdk_order(np.asarray(driver.state.q)[: spec.num_joints])
                for k in range(SOFT_START_STEPS + min(episode_steps, policy_steps - done)):
                    if k < SOFT_START_STEPS:
                        phase, alpha = 0, min(1.0, k / (SOFT_START_STEPS - 15))
                        q_des = (1 - alpha) * start + alpha * spec.default_pose
                    else:
                        phase, q_des = 1, gait_target(spec, k, rng, noise, amplitude)
                    log.append(driver.record(k, phase, q_des, kp, kd))
                    driver.period(q_des, kp, kd)
                done += min(episode_steps, policy_steps - done)
                log.end_episode("timeout", "generated episode over")
                episode += 1


# ------------------------------------------------------------------------------------------------ tests
TRUE = {"friction": 0.55, "added_mass": 1.2, "kp": 0.85}


def profile(**changes):
    """The strong stand-in's contact model, nominal dynamics but for `changes`; encoder-grade joint noise."""
    base = cal.nominal_base("strong", "truth")
    noise = SensorNoise(joint_pos=0.0005, joint_vel=0.1, gyro=0.05, orientation=0.01)
    return dataclasses.replace(base, noise=noise, bias=SensorNoise(gyro=0.02), **changes)


@pytest.fixture(scope="module")
def gait_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gait")
    truth = profile(friction=TRUE["friction"], added_mass=TRUE["added_mass"], kp_factor=TRUE["kp"])
    write_gait_log(folder, truth, 1500, seed=1)
    return folder


def run(argv, capsys):
    code = cal.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def test_calibration_recovers_friction_payload_and_kp(gait_log, tmp_path, capsys):
    out = tmp_path / "calibrated.yaml"
    code, err = run(["--logs", gait_log, "--out", out, "--params", "friction,added_mass,kp", "--window-steps", 5,
                     "--windows", 40, "--held-out", 16, "--max-evals", 120, "--refit-evals", 24], capsys)  # fmt: skip
    assert code == 0, err
    report = yaml.safe_load((tmp_path / "calibrated_report.json").read_text())
    found = report["identified"]
    # The profile likelihood: the fit inside, and the gait's slipping feet rule out some floors (0.3 and 1.3 here)
    plausible = report["plausible"]
    assert set(plausible) == {"friction", "added_mass"}, plausible
    assert all(lo <= found[n] <= hi for n, (lo, hi) in plausible.items()), (plausible, found)
    assert plausible["friction"][1] - plausible["friction"][0] < 0.5, plausible
    assert abs(found["friction"] - TRUE["friction"]) <= 0.1, found
    assert abs(found["added_mass"] - TRUE["added_mass"]) <= 1.5, found
    assert abs(found["kp"] / TRUE["kp"] - 1) <= 0.1, found
    flat = report["flat_over"]  # the figures the held-out logs cannot tell apart from the fit
    assert set(flat) == set(found) and all(lo <= found[n] <= hi for n, (lo, hi) in flat.items())
    assert flat["kp"][1] - flat["kp"][0] < 0.5 * (cal.PARAMS["kp"].high - cal.PARAMS["kp"].low)  # Kp is pinned down
    held_out = report["fit_error_rms"]["held_out"]
    assert held_out["loss_after"] < 0.5 * held_out["loss_before"]
    loaded = load_reality_gap(str(out))  # what the stand-in and the training simulator read
    assert loaded.name == "calibrated" and loaded.physics == load_reality_gap("strong").physics
    assert loaded.motor_strength == 1.0 and loaded.kp_factor == pytest.approx(found["kp"], abs=1e-4)
    assert loaded.actuator_latency_s == 0.0 and loaded.joint_damping_factor == 1.0  # not fitted: nominal
    assert loaded.noise.gyro == pytest.approx(0.05, rel=0.1)  # against odometry
    assert (tmp_path / "calibrated_fit.png").stat().st_size > 10_000


def test_the_true_profile_replays_the_log(tmp_path):
    """The replay is the stand-in: on noise-free logs of a robot with encoder offsets, the true profile and offsets
    predict the logged next states almost exactly, wherever the tracking frame puts the floor; a payload 0.5 kg off,
    a latency one board tick off or the offsets left out do at least twice as badly."""
    truth = dataclasses.replace(profile(friction=0.7, added_mass=1.0, kp_factor=0.9, actuator_latency_s=0.004),
                                noise=SensorNoise(), bias=SensorNoise(joint_pos=0.02))  # fmt: skip
    write_gait_log(tmp_path, truth, 1000, seed=3, episode_steps=1000)
    offsets = np.random.default_rng(3).normal(0.0, 0.02, 12)  # the stand-in's first draw: its bias_q
    spec = cal.load_robot("go1")
    windows = cal.make_windows(cal.load_logs([tmp_path], spec), 5, 24, 0)
    exact = cal.errors(cal.replay(spec, truth, windows, offsets), windows.observed)
    assert cal.rms(exact)["q"] < 0.005 and cal.rms(exact)["position"] < 0.0005
    for wrong, wrong_offsets in ((dict(added_mass=1.5), offsets), (dict(actuator_latency_s=0.006), offsets),
                                 (dict(), None)):  # fmt: skip
        off = cal.errors(cal.replay(spec, dataclasses.replace(truth, **wrong), windows, wrong_offsets),
                         windows.observed)  # fmt: skip
        assert cal.loss(off) > 2 * cal.loss(exact), wrong
    # A tracking frame whose floor is 5 cm above its origin: the same motion, each start's feet put at the edge of
    # a loaded foot's band in the floor (cal.FOOT_PENETRATION) instead of where they were (before: 5 cm off).
    up = np.zeros(windows.qpos0.shape[1])
    up[2] = 0.05
    raised = dataclasses.replace(windows, qpos0=windows.qpos0 + up,
                                 observed={**windows.observed, "position": windows.observed["position"] + up[:3]})
    assert cal.rms(cal.errors(cal.replay(spec, truth, raised, offsets), raised.observed))["position"] < 0.001


def test_latency_schedule_matches_the_stand_in_at_whole_ticks():
    assert cal.latency_schedule(0.0) == (0, 0.0)
    assert cal.latency_schedule(0.006)[0] == cal.latency_ticks(0.006) == 3
    tick, weight = cal.latency_schedule(0.005)  # half way: tick 2 runs half of each command
    assert tick == 2 and weight == pytest.approx(0.5) and cal.latency_ticks(0.005) == 3


@pytest.fixture(scope="module")
def standing_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standing")
    write_gait_log(folder, profile(kp_factor=0.8), 1100, noise=0.02, amplitude=0.0)
    return folder


def test_standing_data_fits_only_the_joint_parameters(standing_log, capsys):
    data = cal.load_logs([standing_log], cal.load_robot("go1"))
    assert data.walking_steps == 0
    assert cal.choose_params(None, data) == ["kp", "kd", "frictionloss"]
    code, err = run(["--logs", standing_log, "--out", standing_log / "x.yaml", "--params", "kp,friction"], capsys)
    assert code == 2 and "friction: not identifiable from standing data" in err and "\n" not in err


def rewrite(source, target, change):
    """Copy of a log folder with `change(records)` applied to every episode's records."""
    spec = cal.load_robot("go1")
    with LogWriter(target, record_schema(spec)) as log:
        for episode in read_log_folder(source):
            records = {k: v.copy() for k, v in episode.records.items()}
            change(records)
            log.start_episode()
            log.append_many(records)
            log.end_episode("timeout")
    return target


def no_odometry(r):
    r["odom_position"][:] = np.nan


def nan_joints(r):
    r["q"][::2, 3] = np.nan


@pytest.mark.parametrize(
    "change, message",
    [(no_odometry, "have no odometry"), (nan_joints, "have NaN readings"), (None, "usable policy steps (1000 needed")],
)
def test_bad_data_gets_a_one_line_error(standing_log, tmp_path, capsys, change, message):
    if change is None:  # too little data: one episode
        folder = tmp_path / "short"
        shutil.copytree(standing_log, folder)
        for extra in sorted(folder.glob("episode_*.g1log"))[1:]:
            extra.unlink()
    else:
        folder = rewrite(standing_log, tmp_path / "bad", change)
    code, err = run(["--logs", folder, "--out", tmp_path / "p.yaml"], capsys)
    assert code == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "p.yaml").exists()


def test_not_a_log_folder_and_bad_options(tmp_path, capsys):
    code, err = run(["--logs", tmp_path / "missing", "--out", tmp_path / "p.yaml"], capsys)
    assert code == 2 and "\n" not in err
    code, err = run(["--logs", tmp_path, "--out", tmp_path / "p.txt"], capsys)
    assert code == 2 and ".yaml" in err


def test_several_fits_give_their_median_and_range(gait_log, tmp_path, capsys):
    out = tmp_path / "ensemble.yaml"
    code, err = run(["--logs", gait_log, "--out", out, "--params", "added_mass,kp", "--windows", 12,
                     "--held-out", 4, "--max-evals", 20, "--fits", 3, "--refit-evals", 8], capsys)  # fmt: skip
    assert code == 0, err
    report = yaml.safe_load((tmp_path / "ensemble_report.json").read_text())
    fits = [f["identified"] for f in report["fits"]]
    assert len(fits) == 3 and len({f["added_mass"] for f in fits}) > 1  # each fit its own windows and seed
    for name in ("added_mass", "kp"):
        values = sorted(f[name] for f in fits)
        assert report["range"][name] == [values[0], values[-1]]
        assert report["identified"][name] == pytest.approx(values[1], abs=1e-4)
    assert load_reality_gap(str(out)).kp_factor == pytest.approx(report["identified"]["kp"], abs=1e-4)
    assert all((tmp_path / f"ensemble_fit{k}.yaml").is_file() for k in range(3))
    assert all(set(f["plausible"]) == {"added_mass"} for f in report["fits"])  # each fit its profile likelihood


def test_a_figure_on_the_edge_of_its_search_range_is_reported_as_a_bound():
    low, high = cal.PARAMS["added_mass"].low, cal.PARAMS["friction"].high
    assert cal.at_bounds({"added_mass": low, "friction": high - 0.001, "kp": 0.9}) == ["added_mass", "friction"]
    assert cal.at_bounds({"added_mass": 1.5, "kp": 0.9}) == []
