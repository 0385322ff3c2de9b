"""The statistics behind "gap recovered" and "no more falls" (uni_o4/gap_stats.py)."""

import numpy as np
import pytest

from uni_o4.gap_stats import gap_with_interval, more_falls_p, row_means, episode_values


def episodes(tracking: list[float], returns: list[float], falls: int = 0, steps: int = 1000) -> list[dict]:
    return [{"tracking_error_xy": t, "return": r, "policy_steps": steps // 2 if k < falls else steps,
             "outcome": "fall" if k < falls else "timeout"} for k, (t, r) in enumerate(zip(tracking, returns))]


def seed(rng, sim, oracle, row, n=12, noise=0.01):
    def draw(m):
        return episodes(list(m[0] + noise * rng.standard_normal(n)), list(m[1] + 10 * noise * rng.standard_normal(n)))

    return {"sim policy": draw(sim), "oracle": draw(oracle), "ours": draw(row)}


def test_row_means_weigh_tracking_by_steps_walked_as_the_evaluation_does():
    rows = [{**e, "tracking_error_yaw": y} for e, y in zip(episodes([0.1, 0.4], [10.0, 2.0], falls=1), (0.3, 0.6))]
    v = episode_values(rows)  # the fallen one walked half as long
    assert row_means(v) == pytest.approx({"tracking": (0.1 * 500 + 0.4 * 1000) / 1500,
                                          "yaw": (0.3 * 500 + 0.6 * 1000) / 1500, "return": 6.0})  # fmt: skip


def test_gap_recovered_is_from_per_seed_means_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    seeds = [seed(rng, (0.25, 5.0), (0.10, 25.0), (0.175, 15.0)) for _ in range(3)]
    for metric in ("tracking", "return"):
        g = gap_with_interval(seeds, "ours", metric, resamples=300)
        assert g.value == pytest.approx(0.5, abs=0.05) and g.low < g.value < g.high and g.high - g.low < 0.2


def test_gap_recovered_is_na_when_the_oracle_is_no_better_than_noise():
    rng = np.random.default_rng(1)
    seeds = [seed(rng, (0.25, 5.0), (0.249, 5.05), (0.2, 10.0), noise=0.05) for _ in range(2)]
    g = gap_with_interval(seeds, "ours", "tracking", resamples=300)
    assert g.value is None and g.oracle_margin_low <= 0


def test_more_falls_is_a_one_sided_exact_test():
    assert more_falls_p(0, 12, 9, 12) == pytest.approx(1.0)  # fewer falls: no evidence of more
    assert more_falls_p(1, 12, 0, 12) == pytest.approx(0.5)  # one fall against none is chance
    assert more_falls_p(9, 12, 1, 12) < 0.01  # nine against one is not
    # the exact tail: 3 falls of 6 vs 0 of 6 -> C(6,3)C(6,0)/C(12,3)
    assert more_falls_p(3, 6, 0, 6) == pytest.approx(20 / 220)


def test_the_gap_can_be_measured_to_another_far_end_than_the_oracle():
    rng = np.random.default_rng(2)
    seeds = [seed(rng, (0.25, 5.0), (0.10, 25.0), (0.20, 10.0)) for _ in range(2)]
    nominal = [{"sim policy": s["sim policy"], "sim policy, no gap": s["oracle"], "ours": s["ours"]} for s in seeds]
    g = gap_with_interval(nominal, "ours", "tracking", resamples=300, ceiling="sim policy, no gap")
    assert g.value == pytest.approx(gap_with_interval(seeds, "ours", "tracking", resamples=300).value)
    assert g.value == pytest.approx(1 / 3, abs=0.05)
    with pytest.raises(KeyError):
        gap_with_interval(nominal, "ours", "tracking", resamples=10)  # no oracle in these runs
