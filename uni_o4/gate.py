"""The deployment gate: a fine-tuned policy replaces the current one only if it is not worse and is safe.

Two evaluators (`uni_o4 finetune --gate`, OfflineRequest.gate):
- `calibrated` (the default when there is a policy to replace): the simulator calibrated from the same logs
  (uni_o4.sim_ppo.gate): trusted only if it explains held-out logs better than the nominal model; there, every
  episode from the robot's logged starts, the candidate must track better than the incumbent with no more falls.
  benchmarks/ope_study.py measured it against the robot: it ranks policies with the robot where AM-Q ranks them
  against it, and it passes fewer of the policies the robot refuses.
- `amq`: Uni-O4's own offline evaluation, both checks must pass:
  1. its AM-Q score is not below the policy it replaces (scored in the same learned model with the same critics,
     so the comparison is like for like);
  2. simulation safety: no falls under randomised dynamics across the evaluation command grid.
The decision, with its reasons and figures, is written next to the result; when it fails, the previous policy
stays the one to deploy.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path


EVALUATORS = ("calibrated", "amq")


@dataclass
class GateConfig:
    """The AM-Q gate's settings (the calibrated gate's are sim_ppo's SimGateConfig)."""

    min_score_margin: float = 0.0  # candidate AM-Q must be ≥ incumbent AM-Q + margin
    max_fall_rate: float = 0.0
    eval_preset: str = "default"  # configs/eval/<preset>.yaml


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    candidate_score: float | None = None
    incumbent_score: float | None = None
    sim_fall_rate: float | None = None
    sim_tracking_error: float | None = None
    deployed: str = ""  # path of the policy to deploy after this decision
    evaluator: str = "amq"  # what judged it (EVALUATORS); AM-Q scores are kept either way
    calibrated: dict | None = None  # the calibrated simulator's verdict (uni_o4.sim_ppo.decide), if it judged


def from_calibrated(verdict: dict, scores: tuple[float, float]) -> GateDecision:
    """The calibrated simulator's verdict as the gate's decision (AM-Q scores beside it, for the record)."""
    candidate = verdict["sim"]["candidate"]
    return GateDecision(verdict["passed"], list(verdict["reasons"]), scores[0], scores[1], candidate["fall_rate"],
                        candidate["mean_tracking_error"], evaluator="calibrated", calibrated=verdict)


def decide(candidate_score: float, incumbent_score: float, sim_metrics: dict | None, cfg: GateConfig) -> GateDecision:
    d = GateDecision(passed=True, candidate_score=candidate_score, incumbent_score=incumbent_score)
    if not candidate_score >= incumbent_score + cfg.min_score_margin:
        d.passed = False
        d.reasons.append(
            f"offline evaluation: AM-Q {candidate_score:.4g} is below the incumbent's {incumbent_score:.4g}"
            + (f" + margin {cfg.min_score_margin}" if cfg.min_score_margin else "")
        )
    if sim_metrics is None:
        d.passed = False
        d.reasons.append("simulation safety evaluation was not run")
    else:
        d.sim_fall_rate, d.sim_tracking_error = sim_metrics["fall_rate"], sim_metrics["mean_tracking_error"]
        if d.sim_fall_rate > cfg.max_fall_rate:
            d.passed = False
            d.reasons.append(
                f"simulation safety: fall rate {d.sim_fall_rate:.3f} > {cfg.max_fall_rate} under randomised dynamics"
            )
    if d.passed:
        d.reasons.append("not worse offline and no falls in simulation")
    return d


def install(policy: Path, out_dir: Path) -> Path:
    """Copy `policy` (+ its .onnx) to out_dir/deploy/policy.pt: what to deploy."""
    target = out_dir / "deploy" / "policy.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".pt", ".onnx"):
        if policy.with_suffix(suffix).is_file():
            shutil.copyfile(policy.with_suffix(suffix), target.with_suffix(suffix))
    return target


def apply(decision: GateDecision, candidate: Path, incumbent: Path, out_dir: Path) -> Path:
    """Write out_dir/deploy/policy.pt (+ .onnx): the candidate if it passed, else the incumbent, and the decision."""
    chosen = candidate if decision.passed else incumbent
    target = install(chosen, out_dir)
    decision.deployed = str(chosen)
    (out_dir / "gate.json").write_text(json.dumps(asdict(decision), indent=2))
    return target
