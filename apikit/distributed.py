"""Multi-GPU API-Net through fastai's distributed support (HuggingFace Accelerate + DistributedDataParallel).

Each rank trains on its own N_cl x N_im class-balanced batch; DDP averages the gradients. Launch one
process per GPU (`accelerate launch` or `torchrun` set RANK, WORLD_SIZE, MASTER_ADDR...) and wrap the fit:

    with distrib_ctx(learn):
        learn.fit_paper(...)

In a single process `distrib_ctx` does nothing, so the same code trains on 1 or N GPUs.

Batches. `BalancedDistributedDL` replaces fastai's `DistributedDL` for a shuffling `ClassBalancedDL`:
rank 0's epoch order is broadcast (all ranks use it), the epoch is cut to a multiple of the world size
W, and the batches are dealt out whole and interleaved: at step k rank r gets batch k*W + r. The sampler
builds each step's W batches together so that no image is in two of them (when the classes have enough
images; see `ClassBalancedDL`). Validation and other loaders are split as fastai does.

Pair mining. `api_learner(mining="rank")` (the default) mines in each rank's batch; `mining="global"`
passes `global_pairs` to `APICallback` as its miner: each rank's anchors are mined in the pool of all
ranks' features, the paper's single batch.
"""
from contextlib import contextmanager

import torch
import torch.distributed as dist
from fastai.callback.progress import ProgressCallback
from fastai.distributed import DistributedDL, DistributedTrainer
from fastai.torch_core import num_distrib, rank_distrib

from .choices import check_mining
from .pairs import candidate_pairs
from .paper import METHOD
from .sampler import ClassBalancedDL
from .step import unwrap

__all__ = ["gather_pool", "global_pairs", "BalancedDistributedDL", "APIDistributedTrainer", "to_distributed",
           "distrib_ctx"]


def _world():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    """All ranks' tensors, concatenated in rank order; backward sums each row's gradient over the ranks."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = slice(dist.get_rank() * len(x), (dist.get_rank() + 1) * len(x))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad)  # every rank's loss gradient w.r.t. every row
        return grad[ctx.rows]


def gather_pool(feats, labels):
    """Every rank's (feats, labels) concatenated in rank order, and this rank's rows in them (a slice).

    The features keep their gradient: the gradient of a loss on another rank's rows flows back to that
    rank (`_AllGather`), so DDP's averaged gradient is that of the mean loss over the global batch.
    Every rank must call this with the same batch size. In one process it returns its inputs.
    """
    n = len(labels)
    if _world() == 1:
        return feats, labels, slice(0, n)
    pool_feats = _AllGather.apply(feats.contiguous())
    pool_labels = [torch.empty_like(labels) for _ in range(_world())]
    dist.all_gather(pool_labels, labels.contiguous())
    rank = dist.get_rank()
    return pool_feats, torch.cat(pool_labels), slice(rank * n, (rank + 1) * n)


def global_pairs(feats, labels, intra=METHOD["intra"], inter=METHOD["inter"]):
    """Class-Image pairs of this rank's anchors with partners from all ranks: (feats, labels, idx1, idx2, valid).

    `feats` and `labels` returned are the global pool (`gather_pool`), and the indices point into it.
    The pairs are exactly `candidate_pairs` on the concatenated global batch, restricted to the rows
    whose anchor is on this rank (intra pairs first, then inter pairs, each in anchor order). Table 4's
    Random pairs are drawn in each rank's batch, never here.
    """
    check_mining("global", intra, inter)
    feats, labels, local = gather_pool(feats, labels)
    idx1, idx2, valid = candidate_pairs(feats.detach(), labels, intra, inter)
    kinds = len(idx1) // len(labels)  # candidate_pairs lists every anchor once per kind (intra, inter)
    idx1, idx2, valid = (t.view(kinds, len(labels))[:, local].reshape(-1) for t in (idx1, idx2, valid))
    return feats, labels, idx1, idx2, valid


class BalancedDistributedDL(DistributedDL):
    """fastai's `DistributedDL`, dealing a shuffling `ClassBalancedDL`'s batches out whole, interleaved by rank.

    At step k rank r gets batch k*world_size + r of rank 0's epoch; the sampler builds each step's
    batches together (`ClassBalancedDL.world_size`) so they share no image. Any other loader is split
    as `DistributedDL` splits it. The broadcast runs on the process group's device (CPU for gloo).
    """

    def _balanced(self):
        return isinstance(self.dl, ClassBalancedDL) and self.dl.shuffle

    def _broadcast(self, t, rank):
        """Rank `rank`'s list `t` on every rank (on the GPU for NCCL, on the CPU otherwise)."""
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(t, dtype=torch.long, device=device)
        dist.broadcast(t, rank)
        return t.cpu().tolist()

    def __len__(self):
        return len(self.dl) // self.world_size if self._balanced() else super().__len__()

    def get_idxs(self):
        if not self._balanced():
            return super().get_idxs()
        dl, old = self.dl, self.dl.world_size
        dl.world_size = self.world_size  # a whole number of steps of world_size disjoint batches
        try:
            idxs = list(dl.get_idxs())
        finally:
            dl.world_size = old
        idxs = self._broadcast(idxs, 0)  # every rank draws, rank 0's epoch is used (the same on every rank)
        self.n = self.n_padded = len(idxs)
        bs, w = dl.bs, self.world_size
        return [i for k in range(self.rank, len(idxs) // bs, w) for i in idxs[k * bs:(k + 1) * bs]]


class APIDistributedTrainer(DistributedTrainer):
    """fastai's `DistributedTrainer` with `BalancedDistributedDL`, re-wrapping DDP when the trainable set changes.

    DDP only reduces the gradients of the parameters that required grad when it was built, so when
    `FreezeBackbone` (order 5) unfreezes the backbone, the model is wrapped again (this runs after it).
    """

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else BalancedDistributedDL(dl, device=self.learn.model.device)

    def _trainable(self):
        return tuple(p.requires_grad for p in unwrap(self.learn.model).parameters())

    def before_fit(self):
        """Wrap the model in DDP and the loaders in `BalancedDistributedDL`."""
        super().before_fit()
        self.trainable = self._trainable()

    def before_epoch(self):
        """Wrap the model again if freezing or unfreezing changed which parameters train."""
        if self._trainable() != self.trainable:
            self.learn.model = self.accelerator.prepare_model(unwrap(self.learn.model))
            self.trainable = self._trainable()


def to_distributed(learn, sync_bn=None, **kwargs):
    """Add `APIDistributedTrainer` (Accelerate's `Accelerator(**kwargs)`); `sync_bn` defaults to True on GPUs."""
    if sync_bn is None:
        sync_bn = torch.cuda.is_available()
    learn.add_cb(APIDistributedTrainer(sync_bn, **kwargs))
    if rank_distrib():
        learn.remove_cb(ProgressCallback)
    return learn


@contextmanager
def distrib_ctx(learn, sync_bn=None, **kwargs):
    """Train `learn` data-parallel inside the block when launched on several processes; a no-op in one."""
    if num_distrib() <= 1:
        yield learn
        return
    try:
        to_distributed(learn, sync_bn, **kwargs)
        yield learn
    finally:
        learn.remove_cb(APIDistributedTrainer)
        if rank_distrib() and not hasattr(learn, "progress"):
            learn.add_cb(ProgressCallback())
