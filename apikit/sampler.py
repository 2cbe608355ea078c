"""Class-balanced batches for pair mining (Section 3 Pair Construction: N_cl classes x N_im images)."""
import warnings
from collections import Counter, defaultdict

from fastai.data.core import TfmdDL

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
    `n_images` images is sampled with replacement. Classes are drawn uniformly without replacement per
    batch. All draws use the DataLoader's own `rng`, so a seeded run (`set_seed`) gives the same batches.
    When not shuffling (validation, test, `get_preds`) it is a plain `TfmdDL`.
    """

    def __init__(self, dataset=None, n_classes=30, n_images=4, labels=None, shuffle=False, bs=64, drop_last=False, **kwargs):
        self.n_classes, self.n_images, self._labels = n_classes, n_images, labels
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
            raise ValueError(f"n_classes={self.n_classes} is larger than the {len(counts)} classes in the training set; "
                             f"use n_classes <= {len(counts)}.")
        single = sorted(c for c, n in counts.items() if n == 1)
        if single:
            names = [str(dataset.vocab[c]) if hasattr(dataset, "vocab") else str(c) for c in single]
            warnings.warn(f"{len(single)} class(es) have a single training image ({', '.join(names[:5])}"
                          f"{', ...' if len(names) > 5 else ''}): it is drawn {self.n_images} times per batch, so "
                          "its intra pairs compare the image with itself. Add training images to these classes "
                          "or leave them out.", stacklevel=3)

    def labels_of(self, dataset):
        """The labels of `dataset`, computed once."""
        if self._labels is None:
            self._labels = dataset_labels(dataset)
        return self._labels

    def shuffle_fn(self, idxs):
        """One epoch of class-balanced batches, concatenated."""
        rng, labels = self.rng, self.labels_of(self.dataset)
        by_class = defaultdict(list)
        for i in idxs:
            by_class[labels[i]].append(i)
        classes, queues = sorted(by_class), {c: [] for c in by_class}
        out = []
        for _ in range(len(idxs) // self.bs):
            for c in rng.sample(classes, self.n_classes):
                pool = by_class[c]
                if len(pool) < self.n_images:
                    out += rng.choices(pool, k=self.n_images)
                    continue
                if len(queues[c]) < self.n_images:
                    # Start a new pass, deferring the leftovers' second copies so no batch holds an image twice.
                    rest, fresh = queues[c], rng.sample(pool, len(pool))
                    queues[c] = rest + [i for i in fresh if i not in rest] + [i for i in fresh if i in rest]
                out += queues[c][:self.n_images]
                queues[c] = queues[c][self.n_images:]
        return out

    def new(self, dataset=None, cls=None, **kwargs):
        """Keep the class-balance settings (and the cached labels, for the same data set) in copies."""
        same = dataset is None or dataset is self.dataset
        kwargs = {"n_classes": self.n_classes, "n_images": self.n_images,
                  "labels": self._labels if same else None, **kwargs}
        return super().new(dataset, cls, **kwargs)
