"""Notebooks executed with papermill (every apikit call goes through `run_notebook`), and their HTML copies.

The templates in notebooks/ are papermill's interface; an executed copy goes into a run folder, beside an HTML
page for reading without Jupyter. In notebooks/ itself, git keeps the templates without outputs (the nbstripout
filter named in .gitattributes), whatever a run left in the file.
"""
from pathlib import Path

from .runs import atomic_write, project_root, resolve

__all__ = ["TRAIN_NOTEBOOK", "run_notebook", "export_html"]

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
    body = body.replace(str(project_root()) + "/", "").replace(str(Path.home()) + "/", "~/")
    return atomic_write(notebook.with_suffix(".html"),
                        f"<!DOCTYPE html>\n<meta charset=\"utf-8\"><style>{CSS}</style>\n{body}")


def _ipc_kernel_manager():
    """Kernels on local IPC sockets, not TCP: nothing listens on the network, and ipykernel does not warn about it."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
    return IPCKernelManager


def run_notebook(src, dst, parameters, kernel_name="python3", html=True, log_output=False, stdout=None):
    """Execute notebook `src` (relative to the project root) into `dst` with papermill; every apikit call goes here.

    The kernel starts in the project root, so relative paths mean the same in Lab, papermill and the CLI.
    `stdout` (a file, e.g. sys.stdout) receives the notebook's printed output as it runs.
    """
    import papermill as pm
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(resolve(src)), str(dst), parameters=parameters, kernel_name=kernel_name,
                            progress_bar=False, log_output=log_output, cwd=str(project_root()),
                            kernel_manager_class=_ipc_kernel_manager(), stdout_file=stdout)
    finally:
        if html:
            export_html(dst)
    return dst
