"""Does the gate's simulator rank policies as the robot does, and how often does the gate pass a worse policy?

For every stand-in robot (a `<root>/<profile>/seed<N>` folder of benchmarks/gap_recovery.py; several roots may
hold the same robot, e.g. older candidates), every policy evaluated there (eval/*/metrics.json: 12 episodes on
the robot) is also scored by each evaluator, all with the gate's command grid (sim_ppo.evaluate_in):
    calibrated, default pose    the simulator calibrated from that robot's logs, episodes at the default pose
                                (the gate before the robot's starts)
    calibrated, robot starts    the same simulator, every episode from the robot's logged policy starts (the gate)
    true figures, robot starts  the training simulator at the profile's true figures (a perfect calibration)
    AM-Q                        Uni-O4's off-policy evaluation: its IQL critics and learned dynamics ensemble,
                                trained on that robot's logs (the stage-1 artefacts of gap_recovery.py's
                                `--offline-methods uni_o4` run, offline_uni_o4/); its verdict is the gate's AM-Q
                                rule alone (candidate >= incumbent + margin; the gate's simulator check aside)
Reported per evaluator: Spearman rank correlation with the robot, per robot and pooled, for return and for
tracking error; and the gate's verdicts (sim_ppo.decide, each policy against the sim policy) against the robot's
(sim_ppo.accept on the evaluation episodes): false passes (passed, worse on the robot) and false refusals. Also
the robot's own check (8 other episodes, check/*/metrics.json) against the evaluation. Scores are cached in
--cache, so the study resumes and can grow.

    python benchmarks/ope_study.py /work/gr/strong/seed0 /work/gr2/strong/seed0 ... --name ope_study
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
from robot_spec.config import named_config  # noqa: E402
from uni_o4.gate import GateConfig  # noqa: E402
from uni_o4.sim_ppo import SimGateConfig, accept, decide, evaluate_in, held_out_fit_gain  # noqa: E402

EVALUATORS = ("calibrated, default pose", "calibrated, robot starts", "true figures, robot starts")
AMQ = "AM-Q"
AMQ_RUN = "offline_uni_o4"  # gap_recovery.py --offline-methods uni_o4: its config and stage-1 cache
INCUMBENT = "sim"  # the eval folder of the sim policy: the incumbent every candidate is judged against


def robots(folders: list[Path]) -> dict[str, dict]:
    """{"profile seed N": {"policies": {policy path: stand-in metrics}, "checks": [...], "calibration": folder}}."""
    out: dict[str, dict] = {}
    for folder in folders:
        profile, seed = folder.parent.name, int(re.fullmatch(r"seed(\d+)", folder.name)[1])
        robot = out.setdefault(f"{profile} seed {seed}", {"profile": profile, "policies": {}, "incumbent": None,
                                                          "checks": [], "calibration": None,
                                                          "amq_run": None})  # fmt: skip
        for metrics_file in sorted(folder.glob("eval/*/metrics.json")):
            name = metrics_file.parent.name
            if name == "sim_none" or "interrupted" in name:
                continue
            metrics = json.loads(metrics_file.read_text())
            robot["policies"].setdefault(metrics["policy"], metrics)
            if name == INCUMBENT:
                robot["incumbent"] = metrics["policy"]
        checks = {f.parent.name: json.loads(f.read_text()) for f in folder.glob("check/*/metrics.json")}
        if "current" in checks:
            robot["checks"] += [(checks["current"], m) for who, m in checks.items() if who != "current"]
        calibration = folder / "calibration"
        if all((calibration / f).is_file() for f in ("calibrated.yaml", "calibrated_report.json", "starts.npz")):
            robot["calibration"] = robot["calibration"] or calibration
        if (folder / AMQ_RUN / "offline_config.yaml").is_file():
            robot["amq_run"] = robot["amq_run"] or folder / AMQ_RUN
    return out


def score(policy: str, evaluator: str, robot: dict, gate: SimGateConfig, cache: dict, cache_file: Path) -> dict:
    key = f"{evaluator}|{robot['calibration']}|{policy}"
    # older caches keep no per-episode or yaw figures (the gate judges xy + yaw: sim_ppo.command_error)
    if "tracking_error_yaw" not in cache.get(key, {}).get("per_episode", {}):
        calibration = robot["calibration"]
        profile = named_config("reality_gap", robot["profile"]) if evaluator.startswith("true") \
            else calibration / "calibrated.yaml"  # fmt: skip
        starts = None if evaluator.endswith("default pose") else calibration / "starts.npz"
        m = evaluate_in(Path(policy), profile, gate, starts=starts)
        means = {k: m[k] for k in ("mean_tracking_error", "mean_yaw_error", "fall_rate", "mean_return")}
        cache[key] = {**means, "per_episode": m["per_episode"]}
        cache_file.write_text(json.dumps(cache, indent=1))
        print(f"{evaluator:28s} {Path(policy).parent.name:22s} {means}")
    return cache[key]


def amq_scores_of(policies: list[str], run: Path, cache: dict, cache_file: Path) -> dict[str, dict]:
    """AM-Q of each policy with the critics and dynamics Uni-O4 trained on this robot's logs (run/../logs)."""
    missing = [p for p in policies if f"{AMQ}|{run}|{p}" not in cache]
    if missing:
        from robot_spec import load_robot
        from robot_spec.config import load_config
        from robot_spec.policy_io import load_policy
        from uni_o4.log_dataset import dataset_from_log_folder
        from uni_o4.offline import OfflineConfig, amq_scores

        spec, cfg = load_robot("go1"), load_config(OfflineConfig, run / "offline_config.yaml")
        data, _ = dataset_from_log_folder([run.parent / "logs"], spec, cfg.data)
        actors = [load_policy(Path(p), spec).actor for p in missing]
        for p, value in zip(missing, amq_scores(data, actors, cfg, run / "cache", spec.observation)):
            cache[f"{AMQ}|{run}|{p}"] = {"am_q": value}
            print(f"{AMQ:28s} {Path(p).parent.name:22s} {value:.4g}")
        cache_file.write_text(json.dumps(cache, indent=1))
    return {p: cache[f"{AMQ}|{run}|{p}"] for p in policies}


