"""Class-balanced batches of `apikit/sampler.py`."""
import random
import warnings
from collections import Counter

import pytest
import torch
from fastai.data.core import Datasets
from fastai.data.transforms import Categorize
from fastai.torch_core import set_seed

from apikit.sampler import ClassBalancedDL

# Class sizes 2..7 images: class 0 (2 images) is smaller than n_images=3 and is sampled with replacement.
SIZES = [2, 3, 4, 5, 6, 7]
LABELS = [c for c, n in enumerate(SIZES) for _ in range(n)]


def label_of(i): return LABELS[i]
def as_tensor(i): return torch.tensor([float(i)])


def dataset():
    return Datasets(list(range(len(LABELS))), tfms=[[as_tensor], [label_of, Categorize()]])


def batches(dl):
    return [[int(v) for v in x[:, 0]] for x, _ in dl]


def test_every_batch_is_n_classes_by_n_images():
    random.seed(0)  # the loader's rng is drawn from the global one: the same batches in any test order
    with pytest.warns(UserWarning, match=r"fewer training images than n_images=3 \(0: 2\)"):
        dl = ClassBalancedDL(dataset(), n_classes=3, n_images=3, shuffle=True)
    assert dl.bs == 9 and len(dl) == len(LABELS) // 9
    seen = Counter()
    for _ in range(5):  # five epochs
        epoch = batches(dl)
        assert len(epoch) == len(LABELS) // 9
        for b in epoch:
            counts = Counter(LABELS[i] for i in b)
            assert len(counts) == 3 and set(counts.values()) == {3}
            for i in b:
                seen[i] += 1
    # Classes with >= n_images images draw each image without replacement inside a pass over the class.
    for b in (b for e in [batches(dl) for _ in range(3)] for b in e):
        for c in {LABELS[i] for i in b} - {0}:
            assert len([i for i in b if LABELS[i] == c]) == len({i for i in b if LABELS[i] == c})
    assert set(seen) == set(range(len(LABELS)))  # every image is used


def test_labels_follow_the_items():
    dl = ClassBalancedDL(dataset(), n_classes=2, n_images=2, shuffle=True)
    for x, y in dl:
        assert [LABELS[int(v)] for v in x[:, 0]] == [int(dl.dataset.vocab[int(t)]) for t in y]


def test_seeded_runs_give_the_same_batches():
    set_seed(7)
    a = batches(ClassBalancedDL(dataset(), n_classes=3, n_images=2, shuffle=True))
    set_seed(7)
    b = batches(ClassBalancedDL(dataset(), n_classes=3, n_images=2, shuffle=True))
    set_seed(8)
    c = batches(ClassBalancedDL(dataset(), n_classes=3, n_images=2, shuffle=True))
    assert a == b and a != c


def test_not_shuffling_is_a_plain_dataloader():
    dl = ClassBalancedDL(dataset(), n_classes=30, n_images=1, bs=5)
    assert sum(batches(dl), []) == list(range(len(LABELS)))
    assert [len(b) for b in batches(dl)] == [5, 5, 5, 5, 5, 2]
    # A copy for inference keeps the settings but stays sequential.
    new = ClassBalancedDL(dataset(), n_classes=2, n_images=2, shuffle=True).new(shuffle=False, drop_last=False, bs=4)
    assert isinstance(new, ClassBalancedDL) and sum(batches(new), []) == list(range(len(LABELS)))


def test_constructor_errors_say_why():
    with pytest.raises(ValueError, match=r"n_classes=7 is larger than the 6 classes in the training set; use "
                                         r"n_classes between 2 and 6\.$"):
        ClassBalancedDL(dataset(), n_classes=7, n_images=2, shuffle=True)
    one_class = Datasets([0, 1, 2, 3], tfms=[[as_tensor], [lambda i: 0, Categorize()]])  # "n_classes <= 1" is invalid
    with pytest.raises(ValueError, match=r"n_classes=2 is larger than the 1 class in the training set; a batch needs "
                                         r"at least 2 classes \(an inter-class partner for every image\): use a data "
                                         r"set with 2 classes or more\.$"):
        ClassBalancedDL(one_class, n_classes=2, n_images=2, shuffle=True)
    with pytest.raises(ValueError, match=r"n_images=1: each class needs at least 2 images per batch"):
        ClassBalancedDL(dataset(), n_classes=3, n_images=1, shuffle=True)
    with pytest.raises(ValueError, match=r"n_classes=1: a batch needs at least 2 classes"):
        ClassBalancedDL(dataset(), n_classes=1, n_images=2, shuffle=True)


def test_works_as_dl_type():
    dls = dataset().dataloaders(dl_type=ClassBalancedDL, n_classes=2, n_images=2, num_workers=0)
    assert isinstance(dls.train, ClassBalancedDL) and dls.train.bs == 4 and dls.train.shuffle
    assert not dls.valid.shuffle


def test_a_class_with_a_single_image_is_named_in_a_warning():
    labels = LABELS + [len(SIZES)]  # a new class with one image
    def label(i): return labels[i]
    ds = Datasets(list(range(len(labels))), tfms=[[as_tensor], [label, Categorize()]])
    with pytest.warns(UserWarning, match=r"1 class\(es\) have fewer training images than n_images=2 \(6: 1\)"):
        dl = ClassBalancedDL(ds, n_classes=3, n_images=2, shuffle=True)
    for _ in range(3):
        for x, _ in dl:
            singles = [int(v) for v in x[:, 0] if labels[int(v)] == 6]
            assert singles in ([], [len(labels) - 1] * 2)  # drawn with replacement: twice the same image


def test_classes_smaller_than_n_images_are_named_in_a_warning():
    """n_images above a class's size repeats that class's images inside a batch: said once, naming the classes."""
    with pytest.warns(UserWarning, match=r"2 class\(es\) have fewer training images than n_images=4 \(0: 2, 1: 3\)"
                      r".*repeat.*lower n_images") as w:
        dl = ClassBalancedDL(dataset(), n_classes=3, n_images=4, shuffle=True)
    assert len(w) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClassBalancedDL(dataset(), n_classes=3, n_images=2, shuffle=True)  # every class is large enough: silent
        dl.new(shuffle=False)  # validation copies do not warn again
