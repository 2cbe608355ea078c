"""`apikit/progress.py`: a bar is fastprogress's HTML bar in a live notebook, and a bounded number of lines with
counts and the time left everywhere else (papermill's log, a terminal)."""
import re
import types

import pytest
from fastprogress.fastprogress import NBProgressBar

from apikit import progress as pg


@pytest.fixture
def every_redraw(monkeypatch):
    """fastprogress redraws at most 5 times a second: here at every item, the worst case for a log."""
    monkeypatch.setattr(pg.LineBar, "update_every", 0)


def test_a_bar_outside_a_notebook_is_a_line_every_tenth_with_counts_and_time_left(every_redraw, capsys):
    assert list(pg.progress(range(10_000), "checking that the images decode", "images")) == list(range(10_000))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == pg.STEPS + 1  # 10,000 items, 10,000 redraws: 11 lines
    assert lines[0] == "checking that the images decode: 0/10000 images"
    for k, line in enumerate(lines[1:-1], start=1):
        assert re.fullmatch(rf"checking that the images decode: {1000 * k}/10000 images \({10 * k}%\), "
                            r"\d\d:\d\d so far, about \d\d:\d\d left", line), line
    assert re.fullmatch(r"checking that the images decode: 10000/10000 images \(100%\) in \d\d:\d\d", lines[-1])


def test_a_bar_counts_units_not_items(every_redraw, capsys):
    """Batches of 16 images, counted in images; the last batch is short."""
    batches = [list(range(16))] * 6 + [list(range(4))]
    assert len(list(pg.progress(batches, "part hits", "images", total=100, count=len))) == 7
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["0/100", "16/100", "32/100", "48/100", "64/100",
                                                                  "80/100", "96/100", "100/100"]


def test_no_work_draws_no_bar(capsys):
    assert list(pg.progress([], "drawing", "images")) == [] and pg.progress_map(str, [], "x") == []
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("n_workers", [0, 3])
def test_progress_map_keeps_the_order(n_workers, capsys):
    assert pg.progress_map(lambda x, k: x * k, range(40), "doubling", n_workers=n_workers, k=2) == list(range(0, 80, 2))
    assert capsys.readouterr().out.splitlines()[-1].startswith("doubling: 40/40 (100%) in ")


def fake_kernel(allow_stdin):
    """IPython's shell as a kernel sees it while it runs a cell sent with or without allow_stdin."""
    parent = {"header": {"msg_type": "execute_request"}, "content": {"code": "", "allow_stdin": allow_stdin}}
    return types.SimpleNamespace(kernel=types.SimpleNamespace(get_parent=lambda channel="shell": parent))


@pytest.mark.parametrize("allow_stdin, live", [(True, True), (False, False)])
def test_a_live_notebook_gets_fastprogress_s_html_bar_and_papermill_lines(monkeypatch, allow_stdin, live):
    """JupyterLab sends each cell with allow_stdin; papermill's client (nbclient) without."""
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: fake_kernel(allow_stdin))
    assert pg.live_display() is live
    bar = pg.progress_bar(range(3), 3, "drawing", "images")
    assert isinstance(bar, NBProgressBar) is live and isinstance(bar, pg.LineBar) is not live


def test_no_kernel_no_live_display(monkeypatch):
    import IPython
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert pg.live_display() is False
