"""How sure a "gap recovered" figure is: bootstrap intervals over evaluation episodes, and the one-sided test
behind "no more falls".

Gap recovered = (row − sim policy) ÷ (oracle − sim policy), from per-seed means averaged over seeds (each seed is
another stand-in robot). The bootstrap resamples each (seed, row)'s episodes with replacement and recomputes it;
the figure is n/a when the oracle's own margin over the sim policy is within that noise (no ceiling to measure
against). Falls: a row falls more than the sim policy only if a one-sided Fisher exact test over all its episodes
says so (p < alpha), not on a raw count.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

METRICS = {"tracking": True, "yaw": True, "return": False}  # metric -> lower is better


def episode_values(per_episode: list[dict]) -> dict[str, np.ndarray]:
    """Arrays over one row's episodes: xy and yaw-rate tracking error, policy steps (their weight), return, fell."""
    return {
        "tracking": np.array([e["tracking_error_xy"] for e in per_episode], dtype=float),
        "yaw": np.array([e.get("tracking_error_yaw", np.nan) for e in per_episode], dtype=float),
        "steps": np.array([e["policy_steps"] for e in per_episode], dtype=float),
        "return": np.array([e["return"] for e in per_episode], dtype=float),
        "fell": np.array([e["outcome"] == "fall" for e in per_episode], dtype=float),
    }


def row_means(v: dict[str, np.ndarray], pick: np.ndarray | None = None) -> dict[str, float]:
    """A row's means (episodes `pick`, default all): tracking over steps walked, as robot_eval.log_metrics does."""
    pick = np.arange(len(v["return"])) if pick is None else pick
    steps = v["steps"][pick]
    walked = steps > 0
    weight = steps[walked].sum()

    def over_steps(error: np.ndarray) -> float:
        return float((error[walked] * steps[walked]).sum() / weight) if weight else float("nan")

    return {"tracking": over_steps(v["tracking"][pick]), "yaw": over_steps(v["yaw"][pick]),
            "return": float(v["return"][pick].mean())}  # fmt: skip


def gap_recovered(value: float, sim: float, oracle: float, lower_is_better: bool = False) -> float | None:
    """(value − sim) ÷ (oracle − sim): 0 = the sim policy, 1 = the oracle; None when the oracle is no better than
    the sim policy (no ceiling: nothing known to recover). Whether its margin is more than chance is
    gap_with_interval's to judge."""
    margin = (sim - oracle) if lower_is_better else (oracle - sim)
    return None if margin <= 1e-9 else (value - sim) / (oracle - sim)


@dataclass
class GapEstimate:
    value: float | None  # None: the oracle's margin is within noise
    low: float | None
    high: float | None
    oracle_margin_low: float  # the bootstrap's lower bound of the oracle's improvement over the sim policy


def gap_with_interval(seeds: list[dict[str, list[dict]]], row: str, metric: str, resamples: int = 2000,
                      level: float = 0.95, seed: int = 0, ceiling: str = "oracle") -> GapEstimate:  # fmt: skip
    """`seeds`: per seed, {"sim policy": per_episode, ceiling: per_episode, row: per_episode}; `ceiling` is the
    row that stands for the gap's far end (the oracle, or the sim policy on the nominal model)."""
    lower_is_better = METRICS[metric]
    names = ("sim policy", ceiling, row)
    values = [{name: episode_values(s[name]) for name in names} for s in seeds]

    def estimate(picks: list[dict[str, np.ndarray]] | None) -> tuple[float, float]:
        """(gap recovered, the oracle's margin) from per-seed means over the episodes `picks` (None: all)."""
        means = {name: np.mean([row_means(v[name], picks[i][name] if picks else None)[metric]
                                for i, v in enumerate(values)]) for name in names}  # fmt: skip
        sim, oracle = means["sim policy"], means[ceiling]
        margin = (sim - oracle) if lower_is_better else (oracle - sim)
        share = gap_recovered(means[row], sim, oracle, lower_is_better)
        return (float("nan") if share is None else share), margin

    rng = np.random.default_rng(seed)
    draws = [estimate([{name: rng.integers(0, len(v[name]["return"]), len(v[name]["return"])) for name in v}
                       for v in values]) for _ in range(resamples)]  # fmt: skip
    gaps, margins = np.array([d[0] for d in draws]), np.array([d[1] for d in draws])
    tail = (1 - level) / 2
    margin_low = float(np.quantile(margins, tail))
    point, _ = estimate(None)
    if margin_low <= 0 or not np.isfinite(point):
        return GapEstimate(None, None, None, margin_low)
    low, high = np.nanquantile(gaps, [tail, 1 - tail])
    return GapEstimate(float(point), float(low), float(high), margin_low)


def more_falls_p(falls: int, episodes: int, base_falls: int, base_episodes: int) -> float:
    """One-sided Fisher exact test: the probability, if both fall alike, that the row would fall at least `falls`
    times of `episodes` given all falls of both (small p: it falls more than the base)."""
    total, n = falls + base_falls, episodes + base_episodes
    denominator = comb(n, total)
    return float(sum(comb(episodes, k) * comb(base_episodes, total - k)
                     for k in range(falls, min(episodes, total) + 1)) / denominator)  # fmt: skip
