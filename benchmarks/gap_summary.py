"""Gap recovered over several stand-in robots, with bootstrap intervals, and the one-sided test for falls.

Reads benchmarks/gap_recovery.py results (one file per seed, or one with several) and `uni_o4 pipeline` run
folders (one per seed), groups them by profile, and for every row that each seed has gives: return, tracking and
falls per episode (mean over seeds), the share of the gap it recovers, sim policy → oracle and, where the runs
evaluated the sim policy on the nominal model, sim policy → nominal (from per-seed means; 95 % bootstrap interval
over episodes; n/a when the far end's margin is within noise), and whether it falls more than the sim policy
(one-sided Fisher exact test over all its episodes, p < 0.05). uni_o4/gap_stats.py holds the statistics.

    python benchmarks/gap_summary.py benchmarks/results/gap_recovery_strong_starts_s{0,1,2}.json \
        --name gap_summary_strong
    python benchmarks/gap_summary.py runs/pipeline/seed0 runs/pipeline/seed1 --name pipeline_seeds_strong
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from uni_o4.gap_stats import METRICS, episode_values, gap_with_interval, more_falls_p, row_means  # noqa: E402

NOMINAL = "sim policy, no gap"  # the pipeline's row: the sim policy on the training model, the gap's nominal end
# the gap's far end -> (its summary keys' prefix, its table label)
CEILINGS = {"oracle": ("gap", "sim → oracle"), NOMINAL: ("nominal_gap", "sim → nominal")}
REFERENCE = ("sim policy", *CEILINGS)
ALPHA = 0.05


def seeds_by_profile(paths: list[Path]) -> dict[str, list[dict]]:
    """{profile: [rows of one seed, ...]} from gap_recovery result files ("<profile> seed <n>" keys) and pipeline
    run folders."""
    grouped: dict[str, list[dict]] = {}
    for path in paths:
        results = pipeline_results(path) if path.is_dir() else json.loads(path.read_text())["results"]
        for key, rows in results.items():
            missing = [name for name, row in rows.items() if "per_episode" not in row]
            if missing:
                raise ValueError(f"{path}: {key} has no per-episode metrics for {missing} (rerun gap_recovery.py: "
                                 "it resumes from its folders)")  # fmt: skip
            profile, seed = key.rsplit(" seed ", 1)
            grouped.setdefault(profile, []).append({candidate_name(name, int(seed)): row for name, row in rows.items()})
    return grouped


def pipeline_results(run: Path) -> dict[str, dict]:
    """A pipeline run folder as a gap_recovery result: {"<profile> seed <n>": {stage: its evaluation's metrics}},
    measured from each evaluation's logs by today's definitions (robot_eval.log_metrics)."""
    from robot_spec import load_robot
    from uni_o4.pipeline import ORACLE_STAGE, row_eval_folder
    from uni_o4.robot_eval import log_metrics

    if not (run / "pipeline.json").is_file():
        raise ValueError(f"{run}: not a pipeline run folder (no pipeline.json)")
    request = json.loads((run / "pipeline_request.json").read_text())
    spec = load_robot(request.get("robot", "go1"))
    rows = {"oracle" if r["stage"] == ORACLE_STAGE else r["stage"]: log_metrics(row_eval_folder(run, r), spec)
            for r in json.loads((run / "pipeline.json").read_text())}  # fmt: skip
    return {f"{request['profile']} seed {request['seed']}": rows}


def candidate_name(row: str, seed: int) -> str:
    """Older files name sim_ppo's candidates by PPO seed (seed + k): the same candidate k on every robot."""
    if row == "ours (sim_ppo)":
        return "ours, candidate 0"
    match = re.fullmatch(r"ours \(sim_ppo\), PPO seed (\d+)", row)
    return f"ours, candidate {int(match[1]) - seed}" if match else row


def summarise(seeds: list[dict], resamples: int) -> dict:
    """Per row present in every seed: means over seeds, gap recovered with its interval, the falls test."""
    common = [name for name in seeds[0] if all(name in s for s in seeds)]
    episodes = [{name: s[name]["per_episode"] for name in common} for s in seeds]
    sim_falls = [episode_values(e["sim policy"])["fell"] for e in episodes]
    out = {}
    for name in common:
        values = [episode_values(e[name]) for e in episodes]
        falls = int(sum(v["fell"].sum() for v in values))
        n = sum(len(v["fell"]) for v in values)
        row = {"seeds": len(seeds), "episodes": n,
               **{metric: float(np.mean([row_means(v)[metric] for v in values])) for metric in METRICS},
               "falls_per_episode": falls / n,
               "more_falls_than_sim_p": more_falls_p(falls, n, int(sum(f.sum() for f in sim_falls)),
                                                     sum(len(f) for f in sim_falls))}  # fmt: skip
        row["more_falls_than_sim"] = row["more_falls_than_sim_p"] < ALPHA
        for ceiling, (prefix, _) in CEILINGS.items():
            if name in REFERENCE or ceiling not in common:
                continue
            for metric in METRICS:
                g = gap_with_interval(episodes, name, metric, resamples, ceiling=ceiling)
                row[f"{prefix}_{metric}"] = {"value": g.value, "low": g.low, "high": g.high,
                                             "oracle_margin_low": g.oracle_margin_low}  # fmt: skip
        out[name] = row
    return out


def fmt_gap(g: dict | None) -> str:
    if not g:
        return ""
    if g["value"] is None:
        return "n/a"
    return f"{g['value']:.0%} [{g['low']:.0%}, {g['high']:.0%}]"


def table(profile: str, rows: dict) -> list[str]:
    ends = [end for ceiling, end in CEILINGS.items() if ceiling in rows]  # the far ends these runs measured
    prefixes = [prefix for prefix, _ in ends]
    gaps = "".join(f" {label} gap recovered [95 %]: xy | yaw | return |" for _, label in ends)
    header = ("| row | seeds × episodes | return | tracking xy (m/s) | yaw (rad/s) | falls/episode | more falls than the "
              "sim policy? (p) |")  # fmt: skip
    lines = [f"### {profile}", "", header + gaps, "|---" * (7 + 3 * len(prefixes)) + "|"]
    for name, r in rows.items():
        falls = "yes" if r["more_falls_than_sim"] else "no"
        cells = "".join(f" {fmt_gap(r.get(f'{p}_{m}'))} |" for p in prefixes for m in METRICS)
        lines.append(f"| {name} | {r['seeds']} × {r['episodes'] // r['seeds']} | {r['return']:.2f} | "
                     f"{r['tracking']:.3f} | {r['yaw']:.3f} | {r['falls_per_episode']:.2f} | {falls} "
                     f"({r['more_falls_than_sim_p']:.2f}) |{cells}")  # fmt: skip
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="+", help="gap_recovery.py result files or pipeline run folders")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--name", default="gap_summary")
    args = p.parse_args()
    summary = {profile: summarise(seeds, args.resamples) for profile, seeds in seeds_by_profile(args.results).items()}
    lines = [line for profile, rows in summary.items() for line in table(profile, rows) + [""]]
    print("\n".join(lines))
    save(args.name, {"files": [str(f) for f in args.results], "resamples": args.resamples, "alpha": ALPHA,
                     "summary": summary, "markdown": lines})  # fmt: skip


if __name__ == "__main__":
    main()
