"""Uneven ground as a MuJoCo heightfield: the stand-in's terrain (drawn once from its seed) and the training
simulator's (optional randomisation of roughness, which no log identifies: a policy must cope with it).

Square tiles of uniform random height in [0, step_height] (low steps) on two crossed sine hills whose steepest
grade is `slope`, on a grid of TERRAIN_CELL spacing centred on the start point; the flat floor plane lies beyond.
"""

from __future__ import annotations

import mujoco
import numpy as np

from robot_spec.reality_gap import Ground

TERRAIN_CELL = 0.05  # m, the heightfield's grid spacing
HILL_WAVELENGTH = 4.0  # m


def terrain_heights(ground: Ground, rng: np.random.Generator) -> np.ndarray:
    """Heights (m, >= 0, min 0) on the square grid."""
    n = round(ground.terrain_size / TERRAIN_CELL) + 1
    x = np.arange(n) * TERRAIN_CELL
    tiles = rng.uniform(0.0, ground.step_height, (n, n))  # more tiles than needed: index by tile number
    tile = (x // ground.tile_size).astype(int)
    heights = tiles[np.ix_(tile, tile)]
    phase = rng.uniform(0.0, 2 * np.pi, 2)
    amplitude = ground.slope * HILL_WAVELENGTH / (2 * np.pi)  # a sine's steepest grade is 2 pi A / wavelength
    hills = amplitude * (np.sin(2 * np.pi * x / HILL_WAVELENGTH + phase[0])[None, :]
                         + np.sin(2 * np.pi * x / HILL_WAVELENGTH + phase[1])[:, None])  # fmt: skip
    heights = heights + hills
    return heights - heights.min()


def add_terrain(mj_spec: mujoco.MjSpec, ground: Ground, rng: np.random.Generator) -> None:
    """A heightfield geom named "terrain" over the floor plane (the plane stays beyond it)."""
    heights = terrain_heights(ground, rng)
    top = max(float(heights.max()), 1e-4)
    half = ground.terrain_size / 2
    n = heights.shape[0]
    mj_spec.add_hfield(name="terrain", nrow=n, ncol=n, size=[half, half, top, 0.05],
                       userdata=(heights / top).ravel().tolist())  # fmt: skip
    # Contact bits as the floor's: the robot touches it, and nothing else does.
    mj_spec.worldbody.add_geom(name="terrain", type=mujoco.mjtGeom.mjGEOM_HFIELD, hfieldname="terrain",
                               contype=1, conaffinity=2, rgba=[0.6, 0.6, 0.55, 1.0])  # fmt: skip


def ground_top(model: mujoco.MjModel, radius: float = 0.5, at: tuple[float, float] = (0.0, 0.0)) -> float:
    """The terrain's highest point within `radius` (m, a square) of the point `at` (0 on a flat floor)."""
    if not model.nhfield:
        return 0.0
    n, r = int(model.hfield_nrow[0]), round(radius / TERRAIN_CELL)
    heights = model.hfield_data.reshape(n, n) * model.hfield_size[0, 2]
    col, row = (round(c / TERRAIN_CELL) + n // 2 for c in at)  # hfield rows run along y, columns along x
    rows, cols = slice(max(row - r, 0), max(row + r + 1, 0)), slice(max(col - r, 0), max(col + r + 1, 0))
    patch = heights[rows, cols]
    return float(patch.max()) if patch.size else 0.0