def amq_evaluation(robot: dict, truth: dict, cache: dict, cache_file: Path) -> dict:
    """The AM-Q evaluator's rank correlation with the robot's return, and its gate rule's verdicts."""
    policies, incumbent, margin = robot["policies"], robot["incumbent"], GateConfig().min_score_margin
    scores = amq_scores_of(list(policies), robot["amq_run"], cache, cache_file)
    verdicts = {p: scores[p]["am_q"] >= scores[incumbent]["am_q"] + margin for p in truth}
    return {
        "spearman_return": spearman([scores[p]["am_q"] for p in policies],
                                    [policies[p]["mean_return"] for p in policies]),
        "spearman_tracking": spearman([-scores[p]["am_q"] for p in policies],
                                      [policies[p]["tracking_error_xy"] for p in policies]),
        "passed": sum(verdicts.values()),
        "false_passes": sum(verdicts[p] and not truth[p] for p in truth),
        "false_refusals": sum(not verdicts[p] and truth[p] for p in truth),
        "scores": {p: {"am_q": scores[p]["am_q"], "robot_return": policies[p]["mean_return"],
                       "robot_accepts": truth.get(p), "gate_passes": verdicts.get(p)} for p in policies},
    }  # fmt: skip


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1]) if ra.std() > 0 and rb.std() > 0 else float("nan")


