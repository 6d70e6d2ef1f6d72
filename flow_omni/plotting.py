"""PNG plots people look at instead of reading numbers (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers/CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: The file types the plots are written as (Agg's raster and vector formats that need nothing more).
PLOT_EXTENSIONS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp")


#: Frequencies (kHz) marked on a log-mel plot's axis, where the 100-band Vocos mel spreads them evenly.
MEL_TICKS_KHZ = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Marker and line style of the n-th series of a curve plot: series with equal values stay distinguishable.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")
#: A curve plot with more series than this puts its legend right of the axes, off the data.
LEGEND_INSIDE = 4


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)  # HTK, torchaudio's default, which the Vocos mel uses


def mel_band_position(hz: float, n_mels: int, sample_rate: int) -> float:
    """Where ``hz`` falls on a log-mel image whose band ``i`` spans ``[i, i + 1]`` (HTK bands from 0 Hz to
    Nyquist, as the Vocos front end builds them: band ``i`` is centred on point ``i + 1`` of ``n_mels + 2``)."""
    top = _hz_to_mel(sample_rate / 2)
    return _hz_to_mel(hz) / top * (n_mels + 1) - 0.5


def mel_figure(
    mels: Sequence[tuple[str, torch.Tensor]],
    *,
    frame_rate: float = 93.75,
    sample_rate: int = 24000,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Log-mels ``(n_mels, F)`` stacked vertically, one panel each, on one time axis and one colour scale.

    The colour scale spans all panels unless ``vmin``/``vmax`` fix it, so equal colours are equal values
    in every panel (and, with fixed limits, in every file plotted with them).
    """
    arrays = [m.detach().cpu().float() for _, m in mels]
    lo = min(float(a.min()) for a in arrays) if vmin is None else vmin
    hi = max(float(a.max()) for a in arrays) if vmax is None else vmax
    # Constrained layout keeps every title, tick label and axis label inside the figure and apart; the
    # shared time axis leaves tick labels only under the last panel, so no title sits on them.
    fig, axes = plt.subplots(
        len(mels), 1, figsize=(10, 1.0 + 2.2 * len(mels)), squeeze=False, sharex=True, layout="constrained"
    )
    for ax, (name, _), arr in zip(axes[:, 0], mels, arrays):
        n_mels = arr.shape[0]
        im = ax.imshow(
            arr.numpy(),
            origin="lower",
            aspect="auto",
            vmin=lo,
            vmax=hi,
            extent=(0, arr.shape[-1] / frame_rate, 0, n_mels),
            cmap="magma",
            interpolation="nearest",
        )
        ticks = [k for k in MEL_TICKS_KHZ if k * 1000 < sample_rate / 2]
        ax.set_yticks([mel_band_position(k * 1000, n_mels, sample_rate) for k in ticks], [f"{k:g}" for k in ticks])
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("frequency (kHz)")
    axes[-1, 0].set_xlim(0, max(a.shape[-1] for a in arrays) / frame_rate)  # shared: the longest, not the last
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="log-mel (natural log of magnitude)", shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


def plot_mels(mels: Sequence[tuple[str, torch.Tensor]], path: str | Path, **options: Any) -> Path:
    """:func:`mel_figure` (``options`` are its keywords) written to ``path``."""
    return _save(mel_figure(mels, **options), path)


def curve_figure(
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
    value_range: tuple[float | None, float | None] | None = None,
    dodge: float = 0.0,
    spread: dict[str, Sequence[float]] | None = None,
    spread_label: str = "±1 std",
) -> Figure:
    """One line per named series against a shared x axis (loss curves, metric-vs-SNR plots).

    Args:
        value_range: the values the metric can take, ``(low, high)`` with None for unbounded, e.g.
            ``(0, 1)`` for an accuracy, ``(0, None)`` for an error rate. The y axis then starts at ``low``
            and ends at ``high`` (or at the largest value), so a metric that is 0 everywhere is drawn at
            the bottom of a ``[0, 1]`` axis instead of in the middle of ``[-0.04, 0.04]``.
        dodge: each series is shifted on x by this fraction of the x span, centred on the true x, so that
            equal values do not hide one series behind another (the x label says so).
        spread: per series (by name, a value per point), the half-height of an error bar drawn around each
            point, e.g. the standard deviation over seeds; series it does not name, and points where it
            is 0 or NaN, get none. The x label then says what the bars are (``spread_label``), and the y
            axis takes in the bars' ends.
    """
    outside = len(series) > LEGEND_INSIDE  # many series: a legend inside would sit on some of them
    fig, ax = plt.subplots(figsize=(8.5 if outside else 6.5, 4), layout="constrained")
    x_values = [float(x) for x in xs]
    span = (max(x_values) - min(x_values)) if x_values else 0.0
    step = dodge * span if len(series) > 1 else 0.0
    bars = {name: _bar_heights(spread.get(name, ()), len(ys)) for name, ys in series.items()} if spread else {}
    bars = {name: b for name, b in bars.items() if any(math.isfinite(h) for h in b)}
    for i, (name, ys) in enumerate(series.items()):
        shift = (i - (len(series) - 1) / 2) * step
        ax.errorbar(
            [x + shift for x in x_values[: len(ys)]],
            list(ys),
            yerr=bars.get(name),
            marker=MARKERS[i % len(MARKERS)] if len(ys) < 30 else None,
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            label=name,
            capsize=2.5,
            elinewidth=0.8,
        )
    notes = [f"series drawn {step:.2g} apart on x, so that equal values stay visible"] if step else []
    if bars:
        notes.append(f"bars: {spread_label}")
    xlabel = "\n".join([xlabel, *(f"({note})" for note in notes)])  # a line each: long labels are cut off
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    elif value_range is not None:
        ends = [[y + sign * b for y, b in zip(series[n], heights)] for n, heights in bars.items() for sign in (-1, 1)]
        ax.set_ylim(*_bounded_limits([*series.values(), *ends], value_range))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if outside:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend()
    return fig


def _bar_heights(spread: Sequence[float], n: int) -> list[float]:
    """``n`` error-bar half-heights from ``spread``: NaN (no bar and no caps) where it has no value, is
    NaN or is not above 0."""
    values = [float(v) for v in spread[:n]] + [math.nan] * max(0, n - len(spread))
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]


def _bounded_limits(
    series: Iterable[Sequence[float]], value_range: tuple[float | None, float | None]
) -> tuple[float, float]:
    """y limits for values within ``value_range``: its bounds where given, the data's extremes otherwise, and
    a span of 1 when the data leave none; with a margin of 4% so markers on a bound are drawn whole."""
    finite = [float(y) for ys in series for y in ys if math.isfinite(float(y))]
    low, high = value_range
    bottom = low if low is not None else min(finite, default=0.0)
    top = high if high is not None else max(finite, default=bottom)
    if top <= bottom:
        if low is not None:
            top = bottom + 1.0
        else:
            bottom = top - 1.0
    pad = 0.04 * (top - bottom)
    return bottom - pad, top + pad


def plot_curve(xs: Sequence[float], series: dict[str, Sequence[float]], path: str | Path, **options: Any) -> Path:
    """:func:`curve_figure` (``options`` are its keywords) written to ``path``."""
    return _save(curve_figure(xs, series, **options), path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return _save(fig, path)
