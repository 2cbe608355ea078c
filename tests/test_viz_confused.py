"""`apikit/viz/confused.py`: the Baseline's most confused class pairs, as fastai counts them."""
import numpy as np
from fastai.interpret import ClassificationInterpretation

from apikit import viz


def test_most_confused_by_hand():
    cm = np.array([[5, 2, 0], [3, 4, 1], [0, 2, 6]])
    assert viz.most_confused(cm, ["a", "b", "c"]) == [("b", "a", 3), ("a", "b", 2), ("c", "b", 2), ("b", "c", 1)]
    assert viz.most_confused(cm, ["a", "b", "c"], min_val=3) == [("b", "a", 3)]
    assert cm[0, 0] == 5  # the caller's matrix is left as it was


def test_confused_pairs_follow_fastai_most_confused(runs):
    base, dls = runs["baseline"], runs["dls"]
    pairs = viz.confused_pairs(base, k=2, dl=dls.valid)
    interp = ClassificationInterpretation(base, dls.valid, losses=None)
    cm = interp.confusion_matrix()
    interp.confusion_matrix = lambda: cm.copy()  # one inference pass: most_confused reuses it
    vocab = [str(v) for v in dls.vocab]
    assert viz.most_confused(cm, vocab) == [(str(a), str(b), int(n)) for a, b, n in interp.most_confused()]
    assert len(pairs) == 2 and len({frozenset((p.class_a, p.class_b)) for p in pairs}) == 2
    top = interp.most_confused()
    if top:
        assert {pairs[0].class_a, pairs[0].class_b} == {str(top[0][0]), str(top[0][1])}
    preds = base.get_preds(dl=dls.test_dl([p.item_a for p in pairs] + [p.item_b for p in pairs]))[0].argmax(1)
    for i, p in enumerate(pairs):
        assert p.item_a.parent.name == p.class_a and p.item_b.parent.name == p.class_b
        assert p.n_confused == cm[p.label_a, p.label_b] + cm[p.label_b, p.label_a]
        if p.baseline_wrong_a:
            assert int(preds[i]) == p.label_b
        if p.baseline_wrong_b:
            assert int(preds[len(pairs) + i]) == p.label_a
    assert pairs[0].to_dict()["item_a"] == str(pairs[0].item_a)
