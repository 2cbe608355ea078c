"""One training run, as `notebooks/train.ipynb` runs it: check the parameters, train, evaluate, write `run_dir`.

A run_dir holds `metrics.json` (config, final metrics, per-epoch history, times, versions, git commit,
device, status), `model.pkl` (the exported Learner: the plain CNN of the test path), `curves.png`,
`confusion.png`, and while training `checkpoint.pth`, from which an interrupted run resumes.
Accuracies in metrics.json are percentages, as in the paper's tables.
"""
import json
import os
import platform
import random
import subprocess
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelEpochException
from fastai.interpret import ClassificationInterpretation
from fastai.metrics import accuracy, top_k_accuracy
from fastai.optimizer import Adam
from fastai.torch_core import set_seed

from fastai.torch_core import rank_distrib

from .callback import unwrap
from .diagnostics import PairDiagnostics

__all__ = ["DEFAULTS", "CHOICES", "check_params", "train", "read_metrics", "write_json", "RunFinished"]

# The parameters of train.ipynb with their defaults: the embedded demo (generated set, CPU minutes).
DEFAULTS = dict(
    dataset="synthetic", data_path=None, download=False, arch="resnet18", pretrained=False, size=64, resize=72,
    epochs=6, freeze_epochs=0, opt="sgd", lr=0.01, wd=5e-4, n_classes=8, n_images=4, api=True, mutual="mlp",
    gate="pair", rank_weight=1.0, margin=0.05, intra="similar", inter="similar", precision="fp32",
    channels_last=False, compile=False, chunk_size=None, mining="rank", cache=False, seed=0,
    run_dir="reports/runs/train",
)

DATASETS = ("cub", "aircraft", "cars", "dogs", "nabirds", "synthetic", "folder")
CHOICES = dict(
    dataset=DATASETS,
    mutual=("mlp", "sum", "product", "subtract_square", "weight_attention", "compact_bilinear", "individual"),
    gate=("pair", "single"),
    intra=("similar", "dissimilar", None, "random"),
    inter=("similar", "dissimilar", None, "random"),
    precision=("fp32", "bf16", "fp16"),
    mining=("rank", "global"),
    opt=("sgd", "adam"),
)
TYPES = dict(download=bool, pretrained=bool, api=bool, channels_last=bool, compile=bool, cache=bool, size=int, resize=int, epochs=int, freeze_epochs=int,
             n_classes=int, n_images=int, seed=int, lr=float, wd=float, rank_weight=float, margin=float,
             arch=str, run_dir=str)


class RunFinished(Exception):
    """The run_dir already holds a finished run (pass overwrite=True to train again)."""


def _fail(name, value, want):
    raise ValueError(f"parameter {name}={value!r} is not valid: {want}.")


def check_params(**params):
    """Validate train.ipynb's parameters before any work; one ValueError names the parameter and its valid values."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(sorted(unknown))}; valid ones: {', '.join(DEFAULTS)}.")
    p = {**DEFAULTS, **params}
    for name, choices in CHOICES.items():
        if p[name] not in choices:
            _fail(name, p[name], "choose one of " + ", ".join(map(repr, choices)))
    for name, typ in TYPES.items():
        v = p[name]
        ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            p[name], ok = float(v), True
        if not ok:
            _fail(name, v, f"expected {typ.__name__}")
    for name in ("size", "resize", "epochs", "n_classes"):
        if p[name] < 1:
            _fail(name, p[name], "must be >= 1")
    if p["n_images"] < 2:
        _fail("n_images", p["n_images"], "must be >= 2, so that every image has an intra-class partner")
    if p["n_classes"] < 2:
        _fail("n_classes", p["n_classes"], "must be >= 2, so that every image has an inter-class partner")
    if p["size"] > p["resize"]:
        _fail("size", p["size"], f"the crop must not exceed resize={p['resize']}")
    if not 0 <= p["freeze_epochs"] <= p["epochs"]:
        _fail("freeze_epochs", p["freeze_epochs"], f"must be in [0, epochs={p['epochs']}]")
    for name in ("lr", "wd", "rank_weight", "margin"):
        if not (np.isfinite(p[name]) and p[name] >= 0) or (name == "lr" and p[name] == 0):
            _fail(name, p[name], "must be a finite number" + (" > 0" if name == "lr" else " >= 0"))
    if (p["intra"] == "random") != (p["inter"] == "random"):
        _fail("intra", p["intra"], "Table 4's Random construction takes intra='random' and inter='random' together")
    if p["intra"] is None and p["inter"] is None:
        _fail("intra", None, "intra and inter cannot both be None")
    if p["chunk_size"] is not None and not (isinstance(p["chunk_size"], int) and p["chunk_size"] >= 1):
        _fail("chunk_size", p["chunk_size"], "expected None or an integer >= 1")
    if p["data_path"] is not None and not isinstance(p["data_path"], (str, os.PathLike)):
        _fail("data_path", p["data_path"], "expected a folder path or None")
    if p["dataset"] == "folder" and p["data_path"] is None:
        _fail("data_path", None, "dataset='folder' needs data_path, a folder with train/ and valid/ class folders")
    if p["precision"] == "fp16" and not torch.cuda.is_available():
        _fail("precision", "fp16", "fp16 needs a CUDA GPU; use 'bf16' or 'fp32' on a CPU")
    return p


def write_json(path, obj):
    """Write JSON atomically: a temporary file in the same folder, then rename, so no reader sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_metrics(run_dir):
    """The run_dir's metrics.json as a dict, or None if there is none."""
    f = Path(run_dir) / "metrics.json"
    return json.loads(f.read_text()) if f.exists() else None


