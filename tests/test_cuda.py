"""The kit on a CUDA GPU, through the user's path: `api_learner(...)` and `learn.fit` / `learn.fit_paper`.

Marked `cuda` and skipped without a GPU, so CI (CPU only) is unaffected; `benchmarks/gpu_check.sh` runs
them on a lent GPU machine (`pytest -m cuda tests/test_cuda.py`). `APIKIT_CUDA_TESTS_ON_CPU=1` runs them
on the CPU instead (`gpu_check.sh --dry-run`), where the GPU-only parts (fp16 loss scaling, compile) skip.
"""
import os

import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.torch_core import set_seed

from apikit.learner import api_learner

from conftest import tiny_dls

if torch.cuda.is_available():
    DEVICE = "cuda"
elif os.environ.get("APIKIT_CUDA_TESTS_ON_CPU"):
    DEVICE = "cpu"
else:
    DEVICE = None

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE is None, reason="needs a CUDA GPU")]
needs_gpu = pytest.mark.skipif(DEVICE != "cuda", reason="only meaningful on a CUDA GPU")


@pytest.fixture(scope="module")
def dls(image_root):
    dls = tiny_dls(image_root, n_classes=4, n_images=4, size=32)
    dls.to(torch.device(DEVICE))
    return dls


def learner(dls, seed=0, **kwargs):
    set_seed(seed)
    return api_learner(dls, arch="resnet18", pretrained=False, **kwargs)


def epoch_losses(learn):
    return [v[0] for v in learn.recorder.values]


class Watch(Callback):
    """Records, during training, the input's dtype under autocast and the memory format of the first conv."""

    def after_pred(self):
        """Note what the forward ran in."""
        if self.training:
            conv = self.learn.model.body[0]
            self.channels_last = conv.weight.is_contiguous(memory_format=torch.channels_last)
            self.autocast = torch.is_autocast_enabled("cuda")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train(dls, precision):
    if precision == "fp16" and DEVICE != "cuda":
        pytest.skip("fp16 loss scaling runs on CUDA only")
    learn = learner(dls, precision=precision, channels_last=True)
    watch = Watch()
    learn.fit_paper(3, 0.01, freeze_epochs=0, cbs=[watch])
    losses = epoch_losses(learn)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    assert watch.channels_last
    if DEVICE == "cuda":
        assert watch.autocast
        assert learn.model.api.mutual.fc1.weight.dtype == torch.float32  # autocast keeps fp32 master weights


class FixedBatch(Callback):
    """Trains on the given batch at every step (the loader's order moves on from one fit to the next)."""

    def __init__(self, xb, yb, dtype=None):
        self.xb_, self.yb_, self.dtype = xb, yb, dtype

    def before_batch(self):
        """Swap in the fixed batch, in `dtype` if given."""
        self.learn.xb = (self.xb_ if self.dtype is None else self.xb_.to(self.dtype),)
        self.learn.yb = (self.yb_,)


def one_batch(dls):
    xb, yb = dls.one_batch()
    return xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)


def test_channels_last_matches_contiguous(dls):
    """channels_last changes the layout, not the result: the first step's loss is the same."""
    batch, got = one_batch(dls), []
    for cl in (False, True):
        learn = learner(dls, channels_last=cl, dropout=0.0)
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 0.01, cbs=FixedBatch(*batch))
        got.append(learn.recorder.losses[0])
    torch.testing.assert_close(got[0], got[1], rtol=1e-3, atol=1e-4)  # TF32 convolutions on CUDA


@needs_gpu
def test_compile_short_fit(dls):
    learn = learner(dls, compile=True, precision="bf16", channels_last=True)
    learn.fit(2, 0.01)
    losses = epoch_losses(learn)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert "body.0.weight" in learn.model.state_dict()  # compiled in place: names unchanged


class Grads(FixedBatch):
    """In float64 with eval-mode BatchNorm: keep one batch's gradients and stop before the optimiser step."""
    order = 100  # after the precision and channels_last callbacks

    def before_batch(self):
        """The fixed batch in float64, and BatchNorm in eval mode (per-chunk statistics would differ)."""
        super().before_batch()
        for m in self.learn.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()

    def after_backward(self):
        """Keep the loss and the gradients, then stop the fit: nothing is updated."""
        self.grads = {n.replace("body.module.", "body."): p.grad.clone()  # GradCache wraps the body as `.module`
                      for n, p in self.learn.model.named_parameters() if p.grad is not None}
        self.loss = self.learn.loss.detach().clone()
        raise CancelFitException()


def test_chunked_gradients_equal_the_full_batch(dls):
    """Gradient caching (chunk_size=5 of a 16-image batch) on the device: the full batch's gradients, in float64."""
    batch = one_batch(dls)
    full = learner(dls, dropout=0.0)
    chunked = learner(dls, dropout=0.0, chunk_size=5)
    chunked.model.load_state_dict(full.model.state_dict())
    got = {}
    for name, learn in (("full", full), ("chunked", chunked)):
        learn.model.double()
        got[name] = Grads(*batch, dtype=torch.float64)
        with learn.no_bar(), learn.no_logging():
            learn.fit(1, 0.01, cbs=got[name])
    assert got["full"].loss.dtype == torch.float64
    torch.testing.assert_close(got["chunked"].loss, got["full"].loss, rtol=1e-10, atol=1e-12)
    assert set(got["chunked"].grads) == set(got["full"].grads)
    assert any(n.startswith("body.") for n in got["full"].grads)
    for n, g in got["full"].grads.items():
        torch.testing.assert_close(got["chunked"].grads[n], g, rtol=1e-9, atol=1e-12, msg=n)


def test_seeded_runs_with_reproducible_true_give_equal_losses(image_root):
    """Two runs seeded with fastai's set_seed(0, reproducible=True), loaders included, give the same losses."""
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    runs = []
    try:
        for _ in range(2):
            set_seed(0, reproducible=True)
            dls = tiny_dls(image_root, n_classes=4, n_images=4, size=32)
            dls.to(torch.device(DEVICE))
            set_seed(0, reproducible=True)
            learn = api_learner(dls, arch="resnet18", pretrained=False,
                                precision="bf16" if DEVICE == "cuda" else "fp32")
            with learn.no_bar(), learn.no_logging():
                learn.fit(2, 0.01)
            runs.append(torch.tensor([float(v) for v in learn.recorder.losses]))
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    assert torch.equal(runs[0], runs[1]), f"max difference {(runs[0] - runs[1]).abs().max():.3g}"


def test_get_preds_equal_the_plain_forward_and_the_api_module_is_not_called_at_test(dls):
    learn = learner(dls)
    calls = []
    learn.model.api.register_forward_hook(lambda *a: calls.append(learn.training))
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 0.01)  # train and validate
    assert calls and all(calls)  # called in training steps only
    calls.clear()
    preds, _ = learn.get_preds(dl=dls.valid)
    assert calls == []
    model = learn.model.eval()
    with torch.no_grad():
        want = torch.cat([torch.softmax(model(xb.as_subclass(torch.Tensor)), 1) for xb, _ in dls.valid])
    assert calls == []
    torch.testing.assert_close(preds, want.cpu())
