"""`apikit/distributed.py`: two CPU processes (gloo, loopback) train one epoch through fastai + Accelerate.

The module fixture launches this file twice as a script (ranks 0 and 1); each rank writes what it saw
to files, and the tests compare them in the parent.
"""
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

N_CLASSES, N_IMAGES, WORLD = 2, 4, 2
BS = N_CLASSES * N_IMAGES


def _worker(rank, root, out):
    """One rank: rank-mining and global-mining fits, and the global pool on random features."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch.distributed as dist
    from conftest import tiny_dls  # also sets OMP_NUM_THREADS=1 and torch's thread count
    from fastai.callback.core import Callback
    import apikit.distributed as D
    from apikit.callback import APICallback
    from apikit.learner import FreezeBackbone, api_learner
    from apikit.sampler import dataset_labels

    out = Path(out)
    seen = []  # each epoch's index list this rank got
    get_idxs = D.BalancedDistributedDL.get_idxs

    def recording_get_idxs(self):
        idxs = get_idxs(self)
        if self._balanced():
            seen.append(idxs)
        return idxs
    D.BalancedDistributedDL.get_idxs = recording_get_idxs

    class RecordLabels(Callback):
        def before_fit(self): self.labels = []
        def after_batch(self):
            if self.training and self.epoch == 0:
                self.labels.append([int(v) for v in self.learn.yb[0]])

    result = {}
    for mining in ("rank", "global"):
        seen.clear()
        dls = tiny_dls(root, n_classes=N_CLASSES, n_images=N_IMAGES, size=16, seed=0)
        torch.manual_seed(0)  # identical initial weights; DDP also broadcasts rank 0's
        rec = RecordLabels()
        learn = api_learner(dls, arch="resnet18", pretrained=False, api=False, metrics=[],
                            cbs=[APICallback(miner=D.global_pairs if mining == "global" else None), rec])
        with learn.no_bar(), D.distrib_ctx(learn):
            if mining == "rank":  # a frozen epoch, then all: DDP is wrapped again for the backbone's gradients
                learn.fit(2, 1e-2, cbs=FreezeBackbone(1))
            else:
                learn.fit(1, 1e-2)
        result[mining] = dict(idxs=seen[0], batch_labels=rec.labels, dataset_labels=dataset_labels(dls.train.dataset),
                              n_batches=len(rec.labels), model_is_plain=not hasattr(learn.model, "module"))
        torch.save(D.unwrap(learn.model).state_dict(), out / f"{mining}-rank{rank}.pt")

    # The global pool on random features, and its gradient.
    torch.manual_seed(100 + rank)
    x, labels = torch.randn(6, 5), torch.randint(0, 3, (6,))
    w = torch.ones(5, requires_grad=True)
    feats, pool_labels, idx1, idx2, valid = D.global_pairs(x * w, labels)
    loss = ((feats[idx1] * feats[idx2]).sum(1) * valid).mean()
    loss.backward()
    grad = w.grad.clone()
    dist.all_reduce(grad)
    torch.save(dict(x=x, labels=labels, feats=feats.detach(), pool_labels=pool_labels, idx1=idx1, idx2=idx2,
                    valid=valid, grad=grad / WORLD), out / f"pool-rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from conftest import make_image_folders
    root = make_image_folders(tmp_path_factory.mktemp("dist-images"), n_classes=4, n_train=12, n_valid=4)
    out = tmp_path_factory.mktemp("dist-out")
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
               "LOCAL_WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(rank), str(root), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=150)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the ranks did not finish in 150 s:\n" + "\n".join(logs))
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return dict(out=out, json=[json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)],
                root=root)


def _batches(idxs):
    return [idxs[k:k + BS] for k in range(0, len(idxs), BS)]


@pytest.mark.parametrize("mining", ["rank", "global"])
def test_ranks_get_whole_disjoint_class_balanced_batches(ranks, mining):
    res = [ranks["json"][r][mining] for r in range(WORLD)]
    # 48 training images, bs 8: 6 batches, 3 steps of 2 disjoint batches; every rank trained on all its batches.
    per_rank = [_batches(r["idxs"]) for r in res]
    assert [len(b) for b in per_rank] == [3, 3] and all(r["n_batches"] == 3 for r in res)
    for step in zip(*per_rank):
        assert all(len(b) == BS for b in step)
        flat = [i for b in step for i in b]
        assert len(set(flat)) == len(flat), f"an image is in two ranks' batches at one step: {step}"
    for r in res:
        # The labels the Learner trained on are N_cl classes x N_im images, matching the recorded items.
        for batch, idxs in zip(r["batch_labels"], _batches(r["idxs"])):
            assert sorted(Counter(batch).values()) == [N_IMAGES] * N_CLASSES
            assert batch == [r["dataset_labels"][i] for i in idxs]
        assert r["model_is_plain"]  # DDP is unwrapped after the fit


@pytest.mark.parametrize("mining", ["rank", "global"])
def test_weights_stay_identical_across_ranks(ranks, mining):
    """After one epoch (rank mining: a frozen-backbone epoch and an unfrozen one), as DDP must keep them."""
    a, b = (torch.load(ranks["out"] / f"{mining}-rank{r}.pt") for r in range(WORLD))
    assert a.keys() == b.keys() and any(k.startswith("api.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_global_pool_pairs_match_one_process_on_the_concatenated_batch(ranks):
    from apikit.pairs import candidate_pairs
    pools = [torch.load(ranks["out"] / f"pool-rank{r}.pt") for r in range(WORLD)]
    feats, labels = torch.cat([p["x"] for p in pools]), torch.cat([p["labels"] for p in pools])
    n = len(pools[0]["labels"])
    idx1, idx2, valid = candidate_pairs(feats, labels)
    for r, p in enumerate(pools):
        assert torch.equal(p["feats"], feats) and torch.equal(p["pool_labels"], labels)  # rank order
        rows = torch.cat([torch.arange(r * n, (r + 1) * n), torch.arange(len(labels) + r * n, len(labels) + (r + 1) * n)])
        assert torch.equal(p["idx1"], idx1[rows]) and torch.equal(p["idx2"], idx2[rows])
        assert torch.equal(p["valid"], valid[rows])
        # By hand: this rank's anchors, nearest same-class (not itself) and nearest other-class in the pool.
        for k, a in enumerate(range(r * n, (r + 1) * n)):
            d = (feats - feats[a]).norm(dim=1)
            same = labels == labels[a]
            same[a] = False
            if same.any():
                assert int(p["idx2"][k]) == int(torch.where(same, d, torch.inf).argmin())
            assert int(p["idx2"][n + k]) == int(torch.where(~(labels == labels[a]), d, torch.inf).argmin())
    # DDP's mean gradient equals one process's gradient of the mean rank loss on the concatenated batch.
    w = torch.ones(5, requires_grad=True)
    f = feats * w
    loss = sum(((f[p["idx1"]] * f[p["idx2"]]).sum(1) * p["valid"]).mean() for p in pools) / WORLD
    loss.backward()
    for p in pools:
        torch.testing.assert_close(p["grad"], w.grad)


def test_single_process_is_unchanged(tmp_path):
    """Without a launcher, distrib_ctx is a no-op and global mining equals rank mining."""
    from apikit.distributed import distrib_ctx, global_pairs
    from apikit.pairs import candidate_pairs
    feats, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    f, y, *pairs = global_pairs(feats, labels)
    assert f is feats and all(torch.equal(a, b) for a, b in zip(pairs, candidate_pairs(feats, labels)))
    sentinel = object()
    with distrib_ctx(sentinel) as learn:
        assert learn is sentinel



@pytest.mark.parametrize("intra, inter, message", [
    ("random", "random", "mining='global' is not valid with intra='random', inter='random': global mining mines "
     "Class-Image pairs across all GPUs' features, and Table 4's Random pairs are drawn in each GPU's batch; use "
     "mining='rank' with them."),
    ("bogus", "similar", "intra='bogus' is not valid: choose one of 'similar', 'dissimilar', None."),
])
def test_global_mining_refuses_random_pairs_and_unknown_words(intra, inter, message):
    """Random pairs once mined silently as dissimilar/dissimilar here; check_params says the same up front."""
    from apikit.schema import check_params
    from apikit.distributed import global_pairs
    with pytest.raises(ValueError) as e:
        global_pairs(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), intra, inter)
    assert str(e.value) == message
    with pytest.raises(ValueError, match="is not valid") as e:
        check_params(mining="global", intra=intra, inter=inter)
    assert message.partition("choose")[0] in str(e.value)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
