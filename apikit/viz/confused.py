"""Pairs to draw: the class pairs the Baseline confuses most on the test split (Section 4.3 picks two)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.torch_core import find_bs

from ..progress import progress_bar
from ..runs import shown
from .batches import class_names, item_paths, plain_tensor

__all__ = ["ConfusedPair", "PredictionBar", "most_confused", "confused_pairs", "pairs_from_probs"]


@dataclass
class ConfusedPair:
    """Two confusable classes and one test image of each (preferably one the Baseline gets wrong)."""
    class_a: str
    class_b: str
    n_confused: int        # test images of a predicted as b plus those of b predicted as a
    item_a: Path
    item_b: Path
    label_a: int
    label_b: int
    baseline_wrong_a: bool  # the Baseline predicts b for item_a
    baseline_wrong_b: bool  # the Baseline predicts a for item_b

    @property
    def items(self) -> tuple[Path, Path]:
        return self.item_a, self.item_b

    def to_dict(self) -> dict:
        """As viz.json records it: image paths as `apikit.runs.shown` prints them (relative to the project root or ~)."""
        return {k: (shown(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


class PredictionBar(Callback):
    """A bar over the images a Learner predicts: `get_preds(cbs=[PredictionBar(what)])`."""

    def __init__(self, what):
        self.what = what

    def before_validate(self):
        self.bar, self.done = progress_bar(self.dl, self.dl.n, self.what, "images"), 0
        self.bar.update(0)

    def after_batch(self):
        self.done = min(self.dl.n, self.done + find_bs(self.learn.xb))
        self.bar.update(self.done)


def most_confused(cm: np.ndarray, vocab, min_val: int = 1) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) off the diagonal of `cm`, largest first: fastai's
    `ClassificationInterpretation.most_confused`, from a confusion matrix already computed."""
    cm = np.array(cm)
    np.fill_diagonal(cm, 0)
    rows, cols = np.where(cm >= min_val)
    res = [(vocab[i], vocab[j], int(cm[i, j])) for i, j in zip(rows, cols)]
    return sorted(res, key=lambda r: r[2], reverse=True)


def confused_pairs(baseline_learn, k: int = 2, dl=None) -> list[ConfusedPair]:
    """The `k` class pairs the Baseline confuses most on the test split `dl` (default its validation loader).

    Pairs come in the order of fastai's `most_confused` (actual -> predicted counts, largest first),
    each unordered pair once; if fewer than `k` pairs are ever confused, the rest are the pairs with
    the most probability mass exchanged (mean p(b) over images of a plus mean p(a) over images of b).
    For each class the image is one the Baseline misclassifies as the other class (the most confident
    such error), else the image of that class with the highest probability of the other class.
    One inference pass; `most_confused` gives the same list as fastai's (tests/test_viz_confused.py checks this).
    """
    dl = baseline_learn.dls.valid if dl is None else dl
    if not len(dl.items):
        raise ValueError("the DataLoader is empty; an exported Learner has no data, pass dl=get_dls(...).valid")
    with baseline_learn.no_bar():
        probs, targs = baseline_learn.get_preds(dl=dl, cbs=[PredictionBar("the Baseline's confusions on the test split")])
    return pairs_from_probs(probs, targs, class_names(baseline_learn, dl), item_paths(dl), k)


def pairs_from_probs(probs, targs, vocab, paths, k: int = 2) -> list[ConfusedPair]:
    """`confused_pairs` from the Baseline's class probabilities `probs` (n, n_classes) of the test images `paths`,
    whose true classes are `targs`, e.g. when its predictions are already at hand."""
    probs, targs = plain_tensor(probs).float().cpu(), plain_tensor(targs).long().cpu()
    n = len(vocab)
    preds = probs.argmax(1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (targs.numpy(), preds.numpy()), 1)
    index = {v: i for i, v in enumerate(vocab)}

    order, seen = [], set()
    for a, b, _ in most_confused(cm, vocab):
        key = frozenset((index[a], index[b]))
        if key not in seen:
            seen.add(key)
            order.append((index[a], index[b]))
    if len(order) < k:
        # mean probability of class j over the test images of class i
        mass = torch.stack([probs[targs == i].mean(0) if (targs == i).any() else torch.zeros(n) for i in range(n)])
        soft = (mass + mass.T).numpy()
        np.fill_diagonal(soft, -np.inf)
        for flat in np.argsort(-soft, axis=None, kind="stable"):
            i, j = divmod(int(flat), n)
            if len(order) >= k or not np.isfinite(soft[i, j]):
                break
            if frozenset((i, j)) not in seen:
                seen.add(frozenset((i, j)))
                order.append((i, j))

    def pick(a, b):
        """(index, wrong) of the image of class a to show against class b."""
        idx = torch.where(targs == a)[0]
        if not len(idx):
            raise ValueError(f"class {vocab[a]!r} has no test image")
        wrong = idx[preds[idx] == b]
        pool = wrong if len(wrong) else idx
        return int(pool[probs[pool, b].argmax()]), bool(len(wrong))

    out = []
    for a, b in order[:k]:
        (ia, wa), (ib, wb) = pick(a, b), pick(b, a)
        out.append(ConfusedPair(vocab[a], vocab[b], int(cm[a, b] + cm[b, a]), paths[ia], paths[ib], a, b, wa, wb))
    return out
