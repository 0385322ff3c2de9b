"""Plots of an offline fine-tuning run: per-member AM-Q curves, replacements, and the gate's decision."""

from __future__ import annotations

from pathlib import Path

from uni_o4.gate import GateDecision


def plot_offline(summary: dict, decision: GateDecision, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps, curves = summary["eval_steps"], summary["score_curves"]
    for member in range(len(summary["final_scores"])):
        ax.plot(steps, [row[member] for row in curves], label=f"member {member}")
    for r in summary["replacements"]:
        ax.scatter(r["step"], r["score"], marker="^", color="k", zorder=3)
    if summary.get("baseline_score") is not None:
        ax.axhline(summary["baseline_score"], color="tab:red", ls="--", label="initial (pretrained) policy")
    ax.scatter([], [], marker="^", color="k", label="π_old replaced")
    verdict = "PASSED: deploy the fine-tuned policy" if decision.passed else "REFUSED: keep the previous policy"
    ax.set(xlabel="stage-2 step", ylabel="AM-Q score (learned model)", title=f"Uni-O4 offline · gate {verdict}")
    ax.text(0.01, 0.01, "\n".join(decision.reasons), transform=ax.transAxes, fontsize=8, va="bottom")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
