"""`apikit/gradcache.py`: chunked backbone forward with exact full-batch gradients (on CPU)."""
import copy

import pytest
import torch
from torch import nn

from apikit.api import APIModule
from apikit.gradcache import GradCache, disable_gradient_cache, enable_gradient_cache, gradient_cache
from apikit.learner import api_learner
from apikit.model import FineGrainedNet, create_backbone
from apikit.step import pair_step

from conftest import tiny_dls

N_CLASSES, N_IMAGES, CHUNK = 4, 3, 5  # 12 images in chunks of 5, 5, 2


def batch(size=32, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_CLASSES * N_IMAGES, 3, size, size, generator=g, dtype=dtype)
    return x, torch.arange(N_CLASSES).repeat_interleave(N_IMAGES)


def bn_eval(model):
    """Train mode, but BatchNorm uses its running statistics: the setting where chunking is exact."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def api_net(body, dim, dropout=0.0, dtype=torch.float32):
    torch.manual_seed(0)
    model = FineGrainedNet(body, dim, N_CLASSES, dropout)
    model.api = APIModule(dim, dropout=dropout)
    return model.to(dtype)


def api_step(model, x, y):
    """What APICallback does in one training step: the pair step on the pooled features (Eq. 1-8), backward."""
    feats = model.pool(model.body(x))
    loss, _ = pair_step(model, feats, y)
    loss.backward()
    return loss.detach(), feats.detach()


def grads(model):
    return {n.replace("body.module.", "body."): p.grad for n, p in model.named_parameters()}


class Counter(nn.Module):
    """Identity that logs each forward (batch size, grad mode) and each backward through it."""

    def __init__(self):
        super().__init__()
        self.log = []
        self.register_full_backward_hook(lambda m, gi, go: self.log.append(("backward", len(go[0]))))

    def forward(self, x):
        self.log.append(("forward", len(x), torch.is_grad_enabled()))
        return x.clone()


def small_body(dropout=0.0):
    """Conv-BN-ReLU-dropout-conv: a fast stand-in for a backbone with every kind of state."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(dropout),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())


def test_chunked_gradients_equal_the_full_batch_ones_resnet18():
    body, dim, _ = create_backbone("resnet18", pretrained=False)
    full = bn_eval(api_net(body, dim, dtype=torch.float64))
    chunked = bn_eval(enable_gradient_cache(copy.deepcopy(full), CHUNK))
    x, y = batch(dtype=torch.float64)
    x_full, x_chunked = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_full, feats_full = api_step(full, x_full, y)
    loss_chunked, feats_chunked = api_step(chunked, x_chunked, y)
    torch.testing.assert_close(feats_chunked, feats_full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss_chunked, loss_full, rtol=1e-10, atol=1e-12)
    want, got = grads(full), grads(chunked)
    assert want.keys() == got.keys() and all(g is not None for g in got.values())
    assert any(k.startswith("body.") for k in got) and any(k.startswith("api.") for k in got) and "fc.weight" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-12, msg=name)
    torch.testing.assert_close(x_chunked.grad, x_full.grad, rtol=1e-9, atol=1e-12)


def test_batchnorm_running_stats_are_updated_once_per_chunk():
    model = api_net(small_body(), 16, dtype=torch.float64).train()
    reference = copy.deepcopy(model)
    x, y = batch(dtype=torch.float64)
    api_step(enable_gradient_cache(model, CHUNK), x, y)
    with torch.no_grad():
        for chunk in x.split(CHUNK):
            reference.body(chunk)  # each chunk through train-mode BatchNorm once
    for (name, got), want in zip(model.body.module.named_buffers(), reference.body.buffers()):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
    assert model.body.module[1].num_batches_tracked == 3


def test_features_equal_the_plain_forward():
    x, _ = batch()
    body = bn_eval(small_body())
    cache = bn_eval(GradCache(copy.deepcopy(body), CHUNK))
    torch.testing.assert_close(cache(x), body(x))
    # Train-mode BatchNorm normalises each chunk by its own statistics.
    body.train(), cache.train()
    ref = copy.deepcopy(body)
    torch.testing.assert_close(cache(x), torch.cat([ref(c) for c in x.split(CHUNK)]))
    # A batch that fits in one chunk is the plain forward.
    torch.testing.assert_close(cache(x[:CHUNK]), ref(x[:CHUNK]))
    # Eval is the plain forward on the whole batch.
    ref.eval(), cache.eval()
    torch.testing.assert_close(cache(x), ref(x))


def test_frozen_backbone_leaves_no_grads_and_is_not_recomputed():
    counter = Counter()
    model = api_net(nn.Sequential(counter, small_body()), 16).train()
    model.body.requires_grad_(False)
    x, y = batch()
    api_step(enable_gradient_cache(model, CHUNK), x, y)
    assert all(p.grad is None for p in model.body.parameters())
    assert model.fc.weight.grad is not None and model.api.mutual.fc1.weight.grad is not None
    assert counter.log == [("forward", 5, False), ("forward", 5, False), ("forward", 2, False)]


def test_backward_holds_one_chunk_graph_at_a_time():
    counter = Counter()
    model = bn_eval(api_net(nn.Sequential(counter, small_body()), 16))
    x, y = batch()
    x.requires_grad_()  # so the backward hook on the first layer fires
    api_step(enable_gradient_cache(model, CHUNK), x, y)
    # Step 1 without graphs; then each chunk's recompute is back-propagated before the next one runs.
    assert counter.log == [("forward", 5, False), ("forward", 5, False), ("forward", 2, False),
                           ("forward", 5, True), ("backward", 5), ("forward", 5, True), ("backward", 5),
                           ("forward", 2, True), ("backward", 2)]


