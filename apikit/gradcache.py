"""Gradient caching: the paper's N_cl x N_im batch (30 x 4 at 448 px) trained with the memory of one chunk.

Pairs are mined within the batch (Section 3), so gradient accumulation over small batches would mine
different pairs. Instead `GradCache` wraps the backbone and, in training:

1. runs the backbone on the batch chunk by chunk without keeping the graph, and concatenates the
   feature maps (so the pooled (B, D) features and everything after them, pair mining, the API module,
   Eq. 8, see the whole batch);
2. in the backward pass, given d(loss)/d(feature maps), re-runs each chunk with autograd and
   back-propagates its slice, adding up the parameter gradients chunk by chunk.

Only one chunk's graph is alive at a time, so the backbone's activation memory is that of `chunk_size`
images, plus the whole batch's final feature maps and their gradient (ResNet-101, 120 images at 448 px:
120 x 2048 x 14 x 14 floats, 190 MB each in fp32). The price is a second forward pass of the backbone:
4/3 of its training compute.
Everything after the backbone (pooling, the fastai hook on `model.pool`, the API module, the loss and
the optimiser step) is unchanged and sees full-batch tensors with gradients.

What differs from the unchunked batch:

- BatchNorm layers in train mode normalise each chunk with that chunk's statistics, as each GPU does
  with its slice of the batch in a `nn.DataParallel` run (no SyncBatchNorm); their running statistics
  are updated once per chunk, in step 1. The recompute in step 2 would update them a second time, so
  every buffer of the backbone is snapshotted before the recompute and restored after it. With
  BatchNorm in eval mode the chunked gradients equal the unchunked ones (up to rounding).
- Stochastic layers (dropout, drop-path) draw per chunk, so their masks differ from an unchunked
  forward's. The RNG state (CPU, and the input's CUDA device) is saved before each chunk and restored
  for its recompute, as `torch.utils.checkpoint` does, so the recompute uses the same masks as step 1.
- Mixed precision: the recompute runs under the autocast state (CPU and the input's device) of step 1.

A frozen backbone (no parameter requires a gradient, and neither does the input) runs the chunks under
`torch.no_grad()` and is never recomputed. Outside training (`module.eval()`), or when the batch fits
in one chunk, `GradCache` is the plain forward. Double backward (`create_graph=True`) through the
backbone is not supported. Plain torch (>= 2.4, for per-device autocast queries): no fastai import.
"""
from contextlib import ExitStack

import torch
from torch import nn

__all__ = ["GradCache", "enable_gradient_cache", "disable_gradient_cache", "gradient_cache", "check_chunk_size"]

PREFIX = "module."


def _autocast_state(device_type):
    """What `torch.autocast` needs to reproduce the current autocast state for `device_type`."""
    return dict(device_type=device_type, enabled=torch.is_autocast_enabled(device_type),
                dtype=torch.get_autocast_dtype(device_type))


class _ChunkedForward(torch.autograd.Function):
    """Backbone forward chunk by chunk without a graph; backward recomputes one chunk at a time."""

    @staticmethod
    def forward(ctx, cache, x, *params):
        module, cuda = cache.module, x.device.type == "cuda"
        ctx.module, ctx.params, ctx.chunk_size, ctx.preserve = module, params, cache.chunk_size, cache.preserve_rng_state
        ctx.autocast = [_autocast_state("cpu")] + ([_autocast_state(x.device.type)] if x.device.type != "cpu" else [])
        ctx.rng, outs = [], []
        for chunk in x.split(ctx.chunk_size):
            if ctx.preserve:
                ctx.rng.append((torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if cuda else None))
            outs.append(module(chunk))  # Function.forward runs with grad disabled
        ctx.save_for_backward(x)
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad):
        (x,), module, want_x = ctx.saved_tensors, ctx.module, ctx.needs_input_grad[1]
        params = [p for p, need in zip(ctx.params, ctx.needs_input_grad[2:]) if need]
        sums, grad_x = [None] * len(params), []
        cuda = [x.device] if x.device.type == "cuda" else []
        buffers = list(module.buffers())
        saved = [b.clone() for b in buffers]  # BatchNorm running stats: step 1 already updated them
        try:
            for k, (chunk, g) in enumerate(zip(x.split(ctx.chunk_size), grad.split(ctx.chunk_size))):
                chunk = chunk.detach().requires_grad_(want_x)
                with torch.random.fork_rng(devices=cuda, enabled=ctx.preserve, device_type="cuda"):
                    if ctx.preserve:
                        cpu_state, cuda_state = ctx.rng[k]
                        torch.set_rng_state(cpu_state)
                        if cuda:
                            torch.cuda.set_rng_state(cuda_state, x.device)
                    with torch.enable_grad(), ExitStack() as autocast:
                        for state in ctx.autocast:
                            autocast.enter_context(torch.autocast(**state))
                        out = module(chunk)
                inputs = ([chunk] if want_x else []) + params
                grads = torch.autograd.grad(out, inputs, g, allow_unused=True)
                del out  # this chunk's graph is freed here, before the next chunk runs
                if want_x:
                    grad_x.append(grads[0])
                    grads = grads[1:]
                for i, gi in enumerate(grads):
                    if gi is not None:
                        sums[i] = gi if sums[i] is None else sums[i].add_(gi)
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
        it = iter(sums)
        param_grads = [next(it) if need else None for need in ctx.needs_input_grad[2:]]
        return (None, torch.cat(grad_x) if want_x else None, *param_grads)


