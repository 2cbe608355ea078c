"""explore.ipynb's widget: the gate explorer and the channel atlas (ipywidgets) around an `Explorer`.

Whatever a person chooses, the widget answers in one line (`Name: message`, as apikit's errors read in a notebook)
and keeps the last good figure; never a traceback (with APIKIT_DEBUG set, the traceback goes below the line).
"""
from __future__ import annotations

import time
import traceback
from contextlib import contextmanager

from ..notebook_errors import debugging
from ..runs import shown
from .batches import short_class_name
from .explore import GATES, MAX_K, RANKINGS, SIMILAR, VIEWS, Explorer
from .run import VISUALIZE_DEFAULTS

__all__ = ["ExplorerWidget", "explore"]


def _line(e: BaseException) -> str:
    """An error as one line: its type and message, the first line of it."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class ExplorerWidget:
    """The controls, the figure, the save button and the atlas; `.box` is what is displayed."""

    def __init__(self, baseline_run=VISUALIZE_DEFAULTS["baseline_run"], api_run=VISUALIZE_DEFAULTS["api_run"],
                 **options):
        import ipywidgets as w
        self.options, self.explorer, self._quiet, self._forwards = options, None, False, 0
        wide = w.Layout(width="95%")
        self.baseline_run = w.Text(str(baseline_run), description="Baseline run", layout=wide)
        self.api_run = w.Text(str(api_run), description="API-Net run", layout=wide)
        self.open = w.Button(description="Open runs", tooltip="check and load the two runs (same checks as visualize)")
        self.runs = w.HTML()  # the runs open
        self.status = w.HTML(layout=w.Layout(width="95%"))  # one line: what was done, or what was refused
        self.pair = w.Dropdown(description="class pair", layout=wide)
        self.image1 = w.Dropdown(description="image 1", layout=wide)
        self.image2 = w.Dropdown(description="image 2", layout=wide)
        self.gate = w.ToggleButtons(options=GATES, description="gate")
        self.view = w.ToggleButtons(options=VIEWS, description="view")
        self.k = w.IntSlider(5, min=1, max=MAX_K, description="top k", continuous_update=False)
        self.ranking = w.ToggleButtons(options=list(RANKINGS), description="ranking",
                                       tooltips=list(RANKINGS.values()))
        self.overlay = w.Checkbox(True, description="overlay on the image")
        self.alpha = w.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="opacity", continuous_update=False)
        self.gradcam = w.Checkbox(False, description="Grad-CAM")
        self.save = w.Button(description="Save figure", tooltip="into the API-Net run's visualize folder")
        self.figure = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.channel = w.BoundedIntText(0, min=0, max=0, description="channel")
        self.figure_channel = w.Dropdown(description="or of the figure")
        self.show_atlas = w.Button(description="Show atlas", tooltip="the test images on which the channel fires most")
        self.progress = w.IntProgress(0, min=0, max=1, description="statistics", layout=w.Layout(display="none"))
        self.atlas = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))  # shown once drawn
        self.notes = w.Output()
        controls = w.VBox([self.pair, self.image1, self.image2, w.HBox([self.gate, self.view]),
                           w.HBox([self.k, self.ranking]), w.HBox([self.overlay, self.alpha, self.gradcam, self.save])])
        atlas = w.VBox([w.HTML("<b>Channel atlas</b>: where one channel fires over the test split"),
                        w.HBox([self.channel, self.figure_channel, self.show_atlas]), self.atlas])
        self.box = w.VBox([self.baseline_run, self.api_run, self.open, self.runs, self.status, self.progress, controls,
                           self.figure, atlas, self.notes])
        self.open.on_click(lambda _: self.load())
        self.save.on_click(lambda _: self._guard(self._save))
        self.show_atlas.on_click(lambda _: self._guard(self._atlas))
        self.figure_channel.observe(self._pick_channel, "value")
        self.pair.observe(self._pick_pair, "value")
        for name in ("image1", "image2", "gate", "view", "k", "ranking", "overlay", "alpha", "gradcam"):
            getattr(self, name).observe(lambda change, name=name: self._choose(name, change["new"]), "value")
        self.load()

    def _ipython_display_(self):
        from IPython.display import display
        display(self.box)

    def say(self, text: str, error: bool = False):
        """One line under the run boxes."""
        import html
        colour = "#b00020" if error else "#333"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _guard(self, fn, *args, **kwargs):
        """Run `fn`; an error is one line (its traceback only with APIKIT_DEBUG). Returns whether it went through."""
        try:
            fn(*args, **kwargs)
            return True
        except Exception as e:  # noqa: BLE001 -- a person's choice never ends in a traceback
            self.say(_line(e), error=True)
            if debugging():
                with self.notes:
                    print(traceback.format_exc())
            return False

    def load(self):
        """Open the two runs in the boxes (visualize's checks); on a refusal, one line says what to pass."""
        self.runs.value = ""
        self.say(f"opening {self.baseline_run.value} and {self.api_run.value} ...")
        if self._guard(self._load):
            self.runs.value = (f"{self.explorer.where()}: {len(self.explorer.pairs)} class pairs, by how often the "
                               "Baseline confuses them")

    def _load(self):
        self.explorer, self._forwards = None, 0
        with self._bar():
            self.explorer = Explorer(self.baseline_run.value, self.api_run.value, done=self._count, **self.options)
        ex = self.explorer
        self._quiet = True
        try:
            self.pair.options = ex.pair_options()
            self.pair.value = 0
            self._image_options()
            self.channel.max = ex.forward(ex.pairs[0].item_a).feats.shape[0] - 1
        finally:
            self._quiet = False
        self.redraw()

    def _image_options(self):
        """The images of the pair's two classes; image 2 may be image 1's most similar (the pair miner's choice)."""
        ex = self.explorer
        pair = ex.pairs[ex.state["pair"]]
        label = lambda p, y: f"{p.name} ({short_class_name(ex.opened.vocab[y])})"
        self.image1.options = [(label(p, pair.label_a), p) for p in ex.images_of(pair.label_a)]
        self.image2.options = [("its most similar of the other class (pair miner)", SIMILAR)] + \
            [(label(p, pair.label_b), p) for p in ex.images_of(pair.label_b)]
        self.image1.value, self.image2.value = ex.state["image1"], ex.state["image2"]

    def _pick_pair(self, change):
        if self._quiet or self.explorer is None:
            return
        before = self.explorer.state
        if self._guard(self.explorer.choose, pair=change["new"]):
            self._quiet = True
            try:
                self._image_options()
            finally:
                self._quiet = False
            self.redraw()
        else:
            self._restore(before)

    def _choose(self, name, value):
        if self._quiet or self.explorer is None:
            return
        before = self.explorer.state
        if self._guard(self.explorer.choose, **{name: value}):
            self.redraw()
        else:  # an image that cannot be read: skipped, the choice before it shown again
            self._restore(before)

    def _restore(self, state):
        self._quiet = True
        try:
            for name in ("image1", "image2", "gate", "view", "k", "ranking", "overlay", "alpha", "gradcam"):
                getattr(self, name).value = state[name]
        finally:
            self._quiet = False

    def redraw(self):
        """Draw the current figure (kept forward passes: no network runs for k, gate, view, ranking or overlay)."""
        def draw():
            ex, start = self.explorer, time.perf_counter()
            view = ex.view()
            self.figure.value = ex.png(ex.figure(view))
            ran, self._forwards = ex.forwards - self._forwards, ex.forwards  # since the last figure, the choice's too
            self.say(f"redrawn in {time.perf_counter() - start:.2f} s"
                     + (f" ({ran} image{'s' if ran != 1 else ''} through the networks)" if ran else
                        " (no forward pass)"))
            self._quiet = True
            try:
                self.figure_channel.options = [(f"ch {c} ({view.gate} {g:.3f})", c)
                                               for c, g in zip(view.channels, view.gates)]
                self.figure_channel.value = None
            finally:
                self._quiet = False
        self._guard(draw)

    def _save(self):
        path = self.explorer.save()
        self.say(f"saved {shown(path)}")
        with self.notes:
            print(f"saved {path}")

    def _pick_channel(self, change):
        if not self._quiet and change["new"] is not None:
            self.channel.value = change["new"]

    def _count(self, n: int, total: int):
        """The progress bar: `n` of `total` test images through a network, for the channel statistics (once per run)."""
        if self.progress.layout.display == "none":
            self.progress.layout.display = None
            self.say("channel statistics over the test split: computed once per run, then cached beside it ...")
        self.progress.max, self.progress.value = max(1, total), n

    @contextmanager
    def _bar(self):
        """The progress bar, shown while a statistics pass counts (`_count`), hidden after."""
        self.progress.value = 0
        try:
            yield
        finally:
            self.progress.layout.display = "none"

    def _atlas(self):
        ex = self.explorer
        if ex is None:
            raise ValueError("open two runs first")
        start = time.perf_counter()
        with self._bar():
            fig, notes = ex.atlas(int(self.channel.value), done=self._count)
            self.atlas.value = ex.png(fig)
            self.atlas.layout.display = None
        self.say(f"atlas of channel {self.channel.value} in {time.perf_counter() - start:.1f} s")
        with self.notes:
            for note in notes:
                print(note)


def explore(baseline_run=VISUALIZE_DEFAULTS["baseline_run"], api_run=VISUALIZE_DEFAULTS["api_run"],
            **options) -> ExplorerWidget:
    """explore.ipynb's cell: the widget on two runs (relative paths: to the project root), displayed."""
    from IPython.display import display
    widget = ExplorerWidget(baseline_run, api_run, **options)
    display(widget.box)
    return widget
