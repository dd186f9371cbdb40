"""Reading a validation experiment's summary: the lines the CLI prints and the dashboard shows.

The summary is written by ``ingest/validation.py``; its keys are described in docs/experiments.md.
"""

from __future__ import annotations

LEAD_METRICS = (("answer_dlogp", "answer log-prob change"), ("answer_dlogit_diff", "answer logit-difference change"))


def _interval(stat: dict) -> str:
    lo, hi = stat["ci95"]
    return f"{stat['median']:.3g} [95% CI {lo:.3g}, {hi:.3g}]"


def lead_line(stats: dict, label: str) -> str:
    """One paired statistic (``paired_summary``'s dict) as a sentence: path and control medians with
    their bootstrap intervals, the median difference, and the sign test."""
    return (
        f"{label}: path median {_interval(stats['path'])}, control median {_interval(stats['control'])}; "
        f"median difference {_interval(stats['difference'])}; path below control in "
        f"{stats['path_below_control']}/{stats['compared']} prompts (sign test p = {stats['sign_test_p']:.2g})"
    )


def validation_lines(summary: dict) -> list[str]:
    """The summary of a validation experiment, the answer's change against the control's first,
    then the distribution-wide numbers, then the warnings (each line starting ``warning:``)."""
    lines = [lead_line(summary[key], label) for key, label in LEAD_METRICS if key in summary]
    rest = []
    if "mean_total_variation_path" in summary:
        rest.append(
            f"total variation: mean path {summary['mean_total_variation_path']:.4g}, control "
            f"{summary['mean_total_variation_control']:.4g} (path larger in {100 * summary['path_beats_control']:.0f}% of prompts)"
        )
    if "mean_answer_dprob_path" in summary:
        rest.append(
            f"answer dprob: mean path {summary['mean_answer_dprob_path']:.4g}, control {summary['mean_answer_dprob_control']:.4g}"
        )
    if rest:
        lines.append("; ".join(rest))
    ratio = summary.get("control_activation_ratio")
    if ratio:
        lines.append(
            f"{summary.get('control', 'the')} control's activation / path's: median {ratio['median']:.3g} "
            f"(range {ratio['min']:.3g} to {ratio['max']:.3g})"
        )
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return lines
