"""Pair construction of `apikit/pairs.py` against a brute-force loop (Section 3, Table 4)."""
import itertools
import math

import pytest
import torch

from apikit.pairs import _partner, candidate_pairs, mine_pairs, random_pairs


def brute_force(feats, labels, intra, inter):
    f, y = feats.tolist(), labels.tolist()
    dist = lambda i, j: math.dist(f[i], f[j])
    out = []
    for how, same in ((intra, True), (inter, False)):
        if how is None:
            continue
        for i in range(len(y)):
            cands = [j for j in range(len(y)) if j != i and (y[j] == y[i]) == same]
            if cands:
                pick = min if how == "similar" else max
                out.append((i, pick(cands, key=lambda j: dist(i, j))))
    return out


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    # Label 4 is a singleton: it gets no intra pair.
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 4, 1, 0])
    return torch.randn(len(labels), 7, generator=g), labels


@pytest.mark.parametrize("intra,inter", [(a, b) for a, b in itertools.product(["similar", "dissimilar", None], repeat=2)
                                         if (a, b) != (None, None)])
def test_mining_matches_brute_force(batch, intra, inter):
    feats, labels = batch
    idx1, idx2 = mine_pairs(feats, labels, intra, inter)
    assert list(zip(idx1.tolist(), idx2.tolist())) == brute_force(feats, labels, intra, inter)


def test_order_and_singletons(batch):
    feats, labels = batch
    idx1, idx2 = mine_pairs(feats, labels)
    n = len(labels)
    # n - 1 intra pairs (the singleton at 9 has none), then n inter pairs, each block in anchor order.
    assert idx1.tolist() == [i for i in range(n) if i != 9] + list(range(n))
    intra, inter = slice(0, n - 1), slice(n - 1, None)
    assert (labels[idx1[intra]] == labels[idx2[intra]]).all() and (idx1[intra] != idx2[intra]).all()
    assert (labels[idx1[inter]] != labels[idx2[inter]]).all()
    assert idx1.dtype == torch.long and idx1.device == feats.device


def test_one_class_batch_has_no_inter_pairs():
    feats, labels = torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    idx1, idx2 = mine_pairs(feats, labels)
    assert idx1.tolist() == [0, 1, 2, 3] and (labels[idx2] == 0).all()
    idx1, _ = mine_pairs(feats, labels, intra=None)
    assert idx1.numel() == 0


def test_duplicate_features_never_pair_an_image_with_itself():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    idx1, idx2 = mine_pairs(feats, labels)
    assert (idx1 != idx2).all()
    # Anchor 3 (label 1) has identical features to 0 and 1: its nearest inter partner is image 0.
    assert list(zip(idx1.tolist(), idx2.tolist()))[-1] == (3, 0)


def test_bad_options():
    feats, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="intra='near' is not valid: choose one of 'similar', 'dissimilar', None"):
        mine_pairs(feats, labels, intra="near")
    with pytest.raises(ValueError, match="both None"):
        mine_pairs(feats, labels, None, None)
    with pytest.raises(ValueError, match="intra='random' is not valid"):  # Random pairs are random_pairs' job
        mine_pairs(feats, labels, "random", "random")
    with pytest.raises(ValueError, match=r"expected feats \(B, D\) and labels \(B,\)"):
        mine_pairs(feats, labels[:3])


@pytest.mark.parametrize("intra, inter, message", [
    ("bogus", "similar", "intra='bogus' is not valid: choose one of 'similar', 'dissimilar', None."),
    ("similar", "far", "inter='far' is not valid: choose one of 'similar', 'dissimilar', None."),
    ("random", "random", "intra='random' is not valid: choose one of 'similar', 'dissimilar', None."),
    ("similar", "random", "inter='random' is not valid: choose one of 'similar', 'dissimilar', None."),
    (None, None, "intra=None, inter=None: with both None there is no pair; choose at least one."),
])
def test_candidate_pairs_refuse_what_they_cannot_mine(intra, inter, message):
    """The training step's own miner reads no unknown word as 'dissimilar' (it used to) and builds no Random pairs."""
    feats, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError) as e:
        candidate_pairs(feats, labels, intra, inter)
    assert str(e.value) == message


def test_a_partner_is_similar_or_dissimilar_and_nothing_else():
    dist, mask = torch.tensor([[0.0, 1.0, 3.0]] * 3), torch.ones(3, 3, dtype=torch.bool)
    assert _partner(dist, mask, "similar")[0].tolist() == [0, 0, 0]
    assert _partner(dist, mask, "dissimilar")[0].tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="no partner rule for 'bogus'"):
        _partner(dist, mask, "bogus")


def test_random_pairs():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    i, j = random_pairs(labels, 240, generator=torch.Generator().manual_seed(0))
    assert i.shape == j.shape == (240,)
    assert (i != j).all() and i.min() >= 0 and j.max() < 6
    # Every ordered pair is reachable: 6 * 5 = 30 of them show up in 240 draws.
    assert len(set(zip(i.tolist(), j.tolist()))) == 30
    i2, j2 = random_pairs(labels, 240, generator=torch.Generator().manual_seed(0))
    assert torch.equal(i, i2) and torch.equal(j, j2)
    with pytest.raises(ValueError, match="at least 2 images"):
        random_pairs(labels[:1], 4)


def test_candidate_pairs_are_fixed_size_and_filter_to_mine_pairs(batch):
    feats, labels = batch
    idx1, idx2, valid = candidate_pairs(feats, labels)
    n = len(labels)
    assert idx1.shape == idx2.shape == valid.shape == (2 * n,)
    assert valid.tolist() == [i != 9 for i in range(n)] + [True] * n  # the singleton has no intra partner
    m1, m2 = mine_pairs(feats, labels)
    assert torch.equal(idx1[valid], m1) and torch.equal(idx2[valid], m2)


def test_candidate_pairs_never_wait_for_the_device():
    """Under FakeTensorMode any data-dependent shape (nonzero, boolean masks, .item()) raises."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        feats, labels = torch.randn(120, 2048), torch.randint(30, (120,))
        idx1, idx2, valid = candidate_pairs(feats, labels)
        assert idx1.shape == (240,)
        with pytest.raises(Exception):  # the filtered form has a data-dependent size
            mine_pairs(feats, labels)
