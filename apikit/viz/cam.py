"""Grad-CAM at the backbone's last stage and ROAD, its faithfulness score (both from pytorch-grad-cam)."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..progress import progress
from .batches import as_batch, display_image, model_device, predict_probs, short_class_name

__all__ = ["ROAD_PERCENTILES", "gradcam", "road_scores", "compare_gradcam", "plot_gradcam"]

# ROADCombined's percentiles: removing 20/40/60/80 % of the pixels (most- and least-relevant first).
ROAD_PERCENTILES = (20, 40, 60, 80)


def _last_stage(model) -> torch.nn.Module:
    """`model.body[-1]` (a torchvision backbone's last stage, or DenseNet's final ReLU), whose output is the
    body's; a timm body is not a Sequential, so the body itself."""
    return model.body[-1] if isinstance(model.body, torch.nn.Sequential) else model.body


def gradcam(learn, x, targets=None) -> np.ndarray:
    """Grad-CAM (pytorch-grad-cam) at the backbone's last stage (`model.body[-1]`) for class `targets`
    (indices; default the predicted class). Returns (B, H, W) maps in [0, 1] at the input's size.

    The input is handed over as a plain tensor that requires grad, so the gradient reaches the last
    stage even when the backbone's parameters are frozen.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    model = learn.model.eval()
    x = as_batch(x).detach().to(model_device(learn)).clone().requires_grad_(True)
    tg = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with GradCAM(model=model, target_layers=[_last_stage(model)]) as cam:
        maps = cam(input_tensor=x, targets=tg)
    model.zero_grad(set_to_none=True)
    return np.clip(np.asarray(maps, dtype=np.float32), 0, 1)


def road_scores(learn, x, cams, targets, percentiles=ROAD_PERCENTILES, seed: int = 0) -> np.ndarray:
    """pytorch-grad-cam's `ROADCombined` per image: (LeRF - MoRF) / 2, averaged over `percentiles`.

    MoRF/LeRF: the change in the softmax probability of class `targets` after the most/least relevant
    pixels are replaced by ROAD's noisy linear imputation (so: probability units, comparable between
    models; higher = the map is more faithful to what the model uses). Grad-CAM's ReLU leaves many
    exactly tied pixels; ties are broken at random (1e-6 noise) so that each percentile removes that
    share of the pixels. The imputation noise and the tie-break use `seed`; the global RNG is untouched.
    Cost: one sparse solve per image and percentile, twice (about 3-7 s each at 448 px on a CPU).
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    model = learn.model.eval()
    x = as_batch(x).detach().to(model_device(learn))
    cams = np.asarray(cams, dtype=np.float32)
    cams = cams + 1e-6 * np.random.default_rng(seed).random(cams.shape, dtype=np.float32)
    metric = ROADCombined(percentiles=list(percentiles))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        scores = metric(x, cams, [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def compare_gradcam(api_learn, baseline_learn, x, targets, percentiles=ROAD_PERCENTILES, seed: int = 0) -> dict:
    """Grad-CAM of both models for the true classes `targets`, with predictions and ROAD scores.

    Returns {"api": {...}, "baseline": {...}}, each with "cams" (B, H, W), "preds" (B,), "probs"
    (B,) of the predicted class, "road" (B,) and "empty" (B,): the map is all zero (no positive evidence
    for the class at the last stage), so ROAD removes pixels at random and scores about 0.
    """
    out = {}
    models = (("api", api_learn), ("baseline", baseline_learn))
    for name, learn in progress(models, f"Grad-CAM and ROAD on {len(as_batch(x))} images", "models"):
        cams = gradcam(learn, x, targets)
        p = predict_probs(learn, x)
        out[name] = {"cams": cams, "preds": p.argmax(1).numpy(), "probs": p.max(1).values.numpy(),
                     "road": road_scores(learn, x, cams, targets, percentiles, seed),
                     "empty": cams.reshape(len(cams), -1).max(1) <= 1e-6}
    return out


def plot_gradcam(x, targets, result: dict, vocab, dls=None) -> Figure:
    """Rows = images; columns = image, Baseline Grad-CAM, API-Net Grad-CAM, titled with the
    prediction and the ROAD score, with a colour bar. `result` is `compare_gradcam`'s. Returns the Figure."""
    from pytorch_grad_cam.utils.image import show_cam_on_image
    x = as_batch(x)
    n = len(x)
    fig = Figure(figsize=(8.0, 2.7 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        img = display_image(x[i], dls)
        t = int(targets[i])
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"true: {short_class_name(vocab[t])}", fontsize=9)
        for j, (name, key) in enumerate((("Baseline", "baseline"), ("API-Net", "api")), start=1):
            r = result[key]
            pred = int(r["preds"][i])
            axes[i, j].imshow(show_cam_on_image(img.astype(np.float32), r["cams"][i], use_rgb=True))
            empty = " (empty map)" if "empty" in r and r["empty"][i] else ""
            axes[i, j].set_title(f"{name}: {short_class_name(vocab[pred])} {'✓' if pred == t else '✗'}\n"
                                 f"ROAD {float(r['road'][i]):+.3f}{empty}", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([]), ax.set_yticks([])
    # show_cam_on_image draws with OpenCV's JET colour map, as matplotlib's "jet"
    fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=list(axes[:, 1:].ravel()), shrink=0.8,
                 label="Grad-CAM")
    fig.suptitle("Grad-CAM (true class) at the last stage; ROAD = (LeRF - MoRF)/2, higher is more faithful",
                 fontsize=10)
    return fig
