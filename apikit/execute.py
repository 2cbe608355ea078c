"""Notebooks executed with papermill (every apikit call goes through `run_notebook`), and their HTML copies.

The templates in notebooks/ are papermill's interface; an executed copy goes into a run folder, beside an HTML
page for reading without Jupyter. In notebooks/ itself, git keeps the templates without outputs (the nbstripout
filter named in .gitattributes), whatever a run left in the file. Ctrl-C while a notebook runs interrupts its
kernel, as Jupyter's Kernel > Interrupt does, so the notebook says in one line where it stopped; from a command
line (`run_in_shell`) that line ends the process with exit status 130.
"""
import os
from pathlib import Path

from .notebook_errors import OneLineError
from .runs import atomic_write, project_root, resolve, shown_in

__all__ = ["TRAIN_NOTEBOOK", "run_notebook", "interrupt_kernels", "run_in_shell", "NotebookInterrupted", "export_html"]

TRAIN_NOTEBOOK = "notebooks/train.ipynb"


def export_html(notebook):
    """An HTML copy beside an executed notebook, for reading without Jupyter (small: the report's style sheet).

    Paths inside the project are shown relative to its root and the home folder as ~, so a committed report
    holds no local paths.
    """
    import logging
    from nbconvert import HTMLExporter
    from .report.document import CSS
    notebook = Path(notebook)
    if not notebook.exists():
        return None
    exporter = HTMLExporter(template_name="basic")
    exporter.log.setLevel(logging.ERROR)  # "Alternative text is missing": plots have no alt text to give
    body, _ = exporter.from_filename(str(notebook))
    body = shown_in(body)
    return atomic_write(notebook.with_suffix(".html"),
                        f"<!DOCTYPE html>\n<meta charset=\"utf-8\"><style>{CSS}</style>\n{body}")


class NotebookInterrupted(OneLineError, KeyboardInterrupt):
    """Ctrl-C or Kernel > Interrupt reached a notebook run by `run_notebook`: its kernel was interrupted (the
    notebook recorded how far it got) and the executed notebook written."""


# The kernels `run_notebook` has started in this process and not yet seen end: what an interrupt reaches.
_KERNELS = []


def interrupt_kernels():
    """Interrupt every notebook kernel `run_notebook` runs in this process, as Kernel > Interrupt does (a run stops at
    its last checkpoint and records it); returns how many were reached."""
    import signal
    reached = 0
    for k in list(_KERNELS):
        pid = getattr(k.provisioner, "pid", None) if k.provisioner else None
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGINT)
            reached += 1
        except OSError:
            pass  # the kernel has just ended: papermill is writing the notebook
    return reached


def _interrupt_forwarding(state, repeats):
    """A SIGINT/SIGTERM handler that interrupts the notebook's kernel, as Jupyter's Kernel > Interrupt does, instead
    of raising here: the notebook stops at its next statement and says where (a run records its last epoch), while
    papermill, killed mid-call, would leave a half-written notebook and a page of its own traceback. A signal before
    the kernel started raises KeyboardInterrupt here at once; so does a second one with `repeats="raise"` (a person
    pressing Ctrl-C twice), while `repeats="ignore"` (a launcher's job) waits for the kernel to record its stop."""

    def handler(signum, frame):
        if state["interrupted"]:
            if repeats == "raise":
                raise KeyboardInterrupt
            return
        if not any(k.provisioner for k in _KERNELS):
            raise KeyboardInterrupt
        state["interrupted"] = True
        interrupt_kernels()
    return handler


def run_notebook(src, dst, parameters, kernel_name="python3", html=True, log_output=False, stdout=None,
                 repeats="raise"):
    """Execute notebook `src` (relative to the project root) into `dst` with papermill; every apikit call goes here.

    The kernel starts in the project root, so relative paths mean the same in Lab, papermill and the CLI, and
    runs on IPC sockets (`apikit.jupyter`). `stdout` (a file, e.g. sys.stdout) receives the notebook's printed
    output as it runs. Ctrl-C (SIGINT) or SIGTERM while it runs interrupts the kernel, and `NotebookInterrupted`
    follows; `repeats` says what a second one does (`_interrupt_forwarding`).
    """
    import signal
    import threading
    import papermill as pm
    from .jupyter import IPCKernelManager
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    state, mine = {"interrupted": False}, []

    class Manager(IPCKernelManager):  # remembers the kernels it starts, for the interrupt
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            mine.append(self)
            _KERNELS.append(self)
    main = threading.current_thread() is threading.main_thread()  # only there can a signal handler be set
    handler = _interrupt_forwarding(state, repeats)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        pm.execute_notebook(str(resolve(src)), str(dst), parameters=parameters, kernel_name=kernel_name,
                            progress_bar=False, log_output=log_output, cwd=str(project_root()),
                            kernel_manager_class=Manager, stdout_file=stdout)
    except pm.PapermillExecutionError as e:
        if state["interrupted"] or _is_interrupt(e.ename):
            raise NotebookInterrupted(e.evalue or f"{dst.name} interrupted") from None
        raise
    finally:
        for k in mine:
            _KERNELS.remove(k)
        for s, h in previous.items():
            signal.signal(s, h)
        if html:
            export_html(dst)
    if state["interrupted"]:  # the notebook handled the interrupt itself (an ablation grid renders what finished)
        raise NotebookInterrupted(f"{dst.name}: interrupted; it stopped its work and ran its remaining cells")
    return dst


def _is_interrupt(ename):
    """Whether a notebook's exception (by class name) is an interrupt: KeyboardInterrupt or apikit's kinds of it."""
    return ename in ("KeyboardInterrupt", "RunInterrupted", "NotebookInterrupted")


def run_in_shell(src, dst, parameters):
    """`run_notebook` for a command line (`python -m apikit.experiment`, `python -m apikit.ablations`): the
    notebook's lines as they come; an error as the notebook showed it (one line for apikit's own, without
    papermill's frames) and exit status 1; Ctrl-C as the notebook's one line and exit status 130."""
    import sys
    import papermill as pm
    from papermill.exceptions import strip_color
    try:
        return run_notebook(src, dst, parameters, stdout=sys.stdout)  # papermill's log_output needs a logging set-up
    except KeyboardInterrupt as e:  # NotebookInterrupted; a second Ctrl-C stops papermill itself at once
        what = str(e) or "stopped at once (a second Ctrl-C); a re-run resumes from the last checkpoint"
        print(f"{what} (the executed notebook: {dst})", file=sys.stderr)
        raise SystemExit(130) from None
    except pm.PapermillExecutionError as e:
        print(f"{strip_color(chr(10).join(e.traceback))}\n(the executed notebook: {dst})", file=sys.stderr)
        raise SystemExit(1) from None
