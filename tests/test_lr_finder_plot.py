"""cdvd-find-lr's reading of the loss curve: the suggested lr sits clearly below OneCycle's max_lr, both below the
divergence, and the plot shows the fall instead of a flat line under the divergence's spike."""

from __future__ import annotations

import math

import pytest

from cdvd.training.lr_finder import plot_range_test, suggest


def _lrs(n: int = 49) -> list[float]:
    return [10 ** (-7 + 6 * i / (n - 1)) for i in range(n)]  # 1e-7 .. 1e-1, 8 points a decade


def _sharp_fall_then_spike() -> tuple[list[float], list[float], float]:
    """A smoothed range-test curve: flat at 1.0, a sharp fall centred on 1e-3, the minimum near 3e-3, a climb and
    the divergence's spike (320, as the range test records it when it stops). Returns lrs, losses, the spike's lr."""
    lrs = _lrs()
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        fall = 0.8 / (1 + math.exp(-(x + 3) / 0.15))  # 1.0 -> 0.2 around 1e-3, steepest there
        climb = 0.0 if x < -2.5 else 4.0 * (x + 2.5) ** 2
        losses.append(1.0 - fall + climb)
    cut = next(i for i, loss in enumerate(losses) if loss > 1.5)  # where the range test stops
    lrs, losses = lrs[: cut + 1], losses[: cut + 1]
    losses[-1] = 320.0
    return lrs, losses, lrs[-1]


def test_suggested_lr_sits_clearly_below_max_lr_and_both_below_the_divergence() -> None:
    lrs, losses, diverged = _sharp_fall_then_spike()
    lowest = lrs[losses.index(min(losses))]
    lr, max_lr = suggest(lrs, losses)
    # a sharp fall: a decade before the minimum is still flat, the peak goes to the steepest fall (1e-3)
    assert 10**-3.25 <= max_lr <= 10**-2.75
    assert lr <= max_lr / 3  # OneCycle climbs from lr to max_lr: not one step before it
    assert max_lr < lowest < diverged

    # a long gentle fall, steepest at 1e-5, lowest just before the spike at 1e-2: the peak a decade before it
    lrs = _lrs()
    losses = [1.0 - 0.5 / (1 + math.exp(-(math.log10(lr) + 5) / 0.5)) - 0.05 * (math.log10(lr) + 7) for lr in lrs]
    stop = lrs.index(next(lr for lr in lrs if lr > 1.1e-2))
    lrs, losses = lrs[: stop + 1], losses[:stop] + [320.0]
    lr, max_lr = suggest(lrs, losses)
    assert max_lr == pytest.approx(lrs[stop - 1] / 10)
    assert lr == pytest.approx(max_lr / 4)


def test_a_loss_that_never_falls_says_to_lower_start_lr(caplog: pytest.LogCaptureFixture) -> None:
    lrs = _lrs(7)
    lr, max_lr = suggest(lrs, [0.5, 0.6, 0.7, 0.9, 1.2, 2.0, 9.0])
    assert lr < max_lr <= lrs[0]
    assert "lower lr_finder.start_lr" in caplog.text


def test_non_finite_losses_are_left_out_and_too_few_points_refused() -> None:
    # moved from tests/test_protocol.py (the rule's older form): NaN and inf after the minimum change nothing
    lrs, losses, _ = _sharp_fall_then_spike()
    with_nan = [*losses[:-1], float("nan"), float("inf"), losses[-1]]
    assert suggest([*lrs[:-1], 0.02, 0.03, 0.04], with_nan) == suggest(lrs, losses)
    with pytest.raises(ValueError, match="fewer than 3"):
        suggest(lrs[:2], [1.0, 0.5])
    with pytest.raises(ValueError, match="fewer than 2 finite"):
        suggest(lrs[:3], [float("nan"), float("inf"), 1.0])


def test_the_plot_leaves_the_spike_out_and_marks_both_suggestions() -> None:
    lrs, losses, diverged = _sharp_fall_then_spike()
    lr, max_lr = suggest(lrs, losses)
    fig = plot_range_test(lrs, losses, lr, max_lr)
    (ax,) = fig.axes
    bottom, top = ax.get_ylim()
    # the whole fall, from the flat start (1.0) down to the minimum (0.2), fills the plot; the spike is off it
    assert bottom <= min(losses) and 1.0 <= top < 2 * max(losses[:-1])
    assert ax.get_xscale() == "log"
    vertical = {round(line.get_xdata()[0], 15) for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
    assert {round(lr, 15), round(max_lr, 15)} <= vertical
    labels = ax.get_legend_handles_labels()[1]
    assert any(f"{lr:.2e}" in label for label in labels) and any(f"{max_lr:.2e}" in label for label in labels)
