"""Report charts, rendered with matplotlib's Agg backend to PNG bytes.

Figures are built with the object API (``matplotlib.figure.Figure``), never ``pyplot``, so charts can
be drawn from any thread and no global state or display is touched. Labels are plain Latin text:
CJK glyphs are not in matplotlib's bundled fonts, so the Chinese names stay in the report's tables.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]+")


def latin(label: str) -> str:
    """``"流程灵活性 process flexibility"`` → ``"process flexibility"``; keys stay readable."""
    text = _CJK.sub("", label).strip()
    return text or label.encode("ascii", "replace").decode()


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def radar_chart(criteria: Sequence[str], scores: Mapping[str, Sequence[float | None]], *,
                title: str = "Criteria scores (0-10)") -> bytes:
    """One polygon per system over the criteria axes; a missing score is drawn at 0 and marked."""
    fig = Figure(figsize=(6.4, 5.6))
    labels = [latin(c) for c in criteria]
    n = max(len(labels), 1)
    angles = [2 * math.pi * i / n for i in range(n)]
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_ylim(0, 10)
    ax.set_yticks([2, 4, 6, 8, 10])
    ax.set_xticks(angles)
    ax.set_xticklabels([label.replace(" ", "\n", 1) if len(label) > 14 else label for label in labels], fontsize=8)
    for index, (system, values) in enumerate(scores.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [0.0 if v is None else float(v) for v in values]
        ax.plot(angles + angles[:1], points + points[:1], color=colour, linewidth=1.8, label=system)
        ax.fill(angles + angles[:1], points + points[:1], color=colour, alpha=0.12)
        missing = [a for a, v in zip(angles, values) if v is None]
        if missing:
            ax.scatter(missing, [0] * len(missing), marker="x", color=colour, zorder=3)
    ax.set_title(title, pad=18, fontsize=11)
    ax.legend(loc="upper right", bbox_to_anchor=(1.32, 1.12), fontsize=8, frameon=False)
    return _png(fig)


def latency_chart(samples: Mapping[str, Mapping[str, Sequence[float]]], processes: Sequence[str], *,
                  title: str = "Latency per process (ms)") -> bytes:
    """Box plots of push latency: one group per process, one box per system. ``samples`` is
    system -> process -> milliseconds."""
    systems = list(samples)
    fig = Figure(figsize=(max(6.4, 1.3 * len(processes) * max(len(systems), 1) ** 0.5 + 2), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(systems), 1)
    drawn = False
    for s_index, system in enumerate(systems):
        colour = PALETTE[s_index % len(PALETTE)]
        data, positions = [], []
        for p_index, process in enumerate(processes):
            values = list(samples[system].get(process, ()))
            if values:
                data.append(values)
                positions.append(p_index + (s_index - (len(systems) - 1) / 2) * width)
        if not data:
            continue
        drawn = True
        parts = ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=True,
                           manage_ticks=False, flierprops={"markersize": 3, "markeredgecolor": colour})
        for box in parts["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.45)
            box.set_edgecolor(colour)
        for key in ("medians", "whiskers", "caps"):
            for line in parts[key]:
                line.set_color(colour)
        ax.plot([], [], color=colour, linewidth=6, alpha=0.45, label=system)
    ax.set_xticks(range(len(processes)))
    ax.set_xticklabels([p.replace("_", "\n") for p in processes], fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no documents were sent", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def error_mix_chart(outcomes: Mapping[str, Mapping[str, int]], *, title: str = "Outcome of every document sent") -> bytes:
    """Stacked horizontal bars, one per system: succeeded, then each error kind."""
    systems = list(outcomes)
    kinds = ["succeeded"] + sorted({k for counts in outcomes.values() for k in counts} - {"succeeded"})
    fig = Figure(figsize=(6.8, 1.2 + 0.55 * max(len(systems), 1)))
    ax = fig.add_subplot()
    left = [0.0] * len(systems)
    for k_index, kind in enumerate(kinds):
        values = [float(outcomes[s].get(kind, 0)) for s in systems]
        colour = "#16a34a" if kind == "succeeded" else PALETTE[(k_index + 1) % len(PALETTE)]
        ax.barh(systems, values, left=left, color=colour, label=kind, height=0.55)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, frameon=False, ncol=min(len(kinds), 4), loc="upper center", bbox_to_anchor=(0.5, -0.35))
    return _png(fig)