def saved_bytes_peak(model, x, y):
    """Peak bytes held by autograd's saved tensors during one step: the activation memory, measured on CPU."""
    live, peak = [0], [0]
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    class Saved:
        def __init__(self, t):
            # Parameters saved for backward (conv weights) are not activation memory.
            self.t = t
            self.n = 0 if t.untyped_storage().data_ptr() in weights else t.numel() * t.element_size()
            live[0] += self.n
            peak[0] = max(peak[0], live[0])

        def __del__(self):
            live[0] -= self.n

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda s: s.t):
        api_step(model, x, y)
    return peak[0]


def test_activation_memory_is_that_of_one_chunk():
    body, dim, _ = create_backbone("resnet18", pretrained=False)
    full = bn_eval(api_net(body, dim))
    x, y = batch()
    peak_full = saved_bytes_peak(full, x, y)
    peak_chunked = saved_bytes_peak(enable_gradient_cache(copy.deepcopy(full), CHUNK), x, y)
    # One chunk of 5 of the 12 images (5/12 = 0.42), plus the small pair and classifier graph of the whole batch.
    assert peak_chunked < 0.45 * peak_full


def reference_chunks(body, x, seed):
    """A graph-keeping forward of the same chunks in the same order, from the same RNG state."""
    torch.manual_seed(seed)
    return torch.cat([body(c) for c in x.split(CHUNK)])


def test_dropout_masks_of_the_recompute_match_the_forward():
    model = api_net(small_body(dropout=0.5), 16).train()
    reference = copy.deepcopy(model)
    x, y = batch()
    enable_gradient_cache(model, CHUNK)
    torch.manual_seed(1)
    feats = model.pool(model.body(x))
    after_forward = torch.get_rng_state()
    feats.square().sum().backward()
    assert torch.equal(torch.get_rng_state(), after_forward)  # the recompute leaves the global RNG alone
    want = reference.pool(reference_chunks(reference.body, x, seed=1))
    torch.testing.assert_close(feats, want)
    want.square().sum().backward()
    for name, g in grads(reference).items():
        if name.startswith("body."):
            torch.testing.assert_close(grads(model)[name], g, msg=name)


class AutocastProbe(nn.Module):
    """Identity that logs the CPU autocast state of each forward."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, x):
        self.log.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return x


def test_recompute_runs_under_the_forward_autocast_state():
    probe = AutocastProbe()
    model = bn_eval(api_net(nn.Sequential(small_body(), probe), 16))
    reference = copy.deepcopy(model)
    x, _ = batch()
    enable_gradient_cache(model, CHUNK)
    with torch.autocast("cpu", dtype=torch.float16):
        out = model.body(x)
        want = reference_chunks(reference.body, x, seed=0)
    assert out.dtype == want.dtype == torch.float16
    out.float().square().sum().backward()  # the backward runs outside the autocast block
    want.float().square().sum().backward()
    assert probe.log == [(False, True, torch.float16)] * 3 + [(True, True, torch.float16)] * 3
    for name, g in grads(reference).items():
        if name.startswith("body."):  # fp16 gradients, summed per chunk in the reference, in fp32 here
            torch.testing.assert_close(grads(model)[name], g, rtol=2e-3, atol=1e-3, msg=name)


def test_wrapping_keeps_state_dict_keys_and_parameters():
    model = api_net(small_body(), 16)
    keys, params = list(model.state_dict()), list(model.parameters())
    enable_gradient_cache(model, CHUNK)
    assert isinstance(model.body, GradCache) and list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params))
    other = api_net(small_body(), 16)
    other.body[0].weight.data.fill_(1.0)
    model.load_state_dict(other.state_dict())  # an unwrapped checkpoint loads into the wrapped model
    assert torch.equal(model.body.module[0].weight, other.body[0].weight)
    enable_gradient_cache(model, 3)
    assert model.body.chunk_size == 3 and isinstance(model.body.module, nn.Sequential)
    with gradient_cache(disable_gradient_cache(model), 4):
        assert model.body.chunk_size == 4
    assert not isinstance(model.body, GradCache)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        GradCache(nn.Identity(), 0)


def test_fastai_fit_with_the_gradient_cache(image_root):
    dls = tiny_dls(image_root, n_classes=N_CLASSES, n_images=N_IMAGES, size=32)
    torch.manual_seed(0)
    learn = api_learner(dls, arch="resnet18", pretrained=False, dropout=0.0)
    # On one batch, the callback's loss and gradients with and without the cache (BatchNorm eval, dropout 0).
    x, y = dls.one_batch()
    cb, results = learn.api_callback, []
    for enable in (True, False):
        model = bn_eval(enable_gradient_cache(learn.model, CHUNK) if enable else disable_gradient_cache(learn.model))
        model.zero_grad()
        cb.before_train()
        loss = learn.loss_func(model(x), y)
        loss.backward()
        cb.after_train()
        results.append((loss.detach(), grads(model)))
    (loss_chunked, grads_chunked), (loss_full, grads_full) = results
    assert torch.isfinite(loss_chunked)
    torch.testing.assert_close(loss_chunked, loss_full)
    for name, g in grads_full.items():
        torch.testing.assert_close(grads_chunked[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # One epoch through fastai's own loop (train-mode BatchNorm, per chunk).
    learn.model.zero_grad()
    enable_gradient_cache(learn.model, CHUNK)
    learn.fit(1, 0.01)
    assert torch.isfinite(torch.tensor(learn.recorder.values[0][0]))
    assert isinstance(learn.model.body, GradCache) and learn.model.body.module[0].weight.grad is not None