def check_chunk_size(chunk_size):
    """Raise a ValueError unless `chunk_size` is a positive integer."""
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")


def _strip_prefix(module, state_dict, prefix, local_metadata):
    """state_dict hook: save `prefix.module.x` as `prefix.x`, so the keys are those of the unwrapped model."""
    for key in [k for k in state_dict if k.startswith(prefix + PREFIX)]:
        state_dict[prefix + key[len(prefix + PREFIX):]] = state_dict.pop(key)


def _add_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    """load_state_dict pre-hook: accept the unwrapped model's keys (`prefix.x` -> `prefix.module.x`)."""
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + PREFIX)]:
        state_dict[prefix + PREFIX + key[len(prefix):]] = state_dict.pop(key)


_strip_prefix._from_public_api = True  # in-place hook (see nn.Module.register_state_dict_post_hook)


class GradCache(nn.Module):
    """Run `module` (a backbone: images -> feature maps) chunk by chunk in training, with exact gradients.

    `chunk_size` images go through the backbone at a time; the output is the full batch's, so pair
    mining and the loss are unchanged. See the module docstring for what differs from one big forward.
    The wrapper's `state_dict` keys are those of `module` itself, so checkpoints load with or without it.
    """

    def __init__(self, module, chunk_size, preserve_rng_state=True):
        super().__init__()
        check_chunk_size(chunk_size)
        self.module, self.chunk_size, self.preserve_rng_state = module, chunk_size, preserve_rng_state
        self.register_state_dict_post_hook(_strip_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def forward(self, x):
        if not self.training or len(x) <= self.chunk_size:
            return self.module(x)
        # Plain tensors through the autograd.Function; fastai's typed subclass is put back on the output.
        cls, x = type(x), x.as_subclass(torch.Tensor)
        params = [p for p in self.module.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and (x.requires_grad or params):
            out = _ChunkedForward.apply(self, x, *params)
        else:  # frozen backbone: nothing to recompute
            with torch.no_grad():
                out = torch.cat([self.module(chunk) for chunk in x.split(self.chunk_size)])
        return out if cls is torch.Tensor else out.as_subclass(cls)

    def extra_repr(self):
        return f"chunk_size={self.chunk_size}"


def enable_gradient_cache(model, chunk_size, preserve_rng_state=True):
    """Wrap `model.body` (e.g. a `FineGrainedNet`'s backbone) in `GradCache`; returns the model.

    `model.pool(model.body(x))` then runs chunked in training and plain in eval. Calling it again
    changes the chunk size. The parameters are the same objects, so an existing optimiser keeps working.
    """
    if isinstance(model.body, GradCache):
        check_chunk_size(chunk_size)
        model.body.chunk_size = chunk_size
        model.body.preserve_rng_state = preserve_rng_state
    else:
        model.body = GradCache(model.body, chunk_size, preserve_rng_state)
    return model


def disable_gradient_cache(model):
    """Unwrap `model.body` if `enable_gradient_cache` wrapped it; returns the model."""
    if isinstance(model.body, GradCache):
        model.body = model.body.module
    return model


class gradient_cache:
    """Context manager: `with gradient_cache(model, 16): learn.fit(...)` enables the cache for the block."""

    def __init__(self, model, chunk_size, preserve_rng_state=True):
        self.model, self.chunk_size, self.preserve_rng_state = model, chunk_size, preserve_rng_state

    def __enter__(self):
        self.was = self.model.body.chunk_size if isinstance(self.model.body, GradCache) else None
        return enable_gradient_cache(self.model, self.chunk_size, self.preserve_rng_state)

    def __exit__(self, *exc):
        if self.was is None:
            disable_gradient_cache(self.model)
        else:
            self.model.body.chunk_size = self.was
