"""Kernels for apikit's notebooks on local IPC sockets, not TCP: nothing listens on the network, and ipykernel has
no reason to warn "Kernel is running over TCP without encryption".

apikit's own `run_notebook` starts its kernels with `IPCKernelManager`. A plain `papermill` or `jupyter lab` from
the venv uses the venv's `python3` kernelspec, which `make install` (`python -m apikit.jupyter`) makes name
`IPCProvisioner` (entry point `apikit-ipc` of `jupyter_client.kernel_provisioners`): Jupyter's local
provisioner, which switches the kernel's connection to IPC before the connection file is written. The sockets
live in Jupyter's runtime folder, never in the folder a kernel starts in.
"""
import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import CaselessStrEnum, default

__all__ = ["PROVISIONER", "ipc_address", "IPCKernelManager", "IPCProvisioner", "install_kernelspec", "main"]

PROVISIONER = "apikit-ipc"  # pyproject.toml's entry point, named by the kernelspec
_SOCKET_PATH_MAX = 100  # a Unix socket path holds at most 107 bytes; the address gets "-<port>" appended


def ipc_address(connection_file="", kernel_id=None):
    """An absolute, private prefix for a kernel's IPC sockets: beside its connection file, else in Jupyter's runtime
    folder (a temporary folder when that path is too long for a socket)."""
    if connection_file and os.path.isabs(connection_file):
        address = os.path.splitext(connection_file)[0] + "-ipc"
    else:
        from jupyter_core.paths import jupyter_runtime_dir
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        address = os.path.join(runtime, f"kernel-{kernel_id or uuid.uuid4().hex}-ipc")
    if len(address.encode()) > _SOCKET_PATH_MAX:
        address = os.path.join(tempfile.mkdtemp(prefix="apikit-"), "kernel-ipc")
    return address


class IPCKernelManager(AsyncKernelManager):
    """papermill's kernel manager on IPC sockets at an absolute address (jupyter_client's default, `kernel-ipc`,
    is relative: the kernel and papermill would disagree on it when they start in different folders)."""
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    @default("ip")
    def _ip_default(self):
        return ipc_address(self.connection_file, self.kernel_id) if self.transport == "ipc" else super()._ip_default()

    async def _async_interrupt_kernel(self):
        """No interrupt on the way out: jupyter_client interrupts a kernel before shutting it down, a SIGINT that
        nobody sent, which a kernel still answering a message logs as "KeyboardInterrupt caught in kernel"."""
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


class IPCProvisioner(LocalProvisioner):
    """Jupyter's local provisioner with the kernel on IPC sockets, whatever kernel manager started it."""

    async def pre_launch(self, **kwargs):
        """Switch the kernel manager to IPC before the local provisioner writes the connection file."""
        km = self.parent
        if km is not None and km.transport == "tcp":
            km.transport = "ipc"
            km.ip = ipc_address(km.connection_file, km.kernel_id)
            km.cache_ports = False  # ports are TCP's; IPC sockets are numbered files
        return await super().pre_launch(**kwargs)


def install_kernelspec(prefix=sys.prefix, name="python3"):
    """Make the environment's `name` kernelspec (ipykernel's, written if missing) use `IPCProvisioner`; returns its
    kernel.json. Kernels of the other kernelspecs, and of a Jupyter installed elsewhere, are left as they are."""
    folder = Path(prefix) / "share" / "jupyter" / "kernels" / name
    if not (folder / "kernel.json").is_file():
        from ipykernel.kernelspec import install
        folder = Path(install(prefix=str(prefix), kernel_name=name))
    spec = json.loads((folder / "kernel.json").read_text())
    spec.setdefault("metadata", {})["kernel_provisioner"] = {"provisioner_name": PROVISIONER, "config": {}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return folder / "kernel.json"


def main(argv=None):
    """`python -m apikit.jupyter [--prefix PREFIX]`: the venv's python3 kernel on IPC sockets (make install runs it)."""
    parser = argparse.ArgumentParser(prog="python -m apikit.jupyter", description="Make an environment's python3 "
                                     "kernelspec start its kernels on IPC sockets (apikit's provisioner), not TCP.")
    parser.add_argument("--prefix", default=sys.prefix,
                        help="the environment whose share/jupyter/kernels/python3 to write (default: this Python's, "
                             f"{sys.prefix})")
    args = parser.parse_args(argv)
    path = install_kernelspec(args.prefix)
    print(f"{path}: kernels on IPC sockets ({PROVISIONER})")


if __name__ == "__main__":
    main()
