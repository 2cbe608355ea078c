"""Class-balanced batches for pair mining (Section 3 Pair Construction: N_cl classes x N_im images)."""
import warnings
from collections import Counter, defaultdict

from fastai.data.core import TfmdDL

from .paper import RECIPE

__all__ = ["ClassBalancedDL", "dataset_labels"]


def dataset_labels(dataset):
    """Integer labels of a fastai `Datasets` (from its target pipeline only, so no image is decoded)."""
    tls = getattr(dataset, "tls", None)
    if tls is not None:
        target = tls[getattr(dataset, "n_inp", 1)]
        return [int(target[i]) for i in range(len(target))]
    return [int(dataset[i][1]) for i in range(len(dataset))]


class ClassBalancedDL(TfmdDL):
    """A `TfmdDL` whose shuffled (training) batches hold `n_classes` distinct classes x `n_images` images each.

    Use it as `dl_type=ClassBalancedDL` with `n_classes=` and `n_images=`. When shuffling, `bs` is
    `n_classes * n_images`, the last incomplete batch is dropped, and an epoch has
    `len(ds) // bs` batches. Within a class, images are drawn without replacement from a reshuffled
    queue, so every image is seen about once per pass over its class; a class with fewer than
    `n_images` images gives all its images, then repeats drawn with replacement (a warning names such
    classes). Classes are drawn uniformly without replacement per batch. All draws use the DataLoader's own `rng`, so a seeded run
    (`set_seed`) gives the same batches.
    When not shuffling (validation, test, `get_preds`) it is a plain `TfmdDL`.

    `world_size` (1 unless set, e.g. by `apikit.distributed.BalancedDistributedDL`) groups the epoch's
    batches into steps of `world_size` consecutive batches, one per rank: the batch count is cut to a
    multiple of `world_size`, and no image is in two batches of the same step when its class has enough
    images (classes short of images are then left out of the step's later batches where possible).
    """

    def __init__(self, dataset=None, n_classes=RECIPE["n_classes"], n_images=RECIPE["n_images"], labels=None,
                 shuffle=False, bs=64, drop_last=False, world_size=1, **kwargs):
        self.n_classes, self.n_images, self._labels, self.world_size = n_classes, n_images, labels, world_size
        if shuffle:
            self._check(dataset)
            bs, drop_last = n_classes * n_images, True
        super().__init__(dataset, shuffle=shuffle, bs=bs, drop_last=drop_last, **kwargs)

    def _check(self, dataset):
        if not (isinstance(self.n_classes, int) and isinstance(self.n_images, int)):
            raise ValueError(f"n_classes and n_images must be integers, got {self.n_classes!r} and {self.n_images!r}.")
        if self.n_images < 2:
            raise ValueError(f"n_images={self.n_images}: each class needs at least 2 images per batch, "
                             "otherwise no image has an intra-class partner. Use n_images >= 2 (the paper uses 4).")
        if self.n_classes < 2:
            raise ValueError(f"n_classes={self.n_classes}: a batch needs at least 2 classes, otherwise no image "
                             "has an inter-class partner. Use n_classes >= 2 (the paper uses 30).")
        if dataset is None or len(dataset) == 0:  # fastai's `new_empty` (export) has no items to check
            return
        counts = Counter(self.labels_of(dataset))
        if self.n_classes > len(counts):
            fix = (f"use n_classes between 2 and {len(counts)}" if len(counts) >= 2 else "a batch needs at least 2 "
                   "classes (an inter-class partner for every image): use a data set with 2 classes or more")
            raise ValueError(f"n_classes={self.n_classes} is larger than the {len(counts)} class"
                             f"{'es' * (len(counts) != 1)} in the training set; {fix}.")
        small = sorted(c for c, n in counts.items() if n < self.n_images)
        if small:
            names = [f"{dataset.vocab[c] if hasattr(dataset, 'vocab') else c}: {counts[c]}" for c in small]
            warnings.warn(f"{len(small)} class(es) have fewer training images than n_images={self.n_images} "
                          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): their images repeat within "
                          "a batch, so some intra pairs compare an image with itself. Add training images to these "
                          "classes, lower n_images, or leave the classes out.", stacklevel=3)

    def labels_of(self, dataset):
        """The labels of `dataset`, computed once."""
        if self._labels is None:
            self._labels = dataset_labels(dataset)
        return self._labels

    def __len__(self):
        n = super().__len__()
        return n // self.world_size * self.world_size if self.shuffle else n

    def shuffle_fn(self, idxs):
        """One epoch of class-balanced batches, concatenated (in steps of `world_size` disjoint batches)."""
        rng, labels, world_size = self.rng, self.labels_of(self.dataset), self.world_size
        by_class = defaultdict(list)
        for i in idxs:
            by_class[labels[i]].append(i)
        classes, queues = sorted(by_class), {c: [] for c in by_class}
        out = []
        for b in range(len(idxs) // self.bs // world_size * world_size):
            if b % world_size == 0:
                taken = defaultdict(set)  # the images each class gave to this step's batches so far
            # A class that has given images at this step stays in only if it has n_images more (always at world_size=1).
            eligible = [c for c in classes if len(by_class[c]) - len(taken[c]) >= self.n_images or not taken[c]]
            for c in rng.sample(eligible if len(eligible) >= self.n_classes else classes, self.n_classes):
                pool, used = by_class[c], taken[c]
                if len(pool) < self.n_images:
                    # Every image of the class once, then repeats drawn with replacement to fill N_im.
                    picks = rng.sample(pool, len(pool)) + rng.choices(pool, k=self.n_images - len(pool))
                    out += picks
                    used.update(picks)
                    continue
                if len({i for i in queues[c] if i not in used}) < self.n_images:
                    # Start a new pass, deferring the leftovers' second copies so no batch holds an image twice.
                    rest, fresh = queues[c], rng.sample(pool, len(pool))
                    queues[c] = rest + [i for i in fresh if i not in rest] + [i for i in fresh if i in rest]
                if len(pool) - len(used) < self.n_images:
                    used = set()  # too few classes had images left for this step: it repeats some of c's
                # The first n_images distinct images not yet in this step (the queue's head at world_size=1).
                picks, skipped = [], []
                for i in queues[c]:
                    if len(picks) == self.n_images:
                        break
                    (skipped if i in used or i in picks else picks).append(i)
                out += picks
                taken[c].update(picks)
                queues[c] = skipped + queues[c][len(picks) + len(skipped):]
        return out

    def new(self, dataset=None, cls=None, **kwargs):
        """Keep the class-balance settings (and the cached labels, for the same data set) in copies."""
        same = dataset is None or dataset is self.dataset
        kwargs = {"n_classes": self.n_classes, "n_images": self.n_images, "world_size": self.world_size,
                  "labels": self._labels if same else None, **kwargs}
        return super().new(dataset, cls, **kwargs)