def _prepare_run_dir(run_dir):
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"parameter run_dir={str(run_dir)!r} is not writable ({e.strerror}); "
                              "choose a folder you can write to, e.g. -p run_dir reports/runs/mine.") from None
    return run_dir


def _versions():
    import fastai, torchvision, timm, apikit
    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                fastai=fastai.__version__, timm=timm.__version__, apikit=apikit.__version__)


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device):
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def rng_state(learn):
    """Every random state a resumed run needs: Python, NumPy, torch, and the training DataLoader's own."""
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                train_dl=learn.dls.train.rng.getstate())


def set_rng_state(learn, s):
    """Restore what `rng_state` saved."""
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    learn.dls.train.rng.setstate(s["train_dl"])


class RunLog(Callback):
    """Per-epoch history, a checkpoint after every epoch, and resuming from one (Section: Resume, issue 6)."""
    order = 55  # after FreezeBackbone (5) set the freeze state and Recorder (50) logged the epoch

    def __init__(self, run_dir, config, resume=None):
        self.run_dir, self.config, self.resume = Path(run_dir), config, resume
        self.history = list(resume["history"]) if resume else []
        self.diagnostics = list(resume.get("diagnostics", [])) if resume else []
        self.start = resume["epoch"] + 1 if resume else 0

    def before_epoch(self):
        """Skip finished epochs; at the first unfinished one, load the checkpoint's weights, optimiser and RNG."""
        if self.epoch < self.start:
            raise CancelEpochException()
        if self.resume is not None:
            unwrap(self.learn.model).load_state_dict(self.resume["model"])
            self.learn.opt.load_state_dict(self.resume["opt"])
            set_rng_state(self.learn, self.resume["rng"])
            self.resume = None
        self.t0, self.loss_sum, self.n_batches = time.time(), 0.0, 0

    def after_batch(self):
        """Sum the unsmoothed training loss on the device (no host sync per batch)."""
        if self.training:
            self.loss_sum, self.n_batches = self.loss_sum + self.learn.loss.detach().float(), self.n_batches + 1

    def after_epoch(self):
        """Record the epoch and checkpoint it atomically."""
        if self.epoch < self.start:
            return
        rec = self.learn.recorder
        names = [n for n in rec.metric_names[1:] if n != "time"]
        row = dict(zip(names, map(float, rec.final_record)))
        # The epoch's mean training loss, not fastai's smoothed one, which carries over from earlier epochs.
        train_loss = float(self.loss_sum / self.n_batches) if self.n_batches else None
        entry = dict(epoch=self.epoch, train_loss=train_loss, valid_loss=row.get("valid_loss"),
                     top1=100 * row["accuracy"] if "accuracy" in row else None,
                     top5=100 * row["top_5_accuracy"] if "top_5_accuracy" in row else None,
                     lr=float(self.learn.opt.hypers[-1]["lr"]), time_s=time.time() - self.t0)
        self.history.append(entry)
        diag = getattr(self.learn, "pair_diagnostics", None)
        if diag and diag[-1]["epoch"] == self.epoch:
            self.diagnostics.append(diag[-1])
        if rank_distrib():  # in multi-GPU training only rank 0 writes
            return
        state = dict(config=self.config, epoch=self.epoch, history=self.history, diagnostics=self.diagnostics,
                     model=unwrap(self.learn.model).state_dict(),
                     opt=self.learn.opt.state_dict(), rng=rng_state(self.learn))
        tmp = self.run_dir / ".checkpoint.pth.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.run_dir / "checkpoint.pth")


