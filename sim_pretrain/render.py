"""Pictures of the gait on a CPU (MuJoCo's EGL renderer): a filmstrip PNG and an animated GIF.

Runs one environment of the training task (same observation pipeline, nominal dynamics) under a fixed command
and renders the physics state with a camera that follows the trunk.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_spec.policy_io import LoadedPolicy  # noqa: E402
from sim_pretrain.backends import make_env  # noqa: E402
from sim_pretrain.env import STATE_SPEC  # noqa: E402
from sim_pretrain.env_config import EnvConfig  # noqa: E402


@torch.inference_mode()
def render_gait(policy: LoadedPolicy, command: list[float], out_dir: Path, seconds: float = 4.0, fps: int = 25) -> Path:
    cfg = EnvConfig(num_envs=1, num_threads=1, episode_length_s=seconds + 1.0)
    cfg.randomization.push_velocity = 0.0
    env = make_env(policy.contract["robot"], "mujoco", cfg)  # it renders MuJoCo's state
    env.commands[:] = torch.tensor(command)
    obs = env._observe()
    model, data = env.base_model, mujoco.MjData(env.base_model)
    renderer = mujoco.Renderer(model, 360, 480)
    camera = mujoco.MjvCamera()
    camera.distance, camera.elevation, camera.azimuth = 1.4, -15.0, 90.0
    frames, every = [], max(1, round(1.0 / (fps * env.dt)))
    for step in range(int(seconds / env.dt)):
        obs, *_ = env.step(policy.actor(obs["policy"]))
        env.commands[:] = torch.tensor(command)
        if step % every == 0:
            mujoco.mj_setState(model, data, env.state[0], STATE_SPEC)
            mujoco.mj_forward(model, data)
            camera.lookat[:] = data.qpos[:3]
            renderer.update_scene(data, camera)
            frames.append(renderer.render().copy())
    renderer.close()
    env.close()
    return _save(frames, out_dir, fps)


def _save(frames: list[np.ndarray], out_dir: Path, fps: int) -> Path:
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(out_dir / "gait.gif", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    strip = [frames[i] for i in np.linspace(0, len(frames) - 1, 6).astype(int)]
    Image.fromarray(np.concatenate(strip, axis=1)).save(out_dir / "gait_filmstrip.png")
    return out_dir / "gait.gif"
