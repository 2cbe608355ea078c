"""One training run, as `notebooks/train.ipynb` runs it: check the parameters, train, evaluate, write `run_dir`.

A run_dir holds `metrics.json` (config, final and best-epoch metrics, per-epoch history, times, versions,
git commit, device, the weights loaded, the input normalisation, status, and the fingerprints of `model.pkl`
and `model.pth`), `model.pkl` (the exported Learner: the plain CNN of the test path; a pickle, load it only
from runs you made), `model.pth` (the network's weights alone, `apikit.export`), `curves.png`,
`confusion.png`, and while training `checkpoint.pth`, from which a re-run resumes at any point. A run is
written only into a folder of its own (`apikit.runs.check_run_dir`), one run holds it at a time
(`apikit.locks.run_lock`), and any failure is recorded in metrics.json, a full disk as one. Accuracies are
percentages, as in the paper's tables.
"""
import inspect
import platform
import signal
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from fastai.metrics import accuracy
from fastai.torch_core import rank_distrib, set_seed

from .notebook_errors import OneLineError
from .schema import changed_params, check_params
from .diagnostics import PairDiagnostics
from .distributed import distrib_ctx
from .export import WEIGHTS, export_weights
from .jobs import job_from_env
from .learner import api_learner, top5 as top5_accuracy
from .model import input_stats
from .paper import BEST_EPOCH
from .run_plots import confusion_plot, run_curves_plot
from .progress import live_display
from .runlog import NonFiniteLoss, RunLog
from .record import load_checkpoint, model_fingerprint, read_metrics
from .runs import CorruptRunFile, DiskFull, atomic_write, check_run_dir, disk_full, run_lock, write_json

__all__ = ["train", "RunFinished", "RunInterrupted", "stops_as_interrupt"]


class RunFinished(OneLineError, Exception):
    """The run_dir already holds a finished run (pass overwrite=True to train again)."""


class RunInterrupted(OneLineError, KeyboardInterrupt):
    """Ctrl-C or Kernel > Interrupt stopped the run; its last checkpoint is kept and a re-run resumes from it."""


def _prepare_run_dir(run_dir):
    """The run folder, created if missing, after checking it is one (`runs.check_run_dir`); writability is
    checked by taking its lock, which creates `.lock` (no shared test file that two starting runs could race on)."""
    run_dir = check_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
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


def _evaluate(learn):
    """Top-1/top-5 (%) on the test split with the API module unloaded (Section 3, Testing), and the predictions."""
    preds, targs = learn.get_preds()
    top1 = accuracy(preds, targs).item() * 100
    top5 = top5_accuracy(preds, targs).item() * 100 if preds.shape[1] > 5 else None
    loss = torch.nn.functional.nll_loss(preds.clamp_min(1e-12).log(), targs).item()
    return dict(top1=top1, top5=top5, valid_loss=loss, n_test=len(targs)), preds, targs


def _best_epoch(history):
    """The best test top-1 over the evaluated epochs, and its epoch (BEST_EPOCH)."""
    scored = [h for h in history if h.get("top1") is not None]
    best = max(scored, key=lambda h: h["top1"]) if scored else None
    return dict(best_top1=best["top1"] if best else None, best_epoch=best["epoch"] if best else None)


def _cause(e, run_dir):
    """The error in words for metrics.json: a full disk is named as one, whatever exception the writer raised
    (torch: RuntimeError "unexpected pos", reworded by fastai), by what it says or by the free space left."""
    where = None if isinstance(e, KeyboardInterrupt) else disk_full(e, run_dir)
    if where is not None:
        said = e.__cause__ if isinstance(e, DiskFull) and e.__cause__ is not None else e  # what the writer raised
        return (f"the disk is full ({where}): free space and re-run to resume from the last checkpoint "
                f"({type(said).__name__}: {str(said).strip()})")
    return f"{type(e).__name__}: {e}"


def train(overwrite=False, cbs=None, log=print, **params):
    """Run train.ipynb's job: returns the metrics.json dict. Resumes from `run_dir/checkpoint.pth` if present.

    A relative `run_dir` is relative to the project root. A second run on a folder in use is refused; a
    finished run is kept unless `overwrite=True`, which also replaces an unreadable metrics.json or
    checkpoint. Interrupted (Ctrl-C) and failed runs record their status and cause in metrics.json.
    """
    p = check_params(**params)
    run_dir = _prepare_run_dir(p["run_dir"])
    log(f"run_dir: {run_dir}")
    # Multi-GPU training runs train() once per GPU: rank 0 holds the folder (and alone writes it), the others follow.
    with run_lock(run_dir) if not rank_distrib() else nullcontext(), stops_as_interrupt():
        return _train(run_dir, p, overwrite, cbs, log)


