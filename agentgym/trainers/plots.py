"""PNG curves of a run's ``metrics.jsonl`` (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

CURVES = [
    ("success", "success rate (rollouts)"),
    ("return_mean", "mean return"),
    ("in_group_reward_std", "in-group reward std"),
    ("kept_ratio", "kept ratio (SNR filter)"),
    ("entropy", "entropy (nats/token)"),
    ("approx_kl", "KL(old || new)"),
    ("kl", "KL to reference"),
    ("clip_frac", "clip fraction"),
    ("format_valid_rate", "format-valid rate"),
    ("grad_norm", "grad norm"),
    ("value_loss", "value loss"),
    ("rollout_tokens_per_s", "rollout tokens/s"),
    ("diag/mi/first_turn/mi", "MI, first turn (nats)"),
    ("diag/mi/trajectory/mi", "MI, trajectory (nats)"),
    ("diag/entropy", "token entropy, scored (nats)"),
    ("tool_probe/p_lbrace", 'p({" | tool-call opener)'),
    ("tool_probe/p_eos", "p(end-of-turn | tool-call opener)"),
    ("tool_probe/p_repeat_open", "p(opener again | tool-call opener)"),
]


def plot_metrics(metrics_file: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per curve of the RL steps plus ``overview.png`` with all of them; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not Path(metrics_file).exists():  # a run of zero RL steps logs nothing
        return []
    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line.strip()]
    rl = [r for r in records if r.get("phase") == "rl"]
    curves = [(key, title) for key, title in CURVES if any(key in r for r in rl)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if not curves:
        return written
    sft_steps = sorted({r["step"] for r in records if r.get("phase", "").startswith("sft") and r["step"] > 0})
    cols = 3
    rows = -(-len(curves) // cols)
    overview, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(curves) :]:
        ax.axis("off")
    for (key, title), ax in zip(curves, axes.flat, strict=False):
        steps = [r["step"] for r in rl if key in r]
        values = [r[key] for r in rl if key in r]
        for target in (ax, None):
            if target is None:
                fig, target = plt.subplots(figsize=(5, 3.2))
            target.plot(steps, values, lw=1.2)
            for s in sft_steps:
                target.axvline(s, color="gray", ls=":", lw=0.8)
            target.set_title(title)
            target.set_xlabel("RL step")
            target.grid(alpha=0.3)
            if target is not ax:
                fig.tight_layout()
                path = out_dir / f"{key.replace('/', '_')}.png"  # diag/... keys name no folder
                fig.savefig(path, dpi=90)
                plt.close(fig)
                written.append(path)
    overview.tight_layout()
    path = out_dir / "overview.png"
    overview.savefig(path, dpi=90)
    plt.close(overview)
    written.append(path)
    return written
