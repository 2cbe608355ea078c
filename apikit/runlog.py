"""A run's log as it trains (fastai callbacks): the per-epoch history, one line per epoch, a checkpoint after every
epoch and resuming from one (`RunLog`), and a stop at the first non-finite loss (`NonFiniteLoss`)."""
import time
from pathlib import Path

import torch
from fastai.callback.core import Callback, CancelEpochException
from fastai.torch_core import rank_distrib
from fastcore.foundation import L

from .rng import rng_state, set_rng_state
from .runs import atomic_write
from .step import unwrap

__all__ = ["RunLog", "NonFiniteLoss", "epoch_line"]


class RunLog(Callback):
    """Per-epoch history, a checkpoint after every epoch, and resuming from one."""
    order = 55  # after FreezeBackbone (5) set the freeze state and Recorder (50) logged the epoch

    def __init__(self, run_dir, config, resume=None, log=print, on_epoch=None):
        self.run_dir, self.config, self.resume, self.log, self.on_epoch = Path(run_dir), config, resume, log, on_epoch
        self.history = list(resume["history"]) if resume else []
        self.diagnostics = list(resume.get("diagnostics", [])) if resume else []
        self.start = resume["epoch"] + 1 if resume else 0
        self.saved = self.start  # epochs in the last checkpoint written: where a re-run resumes

    def before_fit(self):
        """Restore the checkpoint's weights first: a checkpoint of the last epoch leaves no epoch to restore them in."""
        if self.resume is not None:
            unwrap(self.learn.model).load_state_dict(self.resume["model"])

    def before_epoch(self):
        """Skip finished epochs; at the first unfinished one, restore the optimiser and RNG states."""
        if self.epoch < self.start:
            raise CancelEpochException()
        if self.resume is not None:
            self.learn.opt.load_state_dict({"state": self.resume["opt"]["state"], "hypers": L(self.resume["opt"]["hypers"])})
            set_rng_state(self.resume["rng"], self.learn.dls.train.rng)
            self.resume = None
        self.t0, self.loss_sum, self.n_batches = time.time(), 0.0, 0

    def after_batch(self):
        """Sum the unsmoothed training loss on the device (no host sync per batch)."""
        if self.training:
            self.loss_sum, self.n_batches = self.loss_sum + self.learn.loss.detach().float(), self.n_batches + 1

    def after_epoch(self):
        """Record the epoch, print one line for it, and checkpoint it atomically."""
        if self.epoch < self.start:
            return
        rec = self.learn.recorder
        names = [n for n in rec.metric_names[1:] if n != "time"]
        # An epoch whose evaluation was skipped (test_every) records None for the test metrics.
        row = {n: None if v is None else float(v) for n, v in zip(names, rec.final_record)}
        # The epoch's mean training loss, not fastai's smoothed one, which carries over from earlier epochs.
        train_loss = float(self.loss_sum / self.n_batches) if self.n_batches else None
        # Epochs are counted from 1 in metrics.json, the log, the plots and the report, as in the paper's text.
        pct = lambda v: None if v is None else 100 * v
        entry = dict(epoch=self.epoch + 1, train_loss=train_loss, valid_loss=row.get("valid_loss"),
                     top1=pct(row.get("accuracy")), top5=pct(row.get("top5")),
                     lr=float(self.learn.opt.hypers[-1]["lr"]), time_s=time.time() - self.t0)
        self.history.append(entry)
        diag = getattr(getattr(self.learn, "pair_diagnostics", None), "epochs", None)  # PairDiagnostics, if added
        if diag and diag[-1]["epoch"] == self.epoch + 1:
            self.diagnostics.append(diag[-1])
        if rank_distrib():  # in multi-GPU training only rank 0 writes
            return
        if entry["top1"] is not None or self.epoch < self.n_epoch - 1:  # the last, unevaluated: see `final_line`
            self.log(epoch_line(entry, self.n_epoch))
        state = dict(config=self.config, epoch=self.epoch, history=self.history, diagnostics=self.diagnostics,
                     model=unwrap(self.learn.model).state_dict(), opt=_plain_opt_state(self.learn.opt),
                     rng=rng_state(self.learn.dls.train.rng))
        atomic_write(self.run_dir / "checkpoint.pth", lambda tmp: torch.save(state, tmp))
        self.saved = self.epoch + 1
        if self.on_epoch is not None:  # metrics.json says how far the run got, for a grid's status and a lost job
            self.on_epoch(self)

    def final_line(self, metrics, epochs):
        """The last epoch's line with the final evaluation's test figures (the same model on the same split), which
        also go into its history entry, when the fit left that epoch unevaluated (`test_last=False`); `after_epoch`
        held its line back, so the log never shows dashes beside figures the run has. A run resumed after its last
        checkpoint gets the line here too."""
        last = self.history[-1] if self.history else None
        if last is not None and last["epoch"] == epochs and last["top1"] is None:
            last.update(valid_loss=metrics["valid_loss"], top1=metrics["top1"], top5=metrics["top5"])
            self.log(epoch_line(last, epochs))


def _plain_opt_state(opt):
    """fastai's optimiser state as plain lists and dicts (no fastcore `L`), so it loads with weights_only=True."""
    sd = opt.state_dict()
    return dict(state=[dict(s) for s in sd["state"]], hypers=[dict(h) for h in sd["hypers"]])


def epoch_line(h, n_epochs):
    """One line per epoch, with names and units (the same in Jupyter, papermill and a terminal)."""
    fmt = lambda v, spec, unit="": "—" if v is None else format(v, spec) + unit
    return (f"epoch {h['epoch']}/{n_epochs}  train loss {fmt(h['train_loss'], '.4f')}  test loss "
            f"{fmt(h['valid_loss'], '.4f')}  top-1 {fmt(h['top1'], '.2f', '%')}  top-5 {fmt(h['top5'], '.2f', '%')}  "
            f"lr {h['lr']:.2e}  {h['time_s']:.0f} s")


class NonFiniteLoss(Callback):
    """Stop at the first non-finite training loss, naming the epoch and batch (the last checkpoint stays)."""
    order = 90

    def after_loss(self):
        if self.training and not torch.isfinite(self.learn.loss_grad).all():
            raise FloatingPointError(
                f"the training loss became {float(self.learn.loss_grad.detach())} at epoch {self.epoch}, batch {self.iter}. "
                "Lower lr (e.g. by 10x), use precision='fp32', or check the data; the checkpoint of the last "
                "finished epoch is kept in run_dir and a re-run resumes from it.")
