"""A MuJoCo model of the robot, built from the specification's figures (no model is downloaded).

Primitive shapes only: a box trunk, capsule legs and sphere feet. PD control runs inside MuJoCo as
position actuators (kp, kv), so the whole decimation loop can run in C via `mujoco.rollout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from robot_spec.spec import LinkSpec, RobotSpec

# Sign of (x, y) of each leg's mounting point on the trunk.
LEG_SIGNS = {"FL": (1, 1), "FR": (1, -1), "RL": (-1, 1), "RR": (-1, -1)}
SENSORS = ("gyro", "velocimeter", "accelerometer", "feet_touch", "trunk_touch", "actuator_force")


@dataclass(frozen=True)
class PhysicsOptions:
    """Solver settings: a 10× speed lever on a CPU (see DESIGN.md's performance facts)."""

    cone: str = "pyramidal"
    impratio: float = 1.0
    iterations: int = 4
    ls_iterations: int = 8
    collisions: str = "feet_trunk"  # "feet_trunk" (fast, for training) or "all" (legs collide too)
    floor_friction: float = 1.0


# The accurate contact model (the stand-in's `strong`): elliptic friction cones with stiffer friction constraints, a
# solver run to convergence, and legs that touch the ground. The elliptic cone alone at the training solver's 4
# iterations is a third model, neither this nor the pyramidal one (docs/reality_gap.md, stop 28).
ACCURATE_CONTACT = PhysicsOptions(cone="elliptic", impratio=2.0, iterations=20, ls_iterations=10, collisions="all")
LEG_CONTACT = (2, 1)  # contype, conaffinity of a leg geom that collides (the floor's are 1, 2: they meet)


def _vec(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _inertial(link: LinkSpec, flip_x: bool = False, flip_y: bool = False) -> str:
    com = np.array(link.com, dtype=float)
    com[0] *= -1 if flip_x else 1
    com[1] *= -1 if flip_y else 1
    return f'<inertial pos="{_vec(com)}" mass="{link.mass}" diaginertia="{_vec(link.inertia)}"/>'


def _leg_xml(spec: RobotSpec, leg: str, leg_geoms_collide: bool) -> str:
    b = spec.body
    sx, sy = LEG_SIGNS[leg]
    hip_pos = (sx * b.hip_offset[0], sy * b.hip_offset[1], b.hip_offset[2])
    thigh_pos = (b.thigh_offset[0], sy * b.thigh_offset[1], b.thigh_offset[2])
    contype, conaffinity = LEG_CONTACT if leg_geoms_collide else (0, 0)
    leg_contact = f'contype="{contype}" conaffinity="{conaffinity}"'
    calf_len = -b.calf_offset[2]
    foot_z = b.foot_offset[2]
    return f"""
    <body name="{leg}_hip" pos="{_vec(hip_pos)}">
      {_inertial(b.hip, flip_x=sx < 0, flip_y=sy < 0)}
      <joint name="{leg}_hip_joint" axis="1 0 0" class="{spec.joints_per_leg[0]}"/>
      <geom type="cylinder" size="0.046 0.02" euler="1.5708 0 0" {leg_contact} rgba="0.2 0.2 0.2 1"/>
      <body name="{leg}_thigh" pos="{_vec(thigh_pos)}">
        {_inertial(b.thigh, flip_y=sy < 0)}
        <joint name="{leg}_thigh_joint" axis="0 1 0" class="{spec.joints_per_leg[1]}"/>
        <geom type="capsule" fromto="0 0 0 0 0 {-calf_len:.4f}" size="0.015" {leg_contact} rgba="0.3 0.3 0.3 1"/>
        <body name="{leg}_calf" pos="{_vec(b.calf_offset)}">
          {_inertial(b.calf, flip_y=sy < 0)}
          <joint name="{leg}_calf_joint" axis="0 1 0" class="{spec.joints_per_leg[2]}"/>
          <geom type="capsule" fromto="0 0 0 0 0 {foot_z * 0.85:.4f}" size="0.01" {leg_contact} rgba="0.5 0.5 0.5 1"/>
          <geom name="{leg}_foot" type="sphere" pos="0 0 {foot_z}" size="{b.foot_radius}" contype="2" conaffinity="1"
                friction="{b.foot_friction} 0.02 0.01" rgba="0.1 0.1 0.1 1"/>
          <site name="{leg}_foot" pos="0 0 {foot_z}" size="{b.foot_radius * 1.3:.4f}"/>
        </body>
      </body>
    </body>"""


def _joint_defaults(spec: RobotSpec) -> str:
    b, lim, c = spec.body, spec.limits, spec.control
    out = []
    for i, kind in enumerate(spec.joints_per_leg):
        out.append(
            f'<default class="{kind}">'
            f'<joint range="{lim.position_lower[i]} {lim.position_upper[i]}" damping="{b.joint_damping}" '
            f'armature="{b.armature[i]}" frictionloss="{b.joint_frictionloss}"/>'
            f'<position kp="{c.kp}" kv="{c.kd}" forcerange="{-lim.torque[i]} {lim.torque[i]}" forcelimited="true" '
            f'ctrlrange="{lim.position_lower[i]} {lim.position_upper[i]}"/>'
            f"</default>"
        )
    return "\n    ".join(out)


def leg_geoms(model: mujoco.MjModel, spec: RobotSpec) -> np.ndarray:
    """Ids of the leg geoms other than the feet (hip, thigh, calf): those `collisions` switches on."""
    feet = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, f) for f in spec.foot_names}
    legs = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"{leg}_{part}")
            for leg in spec.legs for part in ("hip", "thigh", "calf")}  # fmt: skip
    return np.array([g for g in range(model.ngeom) if model.geom_bodyid[g] in legs and g not in feet], dtype=int)


