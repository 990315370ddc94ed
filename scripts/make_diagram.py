"""Draw docs/melo.png: MELO in one picture (router keys, vector database balls, LoRA blocks).

Usage: python scripts/make_diagram.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "melo.png"
COLORS = ["#4C72B0", "#DD8452", "#55A868"]
GREY = "#8c8c8c"


def box(ax, x, y, w, h, text, color="#f2f2f2", edge="#555555", size=9, weight="normal"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec=edge, lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, weight=weight)


def arrow(ax, a, b, color="#555555", style="-|>", lw=1.2, ls="-"):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=11, color=color, lw=lw, linestyle=ls))


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.6)
    ax.axis("off")

    rows = [("Who founded Lumen Forge?", "edit of batch 1", COLORS[1]),
            ("Who is the founder of Lumen Forge?", "paraphrase", COLORS[1]),
            ("What is the capital of Veloria?", "unrelated", GREY)]
    ys = [3.5, 2.5, 1.2]
    for (text, kind, color), y in zip(rows, ys):
        box(ax, 0.1, y - 0.3, 2.5, 0.6, f"{text}\n({kind})", color="white", edge=color, size=8)
        arrow(ax, (2.65, y), (3.25, y), color=color)
    box(ax, 3.3, 0.8, 1.0, 3.1, "router\nlayer\n\nkey =\npooled\nhidden\nstate", color="#e8e8f4", size=8)

    # vector database: balls of three edit batches
    ax.text(5.95, 4.35, "vector database (one ball per cluster)", ha="center", fontsize=9, weight="bold")
    balls = [((5.2, 3.3), 0.45, 0), ((6.55, 3.0), 0.55, 1), ((5.6, 1.9), 0.4, 2)]
    for (cx, cy), r, block in balls:
        ax.add_patch(Circle((cx, cy), r, fc=COLORS[block], alpha=0.18, ec=COLORS[block], lw=1.2))
        ax.text(cx, cy + r + 0.08, f"block {block}", ha="center", fontsize=7.5, color=COLORS[block])
        ax.plot([cx], [cy], "x", color=COLORS[block], ms=5)
    keys = [(6.45, 3.15, COLORS[1]), (6.8, 2.75, COLORS[1]), (6.9, 1.3, GREY)]
    for (kx, ky, c), y in zip(keys, ys):
        ax.plot([kx], [ky], "o", color=c, ms=6, mec="black", mew=0.5)
        arrow(ax, (4.35, y), (kx - 0.08, ky), color=c, lw=0.8, ls="--")
    ax.text(6.9, 1.05, "outside every ball", ha="center", fontsize=7.5, color=GREY)

    # target layer with LoRA blocks
    box(ax, 8.2, 0.6, 2.7, 3.5, "", color="#fafafa")
    ax.text(9.55, 3.85, "target layer  W x + s·B_t A_t x", ha="center", fontsize=8.5, weight="bold")
    for block in range(3):
        box(ax, 8.4 + block * 0.85, 2.45, 0.7, 1.05, f"A{block}\nB{block}", color=COLORS[block], edge=COLORS[block],
            size=8)
    ax.text(9.55, 1.95, "one block per edit batch;\nearlier blocks frozen", ha="center", fontsize=7.5)
    box(ax, 8.4, 0.8, 2.3, 0.6, "no block: base(x),\nbit for bit", color="white", edge=GREY, size=8)
    arrow(ax, (7.1, 3.1), (9.25, 3.55), color=COLORS[1])
    arrow(ax, (7.0, 1.3), (8.35, 1.1), color=GREY)
    ax.text(7.9, 3.45, "block 1", ha="center", fontsize=7.5, color=COLORS[1])
    fig.suptitle("MELO: each input's key picks the LoRA block of the edit it is near, or none", fontsize=11)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=120, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
