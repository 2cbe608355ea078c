"""A run's own figures: its training curves and its most confused classes (`apikit.figure`: outside pyplot)."""
import numpy as np
from matplotlib.ticker import MaxNLocator

from .figure import new_figure, save_figure

__all__ = ["run_curves_plot", "confusion_plot", "loss_axis", "epoch_axis", "LOG_RANGE"]

# Losses spanning more than this factor (a first epoch's test loss of 400 beside a later 2) go on a log scale: on a
# linear one every later epoch is a flat line at the bottom.
LOG_RANGE = 20


def loss_axis(ax, values, label="loss"):
    """Label a loss axis, on a log scale (said in the label) when the positive `values` span more than LOG_RANGE."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    wide = bool(values) and min(values) > 0 and max(values) / min(values) > LOG_RANGE
    if wide:
        ax.set_yscale("log")
    ax.set_ylabel(f"{label} (log scale)" if wide else label)
    return wide


def epoch_axis(ax, epochs):
    """Integer epoch ticks, with half an epoch of room, so one epoch is a visible point and not an empty axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")


def _plot(ax, xs, ys, label, fmt):
    """One curve with a marker at each point; a curve of one point (one evaluation, test_every=0) also shows its
    value beside it, so that it reads as a figure and not as a stray dot."""
    ax.plot(xs, ys, "o-", label=label)
    if len(xs) == 1:
        ax.annotate(fmt.format(ys[0]), (xs[0], ys[0]), textcoords="offset points", xytext=(-6, 6), ha="right",
                    fontsize=9, color=ax.get_lines()[-1].get_color())


def run_curves_plot(history, path, api=True):
    """curves.png: training and test loss, and test top-1/top-5 per epoch (markers, so one epoch shows)."""
    ep = [h["epoch"] for h in history]  # counted from 1

    def series(key):  # the epochs that have a value (test metrics are missing where test_every skipped them)
        pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        return [e for e, _ in pts], [v for _, v in pts]
    fig = new_figure(8, 3)
    a, b = fig.subplots(1, 2)
    _plot(a, *series("train_loss"), "train (API loss, Eq. 8)" if api else "train (CE)", "{:.3f}")
    _plot(a, *series("valid_loss"), "test (CE)", "{:.3f}")
    loss_axis(a, series("train_loss")[1] + series("valid_loss")[1])
    _plot(b, *series("top1"), "top-1", "{:.1f}%")
    if any(h.get("top5") is not None for h in history):
        _plot(b, *series("top5"), "top-5", "{:.1f}%")
    b.set(ylabel="test accuracy (%)")
    for ax in (a, b):
        epoch_axis(ax, ep)  # both panels span every epoch, evaluated or not
        if len(ep) < 3:  # a locator's ticks around one or two points fall between epochs: tick the epochs
            ax.set_xticks(ep)
        ax.legend()
    fig.suptitle(f"{len(ep)} epoch{'s' if len(ep) != 1 else ''}")
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_plot(decoded, targs, vocab, path, n_cells=10):
    """confusion.png: the test confusion matrix (of predicted classes `decoded` against `targs`), restricted to the
    classes of the `n_cells` largest off-diagonal cells."""
    import seaborn as sns
    vocab = list(map(str, vocab))
    n = len(vocab)
    # The run's own predictions: fastai's ClassificationInterpretation would predict the test split twice more.
    cm = np.bincount(np.asarray(targs) * n + np.asarray(decoded), minlength=n * n).reshape(n, n)
    off = cm - np.diag(np.diag(cm))
    cells = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:n_cells], off.shape))[0]
    keep = sorted({int(i) for c in cells for i in c if off[c[0], c[1]] > 0}) or list(range(min(n_cells, n)))
    # Room for the labels as well as the cells: a class name takes about 0.08 in a character at the ticks' size,
    # beside the rows and (turned) below the columns; without it long names squeeze the matrix to a strip.
    labels = 0.08 * max(len(vocab[i]) for i in keep)
    fig = new_figure(1 + labels + 0.45 * len(keep), 1.2 + labels + 0.4 * len(keep))
    ax = fig.subplots()
    sns.heatmap(cm[np.ix_(keep, keep)], annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                xticklabels=[vocab[i] for i in keep], yticklabels=[vocab[i] for i in keep])
    ax.set(xlabel="predicted", ylabel="actual", title="most confused classes (test)")
    fig.tight_layout()
    return save_figure(fig, path)
