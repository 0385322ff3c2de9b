"""The sim-to-real table on the stand-in: every method, sim policy → after offline → after online, with the oracle
and the share of the reality gap each stage recovers, per reality-gap profile.

Each cell (profile × seed × method) is one `uni_o4 pipeline` folder (uni_o4.pipeline.run_pipeline) under --root,
kept between runs: a finished cell is reused, so the script resumes and the table is assembled from whatever cells
exist. Per (profile, seed) the first method's run collects the logs and evaluates the sim policy and the oracle; the
other methods reuse all three, so every method of a seed sees the same data and yardstick, episode for episode.

Gap recovered = (stage − sim policy) ÷ (oracle − sim policy), for velocity tracking error and for return, computed
per seed from that seed's means, then mean ± std over seeds, with a bootstrap 90 % interval that resamples the
paired evaluation episodes (every policy of a seed meets the same episodes of sensor noise); n/a when the oracle's
margin over the sim policy is inside the interval of chance.

    python benchmarks/sim_to_real_table.py --policy /path/to/policy.pt --methods uni_o4 sim_ppo --seeds 0 1 2 \\
        --profiles strong unmodelled --eval-episodes 24
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import save  # noqa: E402
from uni_o4.pipeline import (  # noqa: E402
    METHODS, NOMINAL_STAGE, ORACLE_STAGE, PipelineRequest, eval_folder_name, row_eval_folder)
from uni_o4.pipeline import gap_recovered, run_pipeline  # noqa: E402

METRICS = ("mean_return", "reward_per_step", "tracking_error_xy", "fall_rate", "trip_rate")
SHARED_STAGES = (NOMINAL_STAGE, "sim policy", ORACLE_STAGE)  # evaluations every method of a seed reuses
BOOTSTRAP = 2000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path,
                   help="sim-pretrained policy.pt in its run folder (default: the shipped robust policy)")
    p.add_argument("--methods", nargs="+", default=["uni_o4", "sim_ppo"], choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--profiles", nargs="+", default=["strong"])
    p.add_argument("--collect-steps", type=int, default=20000)
    p.add_argument("--eval-episodes", type=int, default=24, help="stand-in episodes per evaluation")
    p.add_argument("--oracle-iterations", type=int, default=150)
    p.add_argument("--online-preset", default="online_quick", help="Uni-O4's online preset (configs/finetune/)")
    p.add_argument("--root", type=Path, default=Path("runs/sim_to_real"))
    p.add_argument("--name", default="sim_to_real_table", help="results file name under benchmarks/results/")
    p.add_argument("--assemble-only", action="store_true", help="build the table from the cells there are")
    args = p.parse_args()

    cells: dict[str, dict[str, list[Path]]] = {}
    for profile in args.profiles:
        for seed in args.seeds:
            first = None
            for method in args.methods:
                out = args.root / profile / f"{method}_seed{seed}"
                if not args.assemble_only:
                    run_cell(args, profile, seed, method, out, first)
                first = first or out
                if (out / "pipeline.json").is_file():
                    cells.setdefault(profile, {}).setdefault(method, []).append(out)
    table = {profile: {method: summarise(folders) for method, folders in methods.items()}
             for profile, methods in cells.items()}  # fmt: skip
    print_table(table)
    setting = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path = save(args.name, {"setting": setting, "table": table})
    plot(table, path.with_suffix(".png"))
    print(f"saved {path} and {path.with_suffix('.png')}")


def run_cell(args: argparse.Namespace, profile: str, seed: int, method: str, out: Path, first: Path | None) -> None:
    request = PipelineRequest(algo=method, profile=profile, out=out, seed=seed, collect_steps=args.collect_steps,
                              eval_episodes=args.eval_episodes, online_preset=args.online_preset,
                              oracle_iterations=args.oracle_iterations, policy=args.policy)  # fmt: skip
    if first is not None:
        request.data = first / "data_logs"
        reuse_shared(first, out)
    if run_pipeline(request) != 0:
        raise SystemExit(f"pipeline failed: {request}")


def reuse_shared(source: Path, out: Path) -> None:
    """The sim policy's and the oracle's evaluations (and the oracle) do not depend on the method: copy them."""
    for name in map(eval_folder_name, SHARED_STAGES):
        if (source / "eval" / name / "metrics.json").is_file() and not (out / "eval" / name).exists():
            shutil.copytree(source / "eval" / name, out / "eval" / name)
    if (source / "oracle" / "policy.pt").is_file() and not (out / "oracle").exists():
        shutil.copytree(source / "oracle", out / "oracle")


# --------------------------------------------------------------------------------------------- the summary
def summarise(folders: list[Path]) -> dict:
    """stage → metric → mean and std over seeds, and gap recovered (per seed, mean ± std, bootstrap interval)."""
    per_seed = [json.loads((f / "pipeline.json").read_text()) for f in folders]
    episodes = [episode_table(f, rows) for f, rows in zip(folders, per_seed)]
    stages: dict[str, dict] = {}
    for rows, eps in zip(per_seed, episodes):
        for row in rows:
            entry = stages.setdefault(f"{row['stage']} ({row['profile']})", {"rows": [], "gaps": []})
            entry["rows"].append(row)
            entry["gaps"].append(seed_gap(eps, row["stage"]) if row["profile"] != "none" else None)
    return {stage: stage_summary(e["rows"], e["gaps"]) for stage, e in stages.items()}


def episode_table(folder: Path, rows: list[dict]) -> dict[str, list[dict]]:
    """stage → per-episode metrics of its evaluation (paired across stages by episode index)."""
    out = {}
    for row in rows:
        metrics_file = row_eval_folder(folder, row) / "metrics.json"
        if metrics_file.is_file():
            out[row["stage"]] = json.loads(metrics_file.read_text())["per_episode"]
    return out


def seed_gap(episodes: dict[str, list[dict]], stage: str) -> dict | None:
    """Gap recovered by `stage` in one seed, for tracking and return, with a paired bootstrap over episodes."""
    if not {"sim policy", ORACLE_STAGE, stage} <= set(episodes):
        return None
    sim, ref, got = (episodes[s] for s in ("sim policy", ORACLE_STAGE, stage))
    n = min(len(sim), len(ref), len(got))
    rng = np.random.default_rng(0)
    draws = [np.arange(n)] + [rng.integers(0, n, n) for _ in range(BOOTSTRAP)]
    result = {}
    for key, field in (("tracking", "tracking_error_xy"), ("return", "return")):
        values = [[_mean(rows, field, idx) for rows in (sim, ref, got)] for idx in draws]
        shares = np.array([np.nan if (share := gap_recovered(g, s, o, key == "tracking")) is None else share
                           for s, o, g in values])  # fmt: skip
        margins = np.array([o - s for s, o, _ in values])
        low, high = np.nanpercentile(shares[1:], [5, 95]) if np.isfinite(shares[1:]).any() else (np.nan, np.nan)
        # Within chance: the oracle's own margin over the sim policy has a 90 % interval that includes 0.
        m_low, m_high = np.percentile(margins[1:], [5, 95])
        result[key] = None if m_low <= 0 <= m_high else {"value": float(shares[0]), "ci90": [float(low), float(high)]}
    return result


def _mean(rows: list[dict], field: str, idx: np.ndarray) -> float:
    values = np.array([rows[i][field] for i in idx], dtype=float)
    if field == "tracking_error_xy":  # weighted by policy steps, as robot_eval does
        steps = np.array([rows[i]["policy_steps"] for i in idx], dtype=float)
        ok = np.isfinite(values) & (steps > 0)
        return float((values[ok] * steps[ok]).sum() / max(steps[ok].sum(), 1))
    return float(values.mean())


def stage_summary(rows: list[dict], gaps: list[dict | None]) -> dict:
    summary = {"seeds": len(rows), **{k: {"mean": float(np.mean([r[k] for r in rows])),
                                          "std": float(np.std([r[k] for r in rows]))} for k in METRICS}}  # fmt: skip
    for key in ("tracking", "return"):
        values = [g[key]["value"] for g in gaps if g and g.get(key)]
        summary[f"gap_{key}"] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "seeds": len(values),
                                 "per_seed": [g[key] if g else None for g in gaps]} if values else None  # fmt: skip
    summary["notes"] = [r.get("note", "") for r in rows]
    return summary


def print_table(table: dict) -> None:
    for profile, methods in table.items():
        print(f"\n== {profile} ==")
        for method, stages in methods.items():
            for stage, row in stages.items():
                gaps = " ".join(f"gap[{k}] {row[f'gap_{k}']['mean']:.0%}±{row[f'gap_{k}']['std']:.0%}"
                                if row.get(f"gap_{k}") else f"gap[{k}] n/a" for k in ("tracking", "return"))  # fmt: skip
                cells = ", ".join(f"{k} {row[k]['mean']:.4g}±{row[k]['std']:.2g}" for k in METRICS)
                print(f"{method:8s} {stage:32s} (n={row['seeds']}) {cells}; {gaps}")


def plot(table: dict, path: Path) -> None:
    """Per profile: tracking error, return and falls per stage and method; gap recovered beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("tracking_error_xy", "tracking error (m/s)"), ("mean_return", "episode return"),
              ("fall_rate", "falls per episode"), ("gap_tracking", "gap recovered, tracking"))  # fmt: skip
    fig, axes = plt.subplots(len(table), len(panels), figsize=(19, 4 * len(table)), squeeze=False)
    for r, (profile, methods) in enumerate(table.items()):
        stages = list(dict.fromkeys(s for rows in methods.values() for s in rows))
        width = 0.8 / max(len(methods), 1)
        for ax, (key, label) in zip(axes[r], panels):
            for i, (method, rows) in enumerate(methods.items()):
                reached = [k for k, s in enumerate(stages) if s in rows and rows[s].get(key)]
                ax.bar(np.array(reached) + width * i, [rows[stages[k]][key]["mean"] for k in reached], width,
                       yerr=[rows[stages[k]][key]["std"] for k in reached], label=method, capsize=2)  # fmt: skip
            ax.set_xticks(np.arange(len(stages)) + 0.4 - width / 2, stages, fontsize=6, rotation=15)
            ax.set_title(f"{profile}: {label}")
        axes[r][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
