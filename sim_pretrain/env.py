"""Vectorised MuJoCo Go1 locomotion task implementing rsl_rl's VecEnv.

Each policy step runs `decimation` physics steps for every environment inside `mujoco.rollout` (C++, one
thread per core); PD control runs inside MuJoCo as position actuators. Domain randomisation lives in one
MjModel per environment, re-sampled at every reset. Everything after the physics is batched torch.

Observation groups: "policy" (what a real Go1 measures, see configs/robots/*.yaml) and "privileged"
(simulator-only state for the critic).

By default the env is the nominal training model with wide randomisation. With `dynamics.profile` it is centred
on one robot's dynamics instead (a reality-gap profile: the stand-in's own, or one calibrated from logs): that
profile's solver, time step, friction, payload, motor strength, realised gains, latency, joint friction and
damping, with narrow randomisation around them and per-episode sensor biases.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import mujoco
import numpy as np
import torch
from mujoco import rollout
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from robot_spec import load_robot
from robot_spec.mjcf import ACCURATE_CONTACT, LEG_CONTACT, build_model, build_model_xml, home_qpos, leg_geoms, sensor_slices
from robot_spec.observation import projected_gravity, roll_pitch, rotate_inverse
from robot_spec.rotations import quaternion_rpy, rpy_of_quaternion
from robot_spec.policy_map import ActionMap, ObservationBuilder
from robot_spec.reality_gap import Ground, RealityGapProfile, apply_body_dynamics, load_reality_gap
from robot_spec.terrain import TERRAIN_CELL, add_terrain, ground_top
from sim_pretrain.env_config import EnvConfig
from sim_pretrain.rewards import RewardFunction, RewardInputs, RewardTracker

STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
TERRAIN_STREAM = 1  # the terrain field's random stream beside the env's own (which stays as without terrain)
TERRAIN_EDGE_M = 1.0  # the field slopes down to the floor over its outer metre
COM_AXES = ("com_x", "com_y", "com_z")  # per-env trunk centre-of-mass displacement (randomization)
STAND_UP_CHUNK = 100  # physics steps per rollout call while standing up (bounds the buffer)
SPAWN_CLEARANCE_M = 0.35  # a reset's trunk height rests its feet on the highest terrain within this of its spot
PRIVILEGED_DIM = 11  # body velocity (3), height (1), foot contacts (4), friction, payload, motor strength


class Go1Env(VecEnv):
    def __init__(self, cfg: EnvConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.spec = load_robot(cfg.robot)
        self.action_map = ActionMap.from_spec(self.spec)
        ctrl = self.spec.control
        self.num_envs = cfg.num_envs
        self.num_actions = self.spec.num_joints
        self.dt = ctrl.policy_dt
        self.max_episode_length = int(round(cfg.episode_length_s / self.dt))
        self.rng = np.random.default_rng(cfg.seed)
        self.torch_rng = torch.Generator(device="cpu").manual_seed(cfg.seed)

        self._build_physics()
        self._build_buffers()
        self.reset_all()

    # ----------------------------------------------------------------- construction
    def _build_physics(self) -> None:
        dyn = self.cfg.dynamics
        self.profile: RealityGapProfile | None = load_reality_gap(dyn.profile) if dyn.profile else None
        on_profile = self.profile is not None and dyn.physics == "profile"
        self.base_model = self._compile(self.profile.physics if on_profile else self.cfg.physics)
        self.nominal_frictionloss = self.base_model.dof_frictionloss.copy()
        if self.profile is not None:
            apply_body_dynamics(self.base_model, self.spec, replace(self.profile, added_mass=0.0))  # payload per env
            if not on_profile:
                self.base_model.opt.timestep = self.spec.control.sim_dt
        self.decimation = round(self.dt / self.base_model.opt.timestep)
        if abs(self.decimation * self.base_model.opt.timestep - self.dt) > 1e-9:
            raise ValueError(f"physics time step {self.base_model.opt.timestep} s must divide the policy period")
        self.ranges, self.latency_range = self._dynamics_ranges()
        self.models = [copy.copy(self.base_model) for _ in range(self.num_envs)]
        self.datas = [mujoco.MjData(self.base_model) for _ in range(self.cfg.num_threads)]
        self.rollout = rollout.Rollout(nthread=self.cfg.num_threads)
        m = self.base_model
        self.state_size = mujoco.mj_stateSize(m, STATE_SPEC)
        self.qpos = slice(1, 1 + m.nq)  # FULLPHYSICS state = [time, qpos, qvel, ...]
        self.qvel = slice(1 + m.nq, 1 + m.nq + m.nv)
        self.sensors = sensor_slices(m, self.spec)
        self.trunk_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "trunk")
        self.leg_geoms = leg_geoms(m, self.spec)
        ground = ["floor", "terrain"] if self.cfg.terrain.enabled else ["floor"]
        self.friction_geoms = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)
                               for n in [*ground, *self.spec.foot_names]]  # fmt: skip
        self.terrain_top = float(m.hfield_size[0, 2]) if m.nhfield else 0.0

        data = mujoco.MjData(m)
        data.qpos[:] = home_qpos(m, self.spec)
        mujoco.mj_forward(m, data)
        self.home_state = np.empty(self.state_size)
        mujoco.mj_getState(m, data, self.home_state, STATE_SPEC)
        data.qpos[7:] = self.spec.lying_pose  # lying level, the lowest foot on the floor: where a stand-up starts
        mujoco.mj_kinematics(m, data)
        feet = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, f) for f in self.spec.foot_names]
        self.lying_height = data.qpos[2] - (data.site_xpos[feet, 2].min() - self.spec.body.foot_radius)
        self.starts = self._load_initial_states()

    def _compile(self, physics) -> mujoco.MjModel:
        """The robot on the flat floor, or with the terrain field over it."""
        t = self.cfg.terrain
        if not t.enabled:
            return build_model(self.spec, physics)
        mj_spec = mujoco.MjSpec.from_string(build_model_xml(self.spec, physics))
        ground = Ground(step_height=t.step_height, slope=t.slope, tile_size=t.tile_size, terrain_size=t.size)
        add_terrain(mj_spec, ground, np.random.default_rng([self.cfg.seed, TERRAIN_STREAM]))
        model = mj_spec.compile()
        # Down to the floor over the field's outer metre: a robot that walks off it meets no cliff.
        n = int(model.hfield_nrow[0])
        edge = np.minimum(np.arange(n), np.arange(n)[::-1]) * TERRAIN_CELL
        ramp = np.clip(edge / TERRAIN_EDGE_M, 0.0, 1.0)
        model.hfield_data[:] = (model.hfield_data.reshape(n, n) * np.minimum.outer(ramp, ramp)).ravel()
        return model

    def _load_initial_states(self) -> dict[str, np.ndarray] | None:
        """The robot's logged policy-start states, each with the trunk height that rests its lowest foot on the
        floor (the logs need no height: a robot without a tracking camera has none)."""
        file = self.cfg.initial_states.file
        if not file:
            return None
        with np.load(file) as saved:
            q, roll_pitch = saved["q"].astype(float), saved["roll_pitch"].astype(float)
        if q.ndim != 2 or q.shape[1] != self.num_actions or roll_pitch.shape != (len(q), 2) or not len(q):
            raise ValueError(f"{file}: expected q (n, {self.num_actions}) and roll_pitch (n, 2) with n > 0")
        m, data = self.base_model, mujoco.MjData(self.base_model)
        feet = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, f) for f in self.spec.foot_names]
        height = np.empty(len(q))
        for i in range(len(q)):
            data.qpos[:] = home_qpos(m, self.spec)
            data.qpos[3:7], data.qpos[7:] = quaternion_rpy(*roll_pitch[i], 0.0), q[i]
            mujoco.mj_kinematics(m, data)
            height[i] = data.qpos[2] - (data.site_xpos[feet, 2].min() - self.spec.body.foot_radius)
        return {"q": q, "roll_pitch": roll_pitch, "height": height}

    def _dynamics_ranges(self) -> tuple[dict[str, list[float]], list[int]]:
        """Per-env sampling ranges of the dynamics, and of the latency in physics steps."""
        r, p, dyn = self.cfg.randomization, self.profile, self.cfg.dynamics
        # What no log identifies, drawn around a profile's figures too (each only when switched on)
        unlogged = {axis: [-r.com_displacement, r.com_displacement] for axis in COM_AXES} if r.com_displacement else {}
        unlogged.update({"backlash": [0.0, r.backlash]} if r.backlash else {})
        unlogged.update({"joint_strength": [1 - r.joint_strength, 1 + r.joint_strength]} if r.joint_strength else {})
        unlogged.update({"contact_draw": [0.0, 1.0]} if r.accurate_contact_share else {})  # accurate below the share
        if p is None:
            keys = ("friction", "added_mass", "motor_strength", "kp_factor", "kd_factor")
            return {**{k: getattr(r, k) for k in keys}, **unlogged}, list(r.latency_substeps)

        def around(value: float) -> list[float]:
            return [value * (1 - dyn.spread), value * (1 + dyn.spread)]

        dt = self.base_model.opt.timestep
        latency = dyn.ranges.get("latency_s", [p.actuator_latency_s - dyn.latency_spread_s,
                                               p.actuator_latency_s + dyn.latency_spread_s])  # fmt: skip
        steps = [min(max(round(s / dt), 0), self.decimation - 1) for s in latency]
        ranges = {
            "friction": around(p.friction),
            "added_mass": [p.added_mass - dyn.added_mass_spread, p.added_mass + dyn.added_mass_spread],
            "motor_strength": around(p.motor_strength),
            "kp_factor": around(p.kp_factor),
            "kd_factor": around(p.kd_factor),
        }
        ranges.update({k: list(v) for k, v in dyn.ranges.items() if k != "latency_s"})
        return {**ranges, **unlogged}, steps

    def _build_buffers(self) -> None:
        n, j, dev = self.num_envs, self.num_actions, self.device
        self.state = np.tile(self.home_state, (n, 1))
        self.state_out = np.zeros((n, self.decimation, self.state_size))
        self.sensor_out = np.zeros((n, self.decimation, self.base_model.nsensordata))
        self.control = np.zeros((n, self.decimation, j))
        self.prev_targets = np.tile(self.spec.default_pose, (n, 1))

        self.commands = torch.zeros(n, 3, device=dev)
        self.actions = torch.zeros(n, j, device=dev)
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=dev)
        self.obs_builder = ObservationBuilder(self.spec, n, dev)
        self.tracker = RewardTracker(n, j, len(self.spec.foot_names), dev)
        lower = torch.tensor(self.spec.position_lower, dtype=torch.float32)
        upper = torch.tensor(self.spec.position_upper, dtype=torch.float32)
        self.reward_fn = RewardFunction(self.cfg.rewards, lower, upper, self.dt)
        self.episode_sums = {name: torch.zeros(n, device=dev) for name in self.cfg.rewards.scales}
        # Per-environment dynamics, re-sampled at reset: friction, payload, strength, kp/kd factors, latency.
        self.params = {k: np.ones(n) for k in ("friction", "added_mass", "motor_strength", "kp_factor", "kd_factor")}
        self.params["added_mass"][:] = 0.0
        if self.cfg.randomization.com_displacement:
            self.params.update({axis: np.zeros(n) for axis in COM_AXES})
        if self.cfg.randomization.backlash:
            self.params["backlash"] = np.zeros(n)
        if self.cfg.randomization.joint_strength:
            self.params["joint_strength"] = np.ones((n, j))
        if self.cfg.randomization.accurate_contact_share:
            self.params["contact_draw"] = np.ones(n)
        if "joint_frictionloss_factor" in self.cfg.dynamics.ranges:
            self.params["joint_frictionloss_factor"] = np.ones(n)
        self.encoder_q = np.tile(self.spec.default_pose, (n, 1))  # what each joint's encoder reads (backlash)
        self.latency = np.zeros(n, dtype=np.int64)
        # Sensor calibration errors, drawn per episode (profile mode): encoder offsets, gyro bias, IMU tilt (rad).
        self.bias = {"joint_pos": np.zeros((n, j)), "gyro": np.zeros((n, 3)), "orientation": np.zeros((n, 3))}
        self.push_steps = max(1, int(round(self.cfg.randomization.push_interval_s / self.dt)))
        self.resample_steps = max(1, int(round(self.cfg.commands.resample_s / self.dt)))
        self.measured: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- VecEnv API
    def get_observations(self) -> TensorDict:
        return self.obs

    def step(self, actions: torch.Tensor) -> tuple[TensorDict, torch.Tensor, torch.Tensor, dict]:
        clip = self.spec.control.action_clip
        self.actions = torch.clamp(actions.to(self.device), -clip, clip)
        self._simulate(self.actions)
        self.episode_length_buf += 1
        self.measured = self._measure()
        jumped = self._first_action_too_far()

        rewards, terms = self.reward_fn(self._reward_inputs(), self.tracker)
        for name, value in terms.items():
            self.episode_sums[name] += value
        terminated = self._terminated() | jumped
        time_outs = self.episode_length_buf >= self.max_episode_length
        dones = terminated | time_outs

        extras = {"time_outs": time_outs, "log": {}}
        done_rows = dones.nonzero(as_tuple=False).flatten()
        if len(done_rows):
            extras["episode"] = self._episode_log(done_rows, terminated)
            self._reset_rows(done_rows)
        self._maybe_resample_commands()
        self._maybe_push()
        self.obs = self._observe()
        return self.obs, rewards, dones, extras

    # ----------------------------------------------------------------- physics
    def _simulate(self, actions: torch.Tensor) -> None:
        targets = self.action_map.targets(actions.cpu().numpy())
        targets = targets - self.bias["joint_pos"]  # the motor drives its own (offset) encoder to the target
        # Actuator latency: the previous target is still applied for the first `latency` physics steps.
        late = np.arange(self.decimation)[None, :] < self.latency[:, None]
        self.control[:] = np.where(late[..., None], self.prev_targets[:, None], targets[:, None])
        self.prev_targets = targets
        if "backlash" in self.params:  # the PD acts on the encoder's reading: shift the target by its error
            self.control += (self.state[:, self.qpos][:, 7:] - self.encoder_q)[:, None]
        self.rollout.rollout(
            self.models, self.datas, self.state, self.control, skip_checks=True, nstep=self.decimation,
            state=self.state_out, sensordata=self.sensor_out,
        )  # fmt: skip
        self.state = np.ascontiguousarray(self.state_out[:, -1])
        if "backlash" in self.params:
            self._turn_encoders(self.state_out[:, :, self.qpos][:, :, 7:])

    def _turn_encoders(self, joint_q: np.ndarray) -> None:
        """Backlash: each encoder follows its joint through the physics steps `joint_q` (envs, steps, joints) only
        once the joint is half the dead zone away. The PD sees the reading of the policy step's start (the stand-in
        updates it every tick: this is that law at the policy rate)."""
        half = self.params["backlash"][:, None] / 2
        for k in range(joint_q.shape[1]):
            self.encoder_q = np.clip(self.encoder_q, joint_q[:, k] - half, joint_q[:, k] + half)

    def _measure(self) -> dict[str, torch.Tensor]:
        """Everything the task reads, from the physics state after the last step (batched torch)."""
        return self._measurements(self.state[:, self.qpos], self.state[:, self.qvel], self.sensor_out[:, -1])

    def _measurements(self, qpos: np.ndarray, qvel: np.ndarray, sensordata: np.ndarray) -> dict[str, torch.Tensor]:
        """The task's readings of the ground truth (rows: environments)."""
        qpos, qvel, sensors = (torch.from_numpy(np.ascontiguousarray(a)).to(self.device, torch.float32)
                               for a in (qpos, qvel, sensordata))  # fmt: skip
        s = self.sensors
        quat = qpos[:, 3:7]
        return {
            "quat": quat,
            "base_height": qpos[:, 2],
            "lin_vel": rotate_inverse(quat, qvel[:, :3]),
            "ang_vel": qvel[:, 3:6],  # a free joint's angular velocity is already in the body frame
            "projected_gravity": projected_gravity(quat),
            "joint_pos": qpos[:, 7:],
            "joint_vel": qvel[:, 6:],
            "torques": sensors[:, s["actuator_force"]],
            "foot_contact": sensors[:, s["feet_touch"]] > 1.0,
            "trunk_force": sensors[:, s["trunk_touch"]].squeeze(-1),
        }

    def _reward_inputs(self) -> RewardInputs:
        m = self.measured
        return RewardInputs(
            command=self.commands, lin_vel=m["lin_vel"], ang_vel=m["ang_vel"],
            projected_gravity=m["projected_gravity"], base_height=m["base_height"], joint_pos=m["joint_pos"],
            joint_vel=m["joint_vel"], torques=m["torques"], action=self.actions, foot_contact=m["foot_contact"],
        )  # fmt: skip

    def _first_action_too_far(self) -> torch.Tensor:
        """Rows at their episode's first step whose action is past the limit on some joint (none when it is off)."""
        limit = self.cfg.termination.max_first_action
        if not limit:
            return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return (self.episode_length_buf == 1) & (self.actions.abs().amax(dim=-1) > limit)

    def _terminated(self) -> torch.Tensor:
        t, m = self.cfg.termination, self.measured
        tilted = (roll_pitch(m["quat"]).abs() > t.max_roll_pitch).any(-1)
        return (m["trunk_force"] > t.trunk_contact_force) | tilted | (m["base_height"] < t.min_base_height)

    # ----------------------------------------------------------------- observations
    def _observe(self) -> TensorDict:
        m = self.measured
        policy = self.obs_builder.push(self._observation_terms())
        p = self.params
        dynamics = torch.tensor(
            np.stack([p["friction"], p["added_mass"], p["motor_strength"]], axis=1), dtype=torch.float32
        ).to(self.device)
        privileged = torch.cat(
            [m["lin_vel"] * 2.0, m["base_height"][:, None], m["foot_contact"].float(), dynamics], dim=-1
        )
        return TensorDict({"policy": policy, "privileged": privileged}, batch_size=[self.num_envs], device=self.device)

    def _observation_terms(self) -> dict[str, torch.Tensor]:
        """The policy's raw observation terms: the truth with this episode's sensor biases and noise."""
        m, noise = self.measured, self.cfg.noise
        joint_pos = m["joint_pos"]
        if "backlash" in self.params:
            joint_pos = torch.as_tensor(self.encoder_q, dtype=torch.float32, device=self.device)
        raw = self.obs_builder.terms(m["quat"], m["ang_vel"], self.commands, joint_pos, m["joint_vel"],
                                   self.actions)  # fmt: skip
        if self.profile is not None:
            raw.update(self._biased(raw))
        if noise.enabled:
            for name in ("projected_gravity", "gyro", "joint_pos", "joint_vel"):
                raw[name] = raw[name] + getattr(noise, name) * self._randn(raw[name].shape)
        return raw

    def _biased(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Readings as a robot with this episode's calibration errors reports them."""
        bias = {k: torch.as_tensor(v, dtype=torch.float32, device=self.device) for k, v in self.bias.items()}
        gravity = raw["projected_gravity"]
        return {
            "projected_gravity": gravity - torch.linalg.cross(bias["orientation"], gravity),  # small tilt
            "gyro": raw["gyro"] + bias["gyro"],
            "joint_pos": raw["joint_pos"] + bias["joint_pos"],
        }

    # ----------------------------------------------------------------- resets and randomisation
    def reset_all(self) -> TensorDict:
        self._reset_rows(torch.arange(self.num_envs, device=self.device))
        self.measured = self._measure()
        self.obs = self._observe()
        return self.obs

    def _reset_rows(self, rows: torch.Tensor) -> None:
        idx = rows.cpu().numpy()
        n = len(idx)
        self.state[idx] = self._start_states(n)
        for key, rng_range in self.ranges.items():
            self.params[key][idx] = self.rng.uniform(*rng_range, (n, *self.params[key].shape[1:]))
        self.latency[idx] = self.rng.integers(self.latency_range[0], self.latency_range[1] + 1, n)
        if self.profile is not None and self.cfg.dynamics.sensor_bias:
            for key, values in self.bias.items():
                values[idx] = self.rng.normal(0.0, getattr(self.profile.bias, key), (n, values.shape[1]))
        self.prev_targets[idx] = self.spec.default_pose - self.bias["joint_pos"][idx]
        for i in idx:
            self._apply_dynamics(int(i))
        standing_up = idx[self.rng.random(n) < self.cfg.stand_up.share] if self.cfg.stand_up.share > 0 else idx[:0]
        self._lie_down(standing_up)
        if self.cfg.terrain.enabled:
            self._place_on_terrain(idx)
        self._stand_up(standing_up)
        self.encoder_q[idx] = self.state[idx, self.qpos][:, 7:]  # backlash: each dead zone starts centred
        self._reset_task(rows)

    def _start_states(self, n: int) -> np.ndarray:
        """`n` episode starts (physics states): the default pose with joint noise and a random heading, or a
        share from the robot's logged starts."""
        r = self.cfg.randomization
        state = np.tile(self.home_state, (n, 1))
        qpos = state[:, self.qpos]
        qpos[:, 7:] += self.rng.uniform(-r.init_joint_noise, r.init_joint_noise, (n, self.num_actions))
        yaw = self.rng.uniform(-np.pi, np.pi, n)
        qpos[:, 3:7] = np.stack([np.cos(yaw / 2), np.zeros(n), np.zeros(n), np.sin(yaw / 2)], axis=1)
        if self.starts is not None:
            self._start_like_the_robot(qpos, yaw)
        state[:, self.qpos] = qpos
        return state

    def _reset_task(self, rows: torch.Tensor) -> None:
        """The task's side of a reset: episode clock, last action, reward and observation history, command."""
        self.episode_length_buf[rows] = 0
        self.actions[rows] = 0.0
        self.tracker.reset(rows)
        self.obs_builder.reset(rows)
        self._sample_commands(rows)

    def _start_like_the_robot(self, qpos: np.ndarray, yaw: np.ndarray) -> None:
        """A share of the rows start from one of the robot's logged policy-start states (joint noise kept)."""
        n, starts = len(qpos), self.starts
        rows = np.flatnonzero(self.rng.random(n) < self.cfg.initial_states.share)
        pick = self.rng.integers(0, len(starts["q"]), len(rows))
        qpos[rows, 7:] += starts["q"][pick] - self.spec.default_pose
        qpos[rows, 2] = starts["height"][pick]
        roll, pitch = starts["roll_pitch"][pick].T
        qpos[rows, 3:7] = quaternion_rpy(roll, pitch, yaw[rows]).T

    def _lie_down(self, rows: np.ndarray) -> None:
        """These rows start lying level on the floor (their heading kept), whatever start they were given; the
        terrain, if any, then lifts them onto the ground under them."""
        q = self.qpos
        yaw = rpy_of_quaternion(self.state[rows, q.start + 3 : q.start + 7].T)[2]
        self.state[rows, q.start + 3 : q.start + 7] = quaternion_rpy(np.zeros_like(yaw), np.zeros_like(yaw), yaw).T
        self.state[rows, q.start + 2] = self.lying_height
        self.state[rows, q.start + 7 : q.stop] = self.spec.lying_pose
        self.state[rows, self.qvel] = 0.0

    def _stand_up(self, rows: np.ndarray) -> None:
        """These lying rows are stood up as deploy's soft start does (StandUpConfig), in their own dynamics and on
        their own ground; the episode begins where that stand ends."""
        if not len(rows):
            return
        cfg = self.cfg.stand_up
        dt = self.base_model.opt.timestep
        ramp, hold = round(cfg.ramp_s / dt), round(cfg.hold_s / dt)
        alpha = np.minimum(np.arange(1, ramp + hold + 1) / max(ramp, 1), 1.0)[:, None]
        path = (1.0 - alpha) * self.spec.lying_pose + alpha * self.spec.default_pose  # (steps, joints)
        models = [self.models[i] for i in rows]
        for start in range(0, len(path), STAND_UP_CHUNK):
            chunk = path[start : start + STAND_UP_CHUNK]
            control = chunk[None] - self.bias["joint_pos"][rows][:, None]  # each motor drives its own encoder
            out = np.empty((len(rows), len(chunk), self.state.shape[1]))
            self.rollout.rollout(models, self.datas, self.state[rows], control, skip_checks=True, nstep=len(chunk),
                                 state=out)  # fmt: skip
            self.state[rows] = out[:, -1]

    def _place_on_terrain(self, idx: np.ndarray) -> None:
        """Each reset row on a random spot of the field, with its own share of the roughness (the field's height
        scaled), its feet resting on the highest ground under them."""
        r, n = self.cfg.terrain.spawn_radius, len(idx)
        xy, share = self.rng.uniform(-r, r, (n, 2)), self.rng.uniform(0.0, 1.0, n)
        for k, i in enumerate(idx):
            model = self.models[i]
            model.hfield_size[0, 2] = max(self.terrain_top * share[k], 1e-6)
            self.state[i, self.qpos.start : self.qpos.start + 2] = xy[k]
            self.state[i, self.qpos.start + 2] += ground_top(model, SPAWN_CLEARANCE_M, at=tuple(xy[k]))

    def _apply_dynamics(self, i: int) -> None:
        model, base, p = self.models[i], self.base_model, self.params
        model.geom_friction[self.friction_geoms, 0] = p["friction"][i]
        model.body_mass[self.trunk_id] = base.body_mass[self.trunk_id] + p["added_mass"][i]
        if COM_AXES[0] in p:
            model.body_ipos[self.trunk_id] = base.body_ipos[self.trunk_id] + [p[axis][i] for axis in COM_AXES]
        strength = p["motor_strength"][i] * (p["joint_strength"][i] if "joint_strength" in p else 1.0)
        kp = self.spec.control.kp * p["kp_factor"][i] * strength
        kd = self.spec.control.kd * p["kd_factor"][i] * strength
        model.actuator_gainprm[:, 0] = kp
        model.actuator_biasprm[:, 1] = -kp
        model.actuator_biasprm[:, 2] = -kd
        model.actuator_forcerange[:] = base.actuator_forcerange * np.reshape(strength, (-1, 1))
        if "joint_frictionloss_factor" in p:
            model.dof_frictionloss[6:] = self.nominal_frictionloss[6:] * p["joint_frictionloss_factor"][i]
        if "contact_draw" in p:
            self._set_contact_model(model, p["contact_draw"][i] < self.cfg.randomization.accurate_contact_share)

    def _set_contact_model(self, model: mujoco.MjModel, accurate: bool) -> None:
        """One env's contacts: the accurate model (ACCURATE_CONTACT) or the base model's fast one."""
        base, fast = self.base_model, not accurate
        model.opt.cone = base.opt.cone if fast else mujoco.mjtCone.mjCONE_ELLIPTIC
        model.opt.impratio = base.opt.impratio if fast else ACCURATE_CONTACT.impratio
        model.opt.iterations = base.opt.iterations if fast else ACCURATE_CONTACT.iterations
        model.opt.ls_iterations = base.opt.ls_iterations if fast else ACCURATE_CONTACT.ls_iterations
        legs, bodies = self.leg_geoms, base.geom_bodyid[self.leg_geoms]
        model.geom_contype[legs] = base.geom_contype[legs] if fast else LEG_CONTACT[0]
        model.geom_conaffinity[legs] = base.geom_conaffinity[legs] if fast else LEG_CONTACT[1]
        # the collision broadphase filters by body first: a body's types are its geoms' (compiled, not derived)
        model.body_contype[bodies] = base.body_contype[bodies] | (0 if fast else LEG_CONTACT[0])
        model.body_conaffinity[bodies] = base.body_conaffinity[bodies] | (0 if fast else LEG_CONTACT[1])

    def _sample_commands(self, rows: torch.Tensor) -> None:
        c, n = self.cfg.commands, len(rows)
        low = torch.tensor([c.lin_vel_x[0], c.lin_vel_y[0], c.yaw_rate[0]])
        high = torch.tensor([c.lin_vel_x[1], c.lin_vel_y[1], c.yaw_rate[1]])
        cmd = low + (high - low) * torch.rand(n, 3, generator=self.torch_rng)
        cmd[cmd[:, :2].norm(dim=-1) < 0.2, :2] = 0.0  # tiny speeds are hard to tell from standing
        cmd[torch.rand(n, generator=self.torch_rng) < c.zero_probability] = 0.0
        self.commands[rows] = cmd.to(self.device)

    def _maybe_resample_commands(self) -> None:
        due = (self.episode_length_buf % self.resample_steps == 0) & (self.episode_length_buf > 0)
        rows = due.nonzero(as_tuple=False).flatten()
        if len(rows):
            self._sample_commands(rows)

    def _maybe_push(self) -> None:
        due = (self.episode_length_buf % self.push_steps == 0) & (self.episode_length_buf > 0)
        idx = due.nonzero(as_tuple=False).flatten().cpu().numpy()
        if len(idx) and self.cfg.randomization.push_velocity > 0:
            v = self.cfg.randomization.push_velocity
            self._push(idx, self.rng.uniform(-v, v, (len(idx), 2)))

    def _push(self, idx: np.ndarray, velocity_xy: np.ndarray) -> None:
        """Add horizontal velocity to the trunks of rows `idx`."""
        qvel = self.state[idx][:, self.qvel]
        qvel[:, :2] += velocity_xy
        self.state[idx, self.qvel] = qvel

    def _episode_log(self, rows: torch.Tensor, terminated: torch.Tensor) -> dict[str, torch.Tensor]:
        log = {}
        for name, sums in self.episode_sums.items():
            log[f"rew_{name}"] = torch.mean(sums[rows]) / self.cfg.episode_length_s
            sums[rows] = 0.0
        log["/metrics/fall_rate"] = terminated[rows].float().mean()
        return log

    def _randn(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=self.torch_rng).to(self.device)

    def close(self) -> None:
        self.rollout.close()
