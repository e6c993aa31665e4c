"""Draw the data flow of one TABB run: ``docs/figures/data_flow.svg``.

The figure on the architecture page. Regenerate it after changing this file::

    python docs/figures/data_flow.py              # writes docs/figures/data_flow.svg
    python docs/figures/data_flow.py --out x.svg  # somewhere else (any matplotlib format)

Only matplotlib is needed; the output is deterministic (no date, fixed ids).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().with_name("data_flow.svg")

SOURCE = "#f4a259"  # source data and what only the source rows get
TARGET = "#5b8fd6"  # target data and the target env
MODEL = "#a0a0a0"  # latent model
STEP = "#6bbf7a"  # the RL step

# name: (x centre, y centre, width, height, colour, title, detail)
BOXES = {
    "source": (2.2, 9.0, 3.6, 1.3, SOURCE, "source dataset",
               "~1M transitions, source dynamics\n(Hopper-v5, medium)"),
    "target": (7.8, 9.0, 3.6, 1.3, TARGET, "target dataset",
               "~5,000 transitions, target dynamics\n(tabb/Hopper-morph-v0)"),
    "buffer": (5.0, 6.9, 5.0, 1.3, "#d9d9d9", "replay buffer",
               "make_source_target_buffer: every batch\n128 source rows + 128 target rows"),
    "model": (11.3, 6.9, 3.3, 1.3, MODEL, "latent model f, g, h",
              "pre-trained (Eq. 6), frozen;\nlatents cached per row"),
    "tbm": (5.0, 4.9, 5.0, 1.3, SOURCE, "TBM weights (Eqs. 5, 7)",
            "source rows: target-aligned target,\nweight from its Bellman mismatch"),
    "loss": (5.0, 2.9, 5.0, 1.3, STEP, "losses (Eqs. 8-10)",
             "critic (weighted), value and actor\ncross_domain_losses"),
    "update": (5.0, 0.9, 5.0, 1.3, STEP, "update",
               "Adam steps, soft target update\n(TABBLoss or FastCrossDomainUpdate)"),
    "eval": (11.3, 0.9, 3.3, 1.3, TARGET, "evaluation",
             "deterministic actor in the\ntarget env: normalised score"),
}


def _box(ax, x, y, w, h, colour, title, detail):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=colour, edgecolor="black", linewidth=1.0, alpha=0.35))
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor="none", edgecolor="black", linewidth=1.0))
    ax.text(x, y + 0.3, title, ha="center", va="center", fontsize=11, fontweight="bold")
    ax.text(x, y - 0.22, detail, ha="center", va="center", fontsize=8.5, linespacing=1.25)


def _arrow(ax, start, end, label=None, label_xy=None, style="-|>", rad=0.0, ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, linewidth=1.2,
                                 color="black", linestyle=ls, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))
    if label:
        lx, ly = label_xy
        ax.text(lx, ly, label, fontsize=8, ha="left", va="center", style="italic")


def draw(out: Path = OUT) -> Path:
    """Draw the figure into ``out`` and return the path."""
    plt.rcParams["svg.hashsalt"] = "tabb-data-flow"
    fig, ax = plt.subplots(figsize=(9.6, 7.2))
    ax.set_xlim(-0.6, 13.2)
    ax.set_ylim(-0.1, 9.9)
    ax.axis("off")
    for name, (x, y, w, h, colour, title, detail) in BOXES.items():
        _box(ax, x, y, w, h, colour, title, detail)

    _arrow(ax, (2.2, 8.35), (3.9, 7.55))
    _arrow(ax, (7.8, 8.35), (6.1, 7.55))
    _arrow(ax, (7.5, 6.9), (9.65, 6.9), "pre-training", (7.75, 7.2))
    _arrow(ax, (11.3, 6.25), (7.5, 4.9), None, None, rad=-0.15)
    ax.text(9.4, 4.75, r"$\hat r$, $\hat z'$ of every row", fontsize=8.5, ha="left", va="center", style="italic")
    _arrow(ax, (5.0, 6.25), (5.0, 5.55), "sample a batch", (5.15, 5.9))
    _arrow(ax, (5.0, 4.25), (5.0, 3.55))
    _arrow(ax, (5.0, 2.25), (5.0, 1.55))
    _arrow(ax, (7.5, 0.9), (9.65, 0.9), "every eval.every steps", (7.6, 1.2))
    # the loop: the updated V (and Q) weight the next batch
    ax.plot([2.5, 1.1, 1.1], [0.9, 0.9, 4.9], color="black", linewidth=1.2, linestyle="--")
    _arrow(ax, (1.1, 4.9), (2.5, 4.9), ls="--")
    ax.text(0.95, 2.9, "next batch,\nupdated V", fontsize=8.5, ha="right", va="center", style="italic")
    ax.text(11.3, 0.0, "summary.json, learning_curve.png", ha="center", va="center", fontsize=8.5)
    fig.tight_layout(pad=0.2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/figures/data_flow.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(OUT), help="output file (default: docs/figures/data_flow.svg)")
    args = p.parse_args(argv)
    print(f"wrote {draw(Path(args.out))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