# SIGTERM: a `kill`, a container's stop, SLURM's time limit or preemption, a grid stopping its workers. SIGUSR2:
# SLURM's warning before the time limit (submitit asks for it), which reaches every process of the job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


@contextmanager
def stops_as_interrupt():
    """Ctrl-C, SIGTERM and SIGUSR2 stop a run alike, at its last checkpoint: the first raises KeyboardInterrupt, and
    any later one is ignored, so that the run records its stop instead of being cut short while it writes."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread can set handlers
        yield
        return
    stopping = []

    def handler(signum, frame):
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


_WAYS_OUT = ("choose another run_dir (-p run_dir reports/runs/mine), or pass overwrite=True (in the notebook's "
             "parameters cell; -p overwrite True with papermill, --overwrite with python -m apikit.experiment)")


def _finished_message(run_dir, old, p):
    """Why a finished run_dir of other parameters is kept: its result, the parameters that differ from this call's
    (old -> new), the two ways out."""
    top1 = (old.get("metrics") or {}).get("top1")
    result = f" (top-1 {top1:.1f}%)" if isinstance(top1, (int, float)) else ""
    changed = changed_params(old.get("config") or {}, p)
    return (f"{run_dir} already holds a finished run{result} with other parameters: {changed}. To train these, "
            f"{_WAYS_OUT} to replace it.")


def _interrupted_message(done, epochs):
    """'interrupted after epoch 2 of 6': how far a run got (its last checkpoint), for the one line of an interrupt."""
    return f"interrupted after epoch {done} of {epochs}" if done else f"interrupted in epoch 1 of {epochs}, before " \
        "its first checkpoint"


def _taken_by(fn, p):
    """The checked parameters that `fn` takes by name: the schema's names are the functions' own."""
    return {k: v for k, v in p.items() if k in inspect.signature(fn).parameters}


def _train(run_dir, p, overwrite, cbs, log):
    ckpt_file = run_dir / "checkpoint.pth"
    try:
        old = read_metrics(run_dir)
    except CorruptRunFile:
        if not overwrite:
            raise
        old = None
    if old is not None and old.get("status") == "finished" and not overwrite:
        ckpt_file.unlink(missing_ok=True)  # left by a run stopped after recording "finished", before removing it
        if changed_params(old.get("config") or {}, p):
            raise RunFinished(_finished_message(run_dir, old, p))
        top1 = (old.get("metrics") or {}).get("top1")
        log(f"{run_dir}: already finished: kept" + (f" (top-1 {top1:.1f}%)" if isinstance(top1, (int, float)) else ""))
        return old  # the same parameters: nothing to do, and nothing wrong
    if overwrite:
        ckpt_file.unlink(missing_ok=True)
    resume = load_checkpoint(ckpt_file) if ckpt_file.exists() else None
    if resume is not None:
        changed = changed_params(resume["config"], p)
        if changed:
            raise ValueError(f"{ckpt_file} is the checkpoint of a run with other parameters ({changed}); re-run "
                             f"with the same parameters to resume it, or {_WAYS_OUT} to start afresh.")
        log(f"resuming after epoch {resume['epoch'] + 1} of {p['epochs']} from {ckpt_file.name}")
    for stale in run_dir.glob(".*.tmp"):  # temporary files of a run killed mid-write
        stale.unlink(missing_ok=True)
    # The backbone's own input statistics (or the stated ones): the data pipeline and the figures use them.
    normalization = input_stats(p["arch"], p["pretrained"], p["weights"], p["normalize"])
    record = dict(status="running", error=None, config=p, metrics=None, history=[], times={},
                  versions=_versions(), git_commit=_git_commit(), device=None, weights_loaded=None,
                  normalization=normalization, epochs_done=resume["epoch"] + 1 if resume else 0, job=job_from_env())
    save = (lambda: write_json(run_dir / "metrics.json", record)) if not rank_distrib() else (lambda: None)
    t0, runlog = time.time(), None

    def progress(runlog):
        record.update(history=runlog.history, epochs_done=runlog.saved)
        save()
    try:
        save()  # inside: a full disk at the first write is recorded too, or said on the console
        from .data import get_dls
        set_seed(p["seed"], reproducible=True)
        dls = get_dls(p["dataset"], p["data_path"], **_taken_by(get_dls, p),
                      stats=(normalization["mean"], normalization["std"]))
        learn = api_learner(dls, **_taken_by(api_learner, p), wd=p["wd"], path=run_dir)  # wd: the Learner's
        record.update(device=_device_name(dls.device), weights_loaded=learn.weights_loaded)
        runlog = RunLog(run_dir, p, resume, log, on_epoch=progress)
        extra = [PairDiagnostics()] if p["api"] else []
        # fastai's bar over each epoch's batches where a notebook draws it live; in papermill and a terminal it would
        # be a line per redraw, and the epoch lines are the progress.
        with nullcontext() if live_display() else learn.no_bar(), learn.no_logging(), distrib_ctx(learn):
            # test_last=False: the final evaluation below scores the last epoch; evaluating it twice costs a pass.
            learn.fit_paper(**_taken_by(learn.fit_paper, p), test_last=False,
                            cbs=[runlog, NonFiniteLoss(), *extra, *(cbs or [])])
        if rank_distrib():  # rank 0 evaluates and writes the run_dir
            return None
        t_fit = time.time() - t0
        with learn.no_bar():  # evaluation's progress bars would interleave with the run's own lines
            metrics, preds, targs = _evaluate(learn)
            runlog.final_line(metrics, p["epochs"])
            metrics.update(_best_epoch(runlog.history))
            confusion_plot(preds.argmax(1), targs, learn.dls.vocab, run_dir / "confusion.png")
        run_curves_plot(runlog.history, run_dir / "curves.png", api=p["api"])
        atomic_write(run_dir / "model.pkl", lambda tmp: learn.export(tmp))  # with its progress bar, for users
        export_weights(learn, run_dir / WEIGHTS)  # the network alone: loaded with weights_only=True (visualize)
        record.update(status="finished", metrics=metrics, history=runlog.history, diagnostics=runlog.diagnostics,
                      model_sha256=model_fingerprint(run_dir / "model.pkl"),
                      weights_sha256=model_fingerprint(run_dir / WEIGHTS),
                      times=dict(fit_s=t_fit, eval_s=time.time() - t0 - t_fit, total_s=time.time() - t0))
        save()
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        done = runlog.saved if runlog is not None else (resume["epoch"] + 1 if resume else 0)
        record.update(status="interrupted" if interrupted else "failed", error=_cause(e, run_dir),
                      traceback=traceback.format_exc(), times=dict(total_s=time.time() - t0), epochs_done=done)
        try:
            save()  # atomic_write has closed and removed the failed write's temporary file: its space is free
        except OSError as e2:
            log(f"apikit: the run {record['status']} ({record['error']}) and this could not be written to "
                f"{run_dir / 'metrics.json'} either ({type(e2).__name__}: {e2}); it still says \"running\". Free "
                "space and re-run: the run resumes from its last checkpoint.")
        if interrupted:  # one line, not fastai's frames: what stopped, and that a re-run resumes
            raise RunInterrupted(f"{_interrupted_message(done, p['epochs'])}; re-run to resume ({run_dir})") from None
        raise
    # Only now that model.pkl and metrics.json are safely written does the checkpoint go.
    ckpt_file.unlink(missing_ok=True)
    log(f"top-1 {metrics['top1']:.1f}% (final epoch); {metrics['best_top1']:.1f}% at epoch "
        f"{metrics['best_epoch']} ({BEST_EPOCH}); wrote {run_dir}")
    return record


def main(argv=None):
    """`python -m apikit.experiment --paper --dataset cub --arch resnet101`: train.ipynb for one run."""
    import argparse
    from fastai.torch_core import num_distrib
    from .schema import add_arguments, paper_params
    from .execute import TRAIN_NOTEBOOK, run_in_shell
    ap = argparse.ArgumentParser(prog="python -m apikit.experiment", description=main.__doc__)
    ap.add_argument("--paper", action="store_true",
                    help="start from Section 4's configuration for --dataset (apikit.paper.recipe), not the demo's")
    ap.add_argument("--overwrite", action="store_true", help="train again even if run_dir holds a finished run")
    add_arguments(ap, suppress=True)
    args = vars(ap.parse_args(argv))
    paper, overwrite = args.pop("paper"), args.pop("overwrite")
    try:  # a parameter error is argparse's one line and exit status 2, as for an unknown option
        if paper:
            p = paper_params(**args)  # its defaults: the paper's data set and backbone
        else:
            p = check_params(**args)
        out = check_run_dir(p["run_dir"]) / "train.ipynb"  # before papermill writes the notebook there
    except ValueError as e:
        ap.error(str(e))
    if num_distrib() > 1:  # launched once per GPU (accelerate launch / torchrun): train directly, no notebook
        train(overwrite=overwrite, **p)
        return
    run_in_shell(TRAIN_NOTEBOOK, out, {**p, "overwrite": overwrite})


if __name__ == "__main__":
    main()
