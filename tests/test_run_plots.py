"""`apikit/run_plots.py`: a run's training curves stay readable whatever the first epoch's loss."""
import pytest

from apikit import run_plots


def history(first_test_loss):
    return [dict(epoch=e, train_loss=2.0 - 0.3 * e, valid_loss=first_test_loss if e == 1 else 1.8 - 0.2 * e,
                 top1=20.0 + 5 * e, top5=None, lr=0.01 / e, time_s=1.0) for e in (1, 2, 3)]


@pytest.mark.parametrize("first, scale, label", [(406.0, "log", "loss (log scale)"), (2.0, "linear", "loss")])
def test_a_large_first_test_loss_goes_on_a_log_scale(tmp_path, monkeypatch, first, scale, label):
    drawn = {}
    monkeypatch.setattr(run_plots, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    run_plots.run_curves_plot(history(first), tmp_path / "curves.png")
    loss, acc = drawn["fig"].axes
    assert (loss.get_yscale(), loss.get_ylabel()) == (scale, label)
    assert acc.get_yscale() == "linear"
    # Every epoch's loss is drawn, the large one included (nothing clipped).
    assert [list(line.get_ydata()) for line in loss.get_lines()][1] == [first, 1.4, 1.2]


def test_the_loss_axis_ignores_missing_values():
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    assert run_plots.loss_axis(ax, [None, 3.0, 0.1, float("nan")]) and ax.get_yscale() == "log"
    assert not run_plots.loss_axis(ax, [None]) and not run_plots.loss_axis(ax, [0.0, 50.0])  # no log of 0


def test_a_single_test_point_is_a_marked_point_with_its_value_on_the_epoch_axis(tmp_path, monkeypatch):
    """test_every=0: the test split is scored after the last epoch only; that one point carries its value, on an axis
    spanning every epoch (not a sliver around the point with fractional ticks)."""
    drawn = {}
    monkeypatch.setattr(run_plots, "save_figure", lambda fig, path: drawn.setdefault("fig", fig) and path)
    h = [dict(h, valid_loss=None, top1=None) for h in history(2.0)[:2]] + [dict(history(2.0)[2], top1=41.66)]
    run_plots.run_curves_plot(h, tmp_path / "curves.png")
    loss, acc = drawn["fig"].axes
    (top1,) = acc.get_lines()
    assert list(top1.get_xdata()) == [3] and top1.get_marker() == "o"
    assert [t.get_text() for t in acc.texts] == ["41.7%"]
    assert [t.get_text() for t in loss.texts] == ["1.200"]  # the test loss's one point; the train curve has three
    for ax in (loss, acc):
        assert ax.get_xlim() == (0.5, 3.5) and [t for t in ax.get_xticks() if 0.5 <= t <= 3.5] == [1, 2, 3]


def test_the_confusion_matrix_keeps_its_cells_whatever_the_class_names(tmp_path):
    """Long class names (the generated set's '001.Group_A_Tern_1') get room of their own: the matrix keeps the
    area it has with short names, instead of being squeezed into a strip beside the labels."""
    import numpy as np
    from PIL import Image
    targs, decoded = np.array([0, 1, 2, 3, 0, 1]), np.array([1, 0, 3, 2, 0, 1])
    short = run_plots.confusion_plot(decoded, targs, ["a", "b", "c", "d"], tmp_path / "short.png")
    long = run_plots.confusion_plot(decoded, targs, [f"00{k}.Group_A_Tern_{k}" for k in range(1, 5)], tmp_path / "long.png")
    (ws, hs), (wl, hl) = Image.open(short).size, Image.open(long).size
    # 17 more characters: about 1.4 in more each way, at the figure's dpi (short's width less its 1 in + 4 cells)
    dpi = ws / (1 + 0.08 + 0.45 * 4)
    assert wl - ws == pytest.approx(0.08 * 17 * dpi, rel=0.05) and hl - hs == pytest.approx(0.08 * 17 * dpi, rel=0.05)
