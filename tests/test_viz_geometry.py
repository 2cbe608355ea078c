"""`apikit/viz/geometry.py` by hand.

A 200 x 100 image, squish-resized to 64 x 64, centre crop 48 (offset 8), a 3 x 3 feature map (cells of
16 crop pixels = 50 x 25 image pixels). Cell (0, 2): crop centre (40, 8) -> resized (48, 16) -> image
(48 * 200 / 64, 16 * 100 / 64) = (150, 25).
"""
import numpy as np
import pytest
import torch

from apikit import viz
from apikit.viz.geometry import chance_rate, in_crop


def test_a_hot_cell_maps_to_its_image_pixels():
    fmap = torch.zeros(3, 3)
    fmap[0, 2] = 1.0
    row, col = divmod(int(fmap.argmax()), 3)
    x, y, cw, ch = viz.cell_to_image(row, col, (3, 3), (200, 100), size=48, resize=64)
    assert (x, y, cw, ch) == (150.0, 25.0, 50.0, 25.0)
    # the cell spans image x in [125, 175) and y in [12.5, 37.5)
    assert (x - cw / 2, x + cw / 2, y - ch / 2, y + ch / 2) == (125.0, 175.0, 12.5, 37.5)
    np.testing.assert_allclose(viz.image_to_crop([(150, 25)], (200, 100), 48, 64), [[40, 8]])
    # the top-left cell of a map over the whole crop
    assert viz.cell_to_image(0, 0, (3, 3), (64, 64), size=48, resize=64)[:2] == (16.0, 16.0)


def test_in_crop_by_hand():
    # image x 20 -> resized 6.4 -> crop -1.6 (outside); x 30 -> crop 1.6; y 99 -> resized 63.36 -> crop 55.36 (outside)
    xy = [(20, 50), (30, 50), (100, 99), (150, 25)]
    assert in_crop(xy, (200, 100), 48, 64).tolist() == [False, True, False, True]


def test_score_peaks_by_hand():
    peaks = [[(0, 2)], [(0, 2)], [(0, 2)]]
    parts = [np.array([[150.0, 25.0]]),   # at the cell centre: hit
             np.array([[90.0, 25.0]]),    # 1.2 cells to the left: miss
             np.array([[105.0, 35.0]])]   # (-0.9, 0.4) cells: 0.98 cells away: hit
    hits = viz.score_peaks(peaks, (3, 3), np.array([[200, 100]] * 3), parts, size=48, resize=64, radius=1.0)
    assert hits[:, 0].tolist() == [True, False, True]
    hits = viz.score_peaks(peaks, (3, 3), np.array([[200, 100]] * 3), parts, size=48, resize=64, radius=0.5)
    assert hits[:, 0].tolist() == [True, False, False]


def test_chance_rate_by_hand():
    # cell centres at x = 50, 100, 150 and y = 25, 50, 75: a part at (150, 25) is within one cell of (0, 2) and of
    # (0, 1), (1, 2), exactly 1 cell away; (1, 1) is 1.41 cells away
    assert chance_rate((3, 3), (200, 100), [(150.0, 25.0)], 48, 64) == pytest.approx(3 / 9)
    assert chance_rate((3, 3), (200, 100), [(150.0, 25.0)], 48, 64, radius=1.5) == pytest.approx(4 / 9)
    assert chance_rate((3, 3), (200, 100), np.zeros((0, 2)), 48, 64) == 0.0