def study_robot(robot: dict, gate: SimGateConfig, cache: dict, cache_file: Path,
                evaluators: tuple[str, ...] = (*EVALUATORS, AMQ)) -> dict:  # fmt: skip
    fit_gain = held_out_fit_gain(json.loads((robot["calibration"] / "calibrated_report.json").read_text()))
    policies, incumbent = robot["policies"], robot["incumbent"]
    out = {"policies": len(policies), "fit_gain": fit_gain, "evaluators": {}}
    truth = {p: accept(m, policies[incumbent])[0] for p, m in policies.items() if p != incumbent}
    for evaluator in [e for e in EVALUATORS if e in evaluators]:
        sims = {p: score(p, evaluator, robot, gate, cache, cache_file) for p in policies}
        verdicts = {p: decide(sims[p], sims[incumbent], fit_gain, gate)["passed"] for p in truth}
        out["evaluators"][evaluator] = {
            "spearman_return": spearman([sims[p]["mean_return"] for p in policies],
                                        [policies[p]["mean_return"] for p in policies]),
            "spearman_tracking": spearman([sims[p]["mean_tracking_error"] for p in policies],
                                          [policies[p]["tracking_error_xy"] for p in policies]),
            "passed": sum(verdicts.values()),
            "false_passes": sum(verdicts[p] and not truth[p] for p in truth),
            "false_refusals": sum(not verdicts[p] and truth[p] for p in truth),
            "scores": {p: {"sim": sims[p], "robot_return": policies[p]["mean_return"],
                           "robot_tracking": policies[p]["tracking_error_xy"], "robot_accepts": truth.get(p),
                           "gate_passes": verdicts.get(p)} for p in policies},
        }  # fmt: skip
    if robot["amq_run"] is not None and AMQ in evaluators:
        out["evaluators"][AMQ] = amq_evaluation(robot, truth, cache, cache_file)
    # The robot's check (its own episodes) against the evaluation's verdict on the same candidate.
    check = [(accept(c, current)[0], truth.get(c["policy"])) for current, c in robot["checks"]]
    out["robot_check"] = {"checked": len(check), "accepted": sum(a for a, _ in check),
                          "false_accepts": sum(a and t is False for a, t in check),
                          "false_refusals": sum(not a and t is True for a, t in check)}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("robots", type=Path, nargs="+", help="<root>/<profile>/seed<N> folders of gap_recovery.py")
    p.add_argument("--cache", type=Path, default=Path("runs/ope_study_cache.json"))
    p.add_argument("--name", default="ope_study")
    p.add_argument("--evaluators", nargs="+", choices=(*EVALUATORS, AMQ), default=(*EVALUATORS, AMQ),
                   help="which evaluators to score with (default all)")
    p.add_argument("--confidence", type=float, default=0.0, help="the gate's confidence bound on the tracking "
                   "gain (sim_ppo.SimGateConfig.confidence); 0, the default: the gate's mean rule")  # fmt: skip
    args = p.parse_args()
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    gate = SimGateConfig(confidence=args.confidence)
    results = {}
    for name, robot in robots(args.robots).items():
        if robot["calibration"] is None or robot["incumbent"] is None:
            print(f"{name}: no calibration or no sim-policy evaluation, skipped")
            continue
        results[name] = study_robot(robot, gate, cache, args.cache, tuple(args.evaluators))
    pooled = {}
    for evaluator in (*EVALUATORS, AMQ):
        per = [r["evaluators"][evaluator] for r in results.values() if evaluator in r["evaluators"]]
        if not per:
            continue
        pooled[evaluator] = {
            "mean_spearman_return": float(np.nanmean([e["spearman_return"] for e in per])),
            "mean_spearman_tracking": float(np.nanmean([e["spearman_tracking"] for e in per])),
            **{k: sum(e[k] for e in per) for k in ("passed", "false_passes", "false_refusals")},
            "robots": len(per), "candidates": sum(len(e["scores"]) - 1 for e in per),
        }  # fmt: skip
        print(f"{evaluator:28s} rank corr. return {pooled[evaluator]['mean_spearman_return']:+.2f} tracking "
              f"{pooled[evaluator]['mean_spearman_tracking']:+.2f}; gate passed {pooled[evaluator]['passed']}, "
              f"false passes {pooled[evaluator]['false_passes']}, false refusals "
              f"{pooled[evaluator]['false_refusals']}")  # fmt: skip
    check = {k: sum(r["robot_check"][k] for r in results.values())
             for k in ("checked", "accepted", "false_accepts", "false_refusals")}  # fmt: skip
    print(f"robot check: {check}")
    save(args.name, {"robots": [str(r) for r in args.robots], "pooled": pooled, "robot_check": check,
                     "per_robot": results})  # fmt: skip


if __name__ == "__main__":
    main()
