"""`apikit/jupyter.py`: kernels on IPC sockets at an absolute address, and the kernelspec that names them."""
import json
import os

from apikit.jupyter import PROVISIONER, IPCKernelManager, install_kernelspec, ipc_address, main


def test_ipc_sockets_have_an_absolute_address_whatever_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jupyter_client's own default, "kernel-ipc", would land here
    km = IPCKernelManager()
    assert km.transport == "ipc" and os.path.isabs(km.ip) and not str(km.ip).startswith(str(tmp_path))
    assert ipc_address(str(tmp_path / "kernel-1.json")) == str(tmp_path / "kernel-1-ipc")
    assert len(ipc_address("/" + "x" * 200 + "/kernel.json")) < 100  # too long for a socket: a short one


def test_the_kernelspec_names_the_ipc_provisioner(tmp_path):
    path = install_kernelspec(tmp_path)
    spec = json.loads(path.read_text())
    assert path == tmp_path / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    assert spec["metadata"]["kernel_provisioner"] == {"provisioner_name": PROVISIONER, "config": {}}
    assert "ipykernel_launcher" in spec["argv"] and spec["display_name"] == "Python 3 (ipykernel)"
    from importlib.metadata import entry_points
    (ep,) = [e for e in entry_points(group="jupyter_client.kernel_provisioners") if e.name == PROVISIONER]
    assert ep.value == "apikit.jupyter:IPCProvisioner"


def test_help_prints_the_options_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`python -m apikit.jupyter --help` is help, not an install prefix named "--help"; --prefix is the prefix."""
    import pytest
    import apikit.jupyter
    written = []
    monkeypatch.setattr(apikit.jupyter, "install_kernelspec", lambda prefix: written.append(prefix) or tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "--prefix" in capsys.readouterr().out
    assert written == [] and list(tmp_path.iterdir()) == []
    main(["--prefix", str(tmp_path / "env")])
    assert written == [str(tmp_path / "env")]


def test_papermill_from_the_shell_runs_the_report_on_ipc_without_the_tcp_warning(tmp_path):
    """The README's `papermill --log-output notebooks/report.ipynb ...`, with the kernelspec `make install` writes:
    no "Kernel is running over TCP without encryption", and the report's lines as it goes."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spec = install_kernelspec(tmp_path / "env")
    (tmp_path / "runs").mkdir()
    papermill = Path(sys.executable).parent / "papermill"
    proc = subprocess.run([str(papermill), "--log-output", "--no-progress-bar", str(root / "notebooks" / "report.ipynb"),
                           str(tmp_path / "report.ipynb"), "-p", "runs_root", str(tmp_path / "runs"), "-p", "out_dir",
                           str(tmp_path / "out"), "-p", "title", "From the shell"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "JUPYTER_PATH": str(spec.parents[2])})
    shown = proc.stdout + proc.stderr
    assert proc.returncode == 0, shown[-3000:]
    assert "without encryption" not in shown and "TCP" not in shown
    # The report's own lines as the kernel prints them: its markdown, not "<IPython.core.display.Markdown object>".
    assert "# From the shell" in shown and "make tables PRECISION=fp32" in shown
    assert "display.Markdown object" not in shown
    assert (tmp_path / "out" / "README.md").read_text().startswith("# From the shell\n")


def test_a_kernel_shutting_down_is_not_interrupted(monkeypatch):
    """jupyter_client interrupts a kernel before it shuts it down: a SIGINT nobody sent, which a kernel answering a
    message logs as "KeyboardInterrupt caught in kernel" in a grid's log. apikit's kernels are not sent it; an
    interrupt asked for while the kernel runs still goes through."""
    import asyncio
    from jupyter_client.manager import AsyncKernelManager
    asked = []

    async def interrupt(self):
        asked.append(self.shutting_down)
    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", interrupt)
    km = IPCKernelManager()
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())
    assert asked == []
    km.shutting_down = False
    asyncio.run(km._async_interrupt_kernel())
    assert asked == [False]