def build_model_xml(spec: RobotSpec, physics: PhysicsOptions = PhysicsOptions()) -> str:
    b = spec.body
    legs = "".join(_leg_xml(spec, leg, physics.collisions == "all") for leg in spec.legs)
    actuators = "\n    ".join(
        f'<position name="{name}" joint="{name}" class="{spec.joints_per_leg[i % len(spec.joints_per_leg)]}"/>'
        for i, name in enumerate(spec.joint_names)
    )
    feet_touch = "\n    ".join(f'<touch name="{foot}_touch" site="{foot}"/>' for foot in spec.foot_names)
    actuator_force = "\n    ".join(f'<actuatorfrc name="{n}_force" actuator="{n}"/>' for n in spec.joint_names)
    touch_box = [e + 0.01 for e in b.trunk.box_half_extents]
    return f"""<mujoco model="{spec.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{spec.control.sim_dt}" cone="{physics.cone}" impratio="{physics.impratio}"
          iterations="{physics.iterations}" ls_iterations="{physics.ls_iterations}" integrator="implicitfast"/>
  <default>
    {_joint_defaults(spec)}
  </default>
  <visual><global offwidth="640" offheight="480"/><headlight ambient="0.5 0.5 0.5" diffuse="0.6 0.6 0.6"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.25 0.3 0.35" rgb2="0.75 0.75 0.75" width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="4 4" texuniform="true"/>
  </asset>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="0 0 0.05" contype="1" conaffinity="2"
          friction="{physics.floor_friction} 0.005 0.0001" material="grid"/>
    <body name="trunk" pos="0 0 {spec.spawn_height}">
      <freejoint name="root"/>
      {_inertial(b.trunk)}
      <geom name="trunk" type="box" size="{_vec(b.trunk.box_half_extents)}" contype="2" conaffinity="1" rgba="0.9 0.6 0.1 1"/>
      <site name="imu" pos="0 0 0"/>
      <site name="trunk_touch" type="box" size="{_vec(touch_box)}"/>{legs}
    </body>
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
  <sensor>
    <gyro name="gyro" site="imu"/>
    <velocimeter name="velocimeter" site="imu"/>
    <accelerometer name="accelerometer" site="imu"/>
    {feet_touch}
    <touch name="trunk_touch" site="trunk_touch"/>
    {actuator_force}
  </sensor>
</mujoco>
"""


def build_model(spec: RobotSpec, physics: PhysicsOptions = PhysicsOptions()) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(build_model_xml(spec, physics))


def sensor_slices(model: mujoco.MjModel, spec: RobotSpec) -> dict[str, slice]:
    """Where each named sensor group sits in `sensordata` (groups are contiguous by construction)."""

    def span(names: list[str]) -> slice:
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, n) for n in names]
        start = int(model.sensor_adr[ids[0]])
        end = int(model.sensor_adr[ids[-1]] + model.sensor_dim[ids[-1]])
        return slice(start, end)

    return {
        "gyro": span(["gyro"]),
        "velocimeter": span(["velocimeter"]),
        "accelerometer": span(["accelerometer"]),
        "feet_touch": span([f"{f}_touch" for f in spec.foot_names]),
        "trunk_touch": span(["trunk_touch"]),
        "actuator_force": span([f"{n}_force" for n in spec.joint_names]),
    }


def home_qpos(model: mujoco.MjModel, spec: RobotSpec, height: float | None = None) -> np.ndarray:
    """Standing at the default pose: trunk upright at `height`, joints at the default angles."""
    qpos = model.qpos0.copy()
    qpos[2] = spec.standing_height if height is None else height
    qpos[3:7] = (1.0, 0.0, 0.0, 0.0)
    qpos[7:] = spec.default_pose
    return qpos
