"""The plots people read: nothing hidden, cut off or overlapping, and scales that mean the same across panels."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from flow_omni.plotting import curve_figure, mel_band_position, mel_figure


def boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]


def test_equal_series_stay_visible_side_by_side_with_their_own_markers():
    xs = [30.0, 10.0, 0.0]
    fig = curve_figure(xs, {"a": [0, 0, 0], "b": [0, 0, 0]}, xlabel="SNR", ylabel="acc", dodge=0.02)
    a, b = fig.axes[0].get_lines()
    assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
    shift = [xb - xa for xa, xb in zip(a.get_xdata(), b.get_xdata())]
    assert shift == pytest.approx([0.6, 0.6, 0.6])  # 2% of the 30 dB span, centred on the true x
    assert list(a.get_xdata()) == pytest.approx([29.7, 9.7, -0.3])
    assert "0.6 apart" in fig.axes[0].get_xlabel()
    plt.close(fig)
    one = curve_figure(xs, {"a": [1, 2, 3]}, xlabel="x", ylabel="y", dodge=0.02)
    assert list(one.axes[0].get_lines()[0].get_xdata()) == xs  # nothing to keep apart
    plt.close(one)


@pytest.mark.parametrize(
    ("values", "value_range", "low", "high"),
    [
        ([0.0, 0.0, 0.0], (0.0, 1.0), 0.0, 1.0),  # an accuracy of 0 everywhere: the whole [0, 1], not ±0.04
        ([0.25, 0.5, 0.5], (0.0, 1.0), 0.0, 1.0),
        ([1.0, 1.0, 1.0], (0.0, None), 0.0, 1.0),  # an error rate: from 0 to its largest value
        ([2.1, 2.2, 2.0], (0.0, None), 0.0, 2.2),  # CER past 1 (insertions) is drawn whole
        ([0.0, 0.0, 0.0], (0.0, None), 0.0, 1.0),
    ],
)
def test_bounded_metrics_get_an_axis_over_their_range(values, value_range, low, high):
    fig = curve_figure([0, 10, 30], {"v": values}, xlabel="x", ylabel="y", value_range=value_range)
    bottom, top = fig.axes[0].get_ylim()
    margin = 0.04 * (high - low)  # so that markers on a bound are drawn whole
    assert bottom == pytest.approx(low - margin) and top == pytest.approx(high + margin)
    plt.close(fig)


def test_mel_panels_share_one_scale_and_one_time_axis():
    mels = [("quiet", torch.full((100, 50), -10.0)), ("loud", torch.linspace(-5, 3, 100 * 120).reshape(100, 120))]
    fig = mel_figure(mels, frame_rate=93.75)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_images()[0].get_clim() for ax in panels] == [(-10.0, 3.0)] * 2  # equal colours, equal values
    assert [ax.get_xlim() for ax in panels] == [pytest.approx((0, 120 / 93.75))] * 2  # the longest file's span
    plt.close(fig)
    fixed = mel_figure(mels, vmin=-12.0, vmax=6.0)
    assert {ax.get_images()[0].get_clim() for ax in fixed.axes if ax.get_images()} == {(-12.0, 6.0)}
    plt.close(fixed)


@pytest.mark.parametrize("n", [1, 4])  # `flow-omni mel` of one file; roundtrip's four panels
def test_mel_labels_are_inside_the_image_and_titles_clear_of_tick_labels(n):
    mels = [(f"panel {i}: a title as long as roundtrip's longest one, {i}", torch.randn(100, 150)) for i in range(n)]
    fig = mel_figure(mels, frame_rate=93.75)
    panels = [ax for ax in fig.axes if ax.get_images()]
    fig.canvas.draw()
    frame = fig.bbox
    labels = [panels[-1].xaxis.label, panels[0].yaxis.label, fig.axes[-1].yaxis.label]  # time, kHz, colour bar
    assert [t.get_text() for t in labels] == ["time (s)", "frequency (kHz)", "log-mel (natural log of magnitude)"]
    for box in boxes(fig, labels):  # drawn inside the image, not cut off at its edge
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    ticks = boxes(fig, [t for ax in panels for t in ax.get_xticklabels() + ax.get_yticklabels()])
    for title in boxes(fig, [ax.title for ax in panels]):
        assert not any(title.overlaps(t) for t in ticks)
    plt.close(fig)


def test_mel_axis_marks_kilohertz_where_the_htk_bands_put_them():
    # Band i of the Vocos mel is centred on mel point i + 1 of 102 from 0 Hz to 12 kHz (HTK scale).
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(513, 0.0, 12000.0, 100, 24000)  # (freq bins, bands)
    freqs = torch.linspace(0, 12000, 513)
    for hz in (500.0, 1000.0, 4000.0):
        peak_band = int(fb[int(torch.argmin((freqs - hz).abs()))].argmax())  # the band that weighs hz most
        assert abs(mel_band_position(hz, 100, 24000) - (peak_band + 0.5)) <= 1.0


def test_error_bars_where_a_spread_is_given_and_the_axis_takes_in_their_ends():
    series = {"a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0]}
    spread = {"a": [float("nan"), 0.0, 1.0], "b": [0.0, 0.0, 0.0]}  # one seed's std of 0 draws no bar
    fig = curve_figure([0, 10, 30], series, xlabel="SNR", ylabel="CER", value_range=(0.0, None), spread=spread)
    a, b = fig.axes[0].containers
    assert a.has_yerr and not b.has_yerr
    drawn = [s for s in a.lines[2][0].get_segments() if len(s) and np.isfinite(s).all()]
    assert [abs(s[1][1] - s[0][1]) for s in drawn] == pytest.approx([2.0])  # NaN and 0: no bar; 1.0: ±1
    caps = [float(y) for line in a.lines[1] for y in line.get_ydata() if np.isfinite(float(y))]
    assert sorted(caps) == pytest.approx([2.0, 4.0])  # and no caps where there is no bar
    assert fig.axes[0].get_ylim()[1] == pytest.approx(4.0 + 0.04 * 4.0)  # the top bar is drawn whole
    assert "bars: ±1 std" in fig.axes[0].get_xlabel()
    plt.close(fig)
    # An accuracy of 0.95 ± 0.1: the bar runs past 1, the axis stays on the metric's range.
    share = curve_figure(
        [0, 30], {"a": [0.5, 0.95]}, xlabel="x", ylabel="y", value_range=(0.0, 1.0), spread={"a": [0.1, 0.1]}
    )
    assert share.axes[0].get_ylim() == pytest.approx((-0.04, 1.04))
    plt.close(share)
    plain = curve_figure([0, 10, 30], series, xlabel="SNR", ylabel="CER", spread={"b": [0.0] * 3})
    assert "bars" not in plain.axes[0].get_xlabel() and not any(c.has_yerr for c in plain.axes[0].containers)
    plt.close(plain)


def test_a_legend_of_many_series_sits_right_of_the_data_and_inside_the_figure():
    from flow_omni.plotting import LEGEND_INSIDE

    many = {f"variant {i}": [0.1 * i, 0.2, 0.3] for i in range(LEGEND_INSIDE + 1)}
    fig = curve_figure([0, 10, 30], many, xlabel="SNR", ylabel="CER")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes = fig.axes[0].get_legend().get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert legend.x0 >= axes.x1 and legend.x1 <= fig.bbox.x1  # off the axes, not cut off
    plt.close(fig)
    few = curve_figure([0, 10, 30], dict(list(many.items())[:LEGEND_INSIDE]), xlabel="SNR", ylabel="CER")
    few.canvas.draw()
    renderer = few.canvas.get_renderer()
    assert few.axes[0].get_legend().get_window_extent(renderer).x1 <= few.axes[0].get_window_extent(renderer).x1
    plt.close(few)