class NonFiniteLoss(Callback):
    """Stop at the first non-finite training loss, naming the epoch and batch (the last checkpoint stays)."""
    order = 90

    def after_loss(self):
        if self.training and not torch.isfinite(self.learn.loss_grad).all():
            raise FloatingPointError(
                f"the training loss became {float(self.learn.loss_grad.detach())} at epoch {self.epoch}, batch {self.iter}. "
                "Lower lr (e.g. by 10x), use precision='fp32', or check the data; the checkpoint of the last "
                "finished epoch is kept in run_dir and a re-run resumes from it.")


def _evaluate(learn):
    """Top-1/top-5 (%) on the test split with the API module unloaded: the plain CNN (Section 3, Testing)."""
    preds, targs = learn.get_preds()
    top1 = accuracy(preds, targs).item() * 100
    top5 = top_k_accuracy(preds, targs, k=min(5, preds.shape[1])).item() * 100
    loss = torch.nn.functional.nll_loss(preds.clamp_min(1e-12).log(), targs).item()
    return dict(top1=top1, top5=top5, valid_loss=loss, n_test=len(targs))


def _plots(run_dir, history, learn):
    """curves.png (losses and top-1 per epoch) and confusion.png (the most confused classes)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import seaborn as sns
    matplotlib.use("Agg")
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.plot(ep, [h["train_loss"] for h in history], label="train (API loss)" if hasattr(learn, "api") else "train")
    a.plot(ep, [h["valid_loss"] for h in history], label="test (CE)")
    a.set(xlabel="epoch", ylabel="loss")
    a.legend()
    b.plot(ep, [h["top1"] for h in history], label="top-1")
    if any(h["top5"] is not None for h in history):
        b.plot(ep, [h["top5"] for h in history], label="top-5")
    b.set(xlabel="epoch", ylabel="test accuracy (%)")
    b.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "curves.png", dpi=90)
    plt.close(fig)

    interp = ClassificationInterpretation.from_learner(learn)
    cm, vocab = interp.confusion_matrix(), list(map(str, learn.dls.vocab))
    off = cm - np.diag(np.diag(cm))
    # The classes of the 10 largest off-diagonal cells, in vocab order.
    cells = np.dstack(np.unravel_index(np.argsort(-off, axis=None)[:10], off.shape))[0]
    keep = sorted({int(i) for c in cells for i in c if off[c[0], c[1]] > 0}) or list(range(min(10, len(vocab))))
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(keep), 0.8 + 0.4 * len(keep)))
    sns.heatmap(cm[np.ix_(keep, keep)], annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                xticklabels=[vocab[i] for i in keep], yticklabels=[vocab[i] for i in keep])
    ax.set(xlabel="predicted", ylabel="actual", title="most confused classes (test)")
    fig.tight_layout()
    fig.savefig(run_dir / "confusion.png", dpi=90)
    plt.close(fig)


def train(overwrite=False, cbs=None, **params):
    """Run train.ipynb's job: returns the metrics.json dict. Resumes from `run_dir/checkpoint.pth` if present."""
    from .data import get_dls
    from .distributed import distrib_ctx
    from .learner import api_learner

    p = check_params(**params)
    run_dir = _prepare_run_dir(p["run_dir"])
    old = read_metrics(run_dir)
    if old is not None and old.get("status") == "finished" and not overwrite:
        raise RunFinished(f"{run_dir} already holds a finished run (top-1 {old['metrics']['top1']:.1f}%); "
                          "pass overwrite=True (-p overwrite True in the notebook) to train it again, "
                          "or choose another run_dir.")
    ckpt_file = run_dir / "checkpoint.pth"
    resume = None
    if ckpt_file.exists() and not overwrite:
        resume = torch.load(ckpt_file, weights_only=False)
        if resume["config"] != p:
            changed = sorted(k for k in p if resume["config"].get(k) != p[k])
            raise ValueError(f"{ckpt_file} is the checkpoint of a run with other parameters ({', '.join(changed)}); "
                             "re-run with the same parameters to resume it, choose another run_dir, or pass "
                             "overwrite=True to start afresh.")
    record = dict(status="running", error=None, config=p, metrics=None, history=[], times={},
                  versions=_versions(), git_commit=_git_commit(), device=None)
    save = (lambda: write_json(run_dir / "metrics.json", record)) if not rank_distrib() else (lambda: None)
    save()
    t0 = time.time()
    try:
        set_seed(p["seed"], reproducible=True)
        dls = get_dls(p["dataset"], p["data_path"], size=p["size"], resize=p["resize"], n_classes=p["n_classes"],
                      n_images=p["n_images"], download=p["download"], cache=p["cache"])
        random_pairs = p["intra"] == "random"
        learn = api_learner(dls, arch=p["arch"], pretrained=p["pretrained"], api=p["api"], mutual=p["mutual"],
                            gate=p["gate"], rank_weight=p["rank_weight"], margin=p["margin"],
                            intra=None if random_pairs else p["intra"], inter=None if random_pairs else p["inter"],
                            strategy="random" if random_pairs else "class_image", precision=p["precision"],
                            channels_last=p["channels_last"], compile=p["compile"], chunk_size=p["chunk_size"],
                            mining=p["mining"], wd=p["wd"], path=run_dir,
                            **({"opt_func": Adam} if p["opt"] == "adam" else {}))
        record["device"] = _device_name(dls.device)
        log = RunLog(run_dir, p, resume)
        extra = [PairDiagnostics()] if p["api"] else []
        with learn.no_bar(), distrib_ctx(learn):  # distrib_ctx: one process per GPU, a no-op in one process
            learn.fit_paper(p["epochs"], p["lr"], p["freeze_epochs"], cbs=[log, NonFiniteLoss(), *extra, *(cbs or [])])
        if rank_distrib():  # rank 0 evaluates and writes the run_dir
            return None
        t_fit = time.time() - t0
        metrics = _evaluate(learn)
        record.update(status="finished", metrics=metrics, history=log.history, diagnostics=log.diagnostics,
                      times=dict(fit_s=t_fit, eval_s=time.time() - t0 - t_fit, total_s=time.time() - t0))
        learn.export("model.pkl")
        _plots(run_dir, log.history, learn)
        ckpt_file.unlink(missing_ok=True)
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                      times=dict(total_s=time.time() - t0))
        save()
        raise
    save()
    return record


