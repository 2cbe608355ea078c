"""`apikit/step.py`: the pair step equals Eq. 1-10 written out, with the padding rows masked and a miner hook."""
import torch

from apikit.api import APIModule
from apikit.loss import api_loss
from apikit.model import FineGrainedNet
from apikit.pairs import mine_pairs
from apikit.step import choose_pairs, pair_step


def net(d=6, c=3):
    torch.manual_seed(0)
    model = FineGrainedNet(torch.nn.Identity(), d, c, dropout=0.0)
    model.api = APIModule(d, hidden=4, dropout=0.0)
    return model


def test_pair_step_is_eq_8_over_the_mined_pairs():
    model, g = net(), torch.Generator().manual_seed(1)
    feats, labels = torch.randn(6, 6, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    loss, batch = pair_step(model, feats, labels, rank_weight=0.5, margin=0.1)
    i, j = mine_pairs(feats, labels)
    x1s, x1o, x2s, x2o = model.api(feats[i], feats[j])
    want = api_loss(model.fc(torch.cat([x1s, x2s])), model.fc(torch.cat([x1o, x2o])),
                    torch.cat([labels[i], labels[j]]), 0.5, 0.1)
    torch.testing.assert_close(loss, want)
    assert torch.equal(batch["idx1"], i) and torch.equal(batch["idx2"], j) and batch["valid"].all()


def test_anchors_without_a_partner_are_masked():
    model = net()
    feats, labels = torch.randn(5, 6), torch.tensor([0, 0, 1, 1, 2])  # image 4 has no intra partner
    loss, batch = pair_step(model, feats, labels)
    assert batch["valid"].tolist() == [True] * 4 + [False] + [True] * 5
    i, j = mine_pairs(feats, labels)
    x1s, x1o, x2s, x2o = model.api(feats[i], feats[j])
    want = api_loss(model.fc(torch.cat([x1s, x2s])), model.fc(torch.cat([x1o, x2o])), torch.cat([labels[i], labels[j]]))
    torch.testing.assert_close(loss, want)


def test_random_pairs_and_a_miner_hook():
    labels = torch.tensor([0, 0, 1, 1])
    i, j, valid = choose_pairs(torch.randn(4, 6), labels, "random", "random")
    assert len(i) == 8 and valid.all() and (i != j).all()
    seen = []

    def miner(feats, labels, intra, inter):
        seen.append((intra, inter))
        return feats, labels, torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([True, True])
    _, batch = pair_step(net(), torch.randn(4, 6), labels, "similar", "dissimilar", miner=miner)
    assert seen == [("similar", "dissimilar")] and batch["targets"].tolist() == [0, 1, 0, 1]
