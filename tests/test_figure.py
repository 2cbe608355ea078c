"""`apikit/figure.py`: one PNG writer for run, report and visualisation figures: atomic, one dpi per kind."""
from pathlib import Path

import pytest
from PIL import Image

from apikit.figure import DPI, new_figure, save_figure


def drawn(width=4.0, height=3.0):
    fig = new_figure(width, height)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [1, 0, 2], "o-")
    ax.set(xlabel="epoch", ylabel="loss", title="a plot")
    return fig


@pytest.mark.parametrize("kind", ["plot", "maps"])
def test_a_figure_is_written_as_a_png_at_its_kinds_dpi(tmp_path, kind):
    path = save_figure(drawn(), tmp_path / "sub" / "f.png", kind=kind)  # the folder is made
    assert path == tmp_path / "sub" / "f.png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert [round(d) for d in im.info["dpi"]] == [DPI[kind]] * 2
        # Cropped to what is drawn (bbox "tight"): no larger than the figure at that dpi, and not a sliver.
        w, h = im.size
        assert 0.5 * 4 * DPI[kind] < w <= 4 * DPI[kind] + 20 and 0.5 * 3 * DPI[kind] < h <= 3 * DPI[kind] + 20
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.png"]  # no temporary file left


def test_plots_are_sharper_than_maps_and_the_kind_is_checked(tmp_path):
    assert DPI == {"plot": 100, "maps": 80}
    with pytest.raises(ValueError, match="kind='map' is not a kind of figure: choose one of 'plot', 'maps'"):
        save_figure(drawn(), tmp_path / "f.png", kind="map")
    assert not (tmp_path / "f.png").exists()


def test_a_failed_write_keeps_the_old_png(tmp_path):
    path = save_figure(drawn(), tmp_path / "f.png")
    before = path.read_bytes()
    fig = drawn()

    def fail(tmp, **kwargs):  # the disk fills up half way through the PNG
        Path(tmp).write_bytes(before[: len(before) // 2])
        raise OSError(28, "No space left on device")
    fig.savefig = fail
    with pytest.raises(OSError, match="No space left"):
        save_figure(fig, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