def paper_params(dataset="cub", arch="resnet101", seed=0, precision="fp32"):
    """Section 4's configuration for `dataset` (Stanford Dogs: lr 0.001, 50 epochs, 12 frozen)."""
    dogs = dataset == "dogs"
    return check_params(dataset=dataset, arch=arch, pretrained=True, size=448, resize=512,
                        epochs=50 if dogs else 100, freeze_epochs=12 if dogs else 8, lr=0.001 if dogs else 0.01,
                        wd=5e-4, n_classes=30, n_images=4, precision=precision, seed=seed,
                        run_dir=f"reports/runs/paper/{dataset}-{arch}/seed-{seed}")


def main(argv=None):
    """`python -m apikit.experiment --dataset cub --arch resnet101`: train.ipynb at the paper's configuration."""
    import argparse
    import papermill as pm
    from fastai.torch_core import num_distrib
    from .ablations import export_html
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--dataset", default="cub", choices=DATASETS)
    ap.add_argument("--arch", default="resnet101")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="fp32", choices=CHOICES["precision"])
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--mining", default="rank", choices=CHOICES["mining"],
                    help="multi-GPU pair mining: in each GPU's batch, or across all GPUs' features")
    args = ap.parse_args(argv)
    p = paper_params(args.dataset, args.arch, args.seed, args.precision)
    p.update(data_path=args.data_path, download=args.download, mining=args.mining)
    if num_distrib() > 1:  # launched once per GPU (accelerate launch / torchrun): train directly, no notebook
        train(**p)
        return
    out = Path(p["run_dir"]) / "train.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook("notebooks/train.ipynb", str(out), parameters=p, kernel_name="python3", cwd=os.getcwd())
    export_html(out)


if __name__ == "__main__":
    main()
