"""Progress bars for apikit's long loops (data preparation, visualize's stages), bounded wherever they are read.

In a notebook open in a front end (JupyterLab, Notebook, VS Code) a bar is fastprogress's HTML bar, redrawn in
place, as fastai's own are. Anywhere else it is `LineBar`: a line every tenth of the way with the count, the time
taken and the time left. papermill keeps every printed line in its log (`--log-output`) and in the executed
notebook, and a terminal piped to a file keeps every redraw, so a bar there is at most STEPS + 1 lines, however
many items it counts.
"""
from fastprogress.fastprogress import NBProgressBar, ProgressBar, format_time

__all__ = ["STEPS", "live_display", "LineBar", "progress_bar", "progress", "progress_imap", "progress_map"]

STEPS = 10  # lines of a bar outside a live notebook, after its first: one every tenth of the way


def live_display():
    """Whether a notebook front end draws this kernel's displays as they come. JupyterLab, Notebook and VS Code
    send each cell with `allow_stdin` (they can answer input()); papermill's client sends it without, and keeps
    only a display's last state, so an HTML bar there would show nothing while it runs."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    try:
        return bool(kernel.get_parent()["content"]["allow_stdin"])
    except (AttributeError, KeyError, TypeError):  # no kernel (a terminal), or no request being run
        return False


class LineBar(ProgressBar):
    """fastprogress's bar as lines: 'what: 0/600 images', then 'what: 120/600 images (20%), 00:03 so far, about
    00:12 left' every tenth of the way, and 'what: 600/600 images (100%) in 00:15'."""

    def __init__(self, gen, total=None, what="", unit="", out=None):
        super().__init__(gen, total=total)
        self.what, self.unit, self.out, self.shown = what, f" {unit}" if unit else "", out or _print, -1

    def update_bar(self, val):
        """A line when `val` starts a new tenth of the total (fastprogress calls this a few times a second)."""
        step = STEPS * val // self.total if self.total else 0
        if step <= self.shown:
            return
        self.shown = step
        count = f"{self.what}: {val}/{self.total}{self.unit}"
        if val == 0:
            return self.out(count)
        elapsed = self.last_t - self.start_t
        if val >= self.total:
            return self.out(f"{count} (100%) in {format_time(elapsed)}")
        self.out(f"{count} ({100 * val // self.total}%), {format_time(elapsed)} so far, about "
                 f"{format_time(self.pred_t - elapsed)} left")


def _print(line):
    print(line, flush=True)  # papermill and a pipe see each line as it comes, not at the end of the cell


def progress_bar(gen, total, what, unit=""):
    """A bar over `total` units of `gen`: fastprogress's HTML bar in a live notebook, else a `LineBar`."""
    if live_display():
        return NBProgressBar(gen, total=total, comment=f"{what} ({unit})" if unit else what)
    return LineBar(gen, total=total, what=what, unit=unit)


def progress(items, what, unit="", total=None, count=None):
    """Yield `items` with a bar of `total` units (default len(items)); `count(item)`: the units an item holds (a
    batch's images), default 1. An item is counted once the loop asks for the next, i.e. once its work is done."""
    total = len(items) if total is None else total
    if not total:
        yield from items
        return
    bar, done = progress_bar(items, total, what, unit), 0
    bar.update(0)
    for item in items:
        yield item
        done = min(total, done + (1 if count is None else count(item)))
        bar.update(done)


def progress_imap(fn, items, what, unit="", n_workers=None, chunk=512, **kwargs):
    """`fn(item, **kwargs)` for each of `items`, yielded in order, with a bar counting them: run in a pool of
    `n_workers` threads (fastcore's: 0 runs them here; None: one per CPU), as fastcore's `parallel(threadpool=True)`.
    At most `chunk` items are queued at a time, so an interrupt waits for those only."""
    from fastcore.parallel import ThreadPoolExecutor
    items = list(items)

    def results():
        with ThreadPoolExecutor(n_workers) as ex:
            for k in range(0, len(items), chunk):
                yield from ex.map(fn, items[k:k + chunk], **kwargs)
    return progress(results(), what, unit, total=len(items))


def progress_map(fn, items, what, unit="", n_workers=None, **kwargs):
    """`progress_imap`'s results as a list."""
    return list(progress_imap(fn, items, what, unit, n_workers, **kwargs))
