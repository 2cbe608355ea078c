"""Tests for apikit/data/birds.py: confusable species in groups, and where a drawn bird's parts land."""
from dataclasses import asdict

import numpy as np

from apikit.data import birds

CUB_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
             "right eye", "right leg", "right wing", "tail", "throat"]


def test_group_sizes_are_three_or_four():
    assert birds.group_sizes(24) == [4, 4, 4, 4, 4, 4]
    assert birds.group_sizes(6) == [3, 3]
    assert birds.group_sizes(10) == [4, 3, 3]
    assert birds.group_sizes(4) == [4]


def test_species_vary_one_trait_from_their_base_form():
    specs = birds.species(6, seed=0)
    assert [s.name for s in specs] == ["001.Group_A_Tern_1", "002.Group_A_Tern_2", "003.Group_A_Tern_3",
                                       "004.Group_B_Sparrow_1", "005.Group_B_Sparrow_2", "006.Group_B_Sparrow_3"]
    assert [s.group for s in specs] == [0, 0, 0, 1, 1, 1]
    field = {"bill_length": "bill_length", "bill_curve": "bill_curve", "crown_patch": "crown_patch",
             "eye_ring": "eye_ring", "wing_bar": "wing_bar", "tail_shape": "tail_shape", "girth": "girth"}
    for base, variants in ((specs[0], specs[1:3]), (specs[3], specs[4:6])):
        assert base.trait is None
        assert len({v.trait for v in variants}) == 2
        for v in variants:
            differ = {k for k, a in asdict(base).items() if asdict(v)[k] != a}
            assert differ == {"name", "trait", field[v.trait]}


def test_visible_eye_lands_on_the_dark_eye():
    """Part coordinates follow flip, rotation, scale and shift: the eye's pixel is the black eye."""
    spec = birds.species(6, seed=0)[0]
    checked = 0
    for i in range(30):
        img, _, parts = birds.draw(spec, 256, np.random.default_rng([0, 0, i]))
        gray = np.asarray(img.convert("L"), float)
        for eye in (6, 10):
            x, y, v = parts[eye]
            if v:
                assert gray[int(y), int(x)] < 80, (i, x, y, gray[int(y), int(x)])
                checked += 1
    assert checked >= 20


def test_canonical_bird_faces_right():
    bird = birds.species(6, seed=0)[0]
    xy = dict(zip(CUB_PARTS, birds.part_points(bird)))
    assert xy["beak"][0] > xy["forehead"][0] > xy["nape"][0] > xy["tail"][0]
    assert xy["crown"][1] < xy["throat"][1] < xy["belly"][1] < xy["right leg"][1]  # y points down
