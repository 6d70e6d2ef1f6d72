"""PNG plots people look at instead of reading numbers (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

#: The file types the plots are written as (Agg's raster and vector formats that need nothing more).
PLOT_EXTENSIONS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp")


def plot_mels(
    mels: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    *,
    frame_rate: float = 93.75,
    title: str | None = None,
) -> Path:
    """Stack log-mels ``(n_mels, F)`` vertically, one panel each, on a shared colour scale."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [m.detach().cpu().float() for _, m in mels]
    vmin = min(float(a.min()) for a in arrays)
    vmax = max(float(a.max()) for a in arrays)
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.4 * len(mels)), squeeze=False)
    for ax, (name, _), arr in zip(axes[:, 0], mels, arrays):
        seconds = arr.shape[-1] / frame_rate
        im = ax.imshow(
            arr.numpy(),
            origin="lower",
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
            extent=(0, seconds, 0, arr.shape[0]),
            cmap="magma",
        )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="log magnitude", shrink=0.9)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curve(
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """One line per named series against a shared x axis (loss curves, metric-vs-SNR plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, ys in series.items():
        ax.plot(list(xs)[: len(ys)], list(ys), marker="o" if len(ys) < 30 else None, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bars(
    categories: Sequence[str],
    series: dict[str, Sequence[float]],
    path: str | Path,
    *,
    ylabel: str,
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per category, one bar per named series (before/after, per variant)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) + 2), 4))
    for i, (name, ys) in enumerate(series.items()):
        xs = [c + (i - (n - 1) / 2) * width for c in range(len(categories))]
        ax.bar(xs, list(ys), width=width, label=name)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(list(categories), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
