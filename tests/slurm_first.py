"""The SLURM tests first, and all on one process of `make test` (`-n 2 --dist loadgroup`): they share one cluster,
and while they wait minutes for SLURM the other process goes through the rest (tests/test_slurm_grid.py).

A plugin of its own, without the suite's imports, so that a test can run it in a small pytest of its own."""
import pytest

SLURM_FILES = ("test_slurm_cluster.py", "test_slurm_grid.py")


def on_slurm(nodeid):
    return _file(nodeid) in SLURM_FILES


# The files of the suite's longest tests (a minute or more each on 2 cores): next after the SLURM tests, so that the
# processes do not end with one of them running alone
LONG_FILES = ("test_demo.py", "test_workers.py", "test_gpu_check.py", "test_jobs.py")


def _file(nodeid):
    return nodeid.split("::")[0].rsplit("/", 1)[-1]


def pytest_collection_modifyitems(session, config, items):
    """The SLURM tests first, then the long ones; stable: each part keeps its order."""
    items.sort(key=lambda item: 0 if on_slurm(item.nodeid) else 1 if _file(item.nodeid) in LONG_FILES else 2)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with the SLURM tests as one group and every other file as one, decided from node ids here. xdist 3.8 groups by a
    suffix it writes into each node id, which pytest 9.2 no longer keeps: the SLURM tests went to both processes,
    and each started a cluster of its own."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class SlurmTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid):
            # A file stays on one process: most files share a module-scoped fixture (a grid run, two ranks of a
            # distributed run), which every process its tests went to built again.
            return "slurm" if on_slurm(nodeid) else _file(nodeid)
    return SlurmTogether(config, log)
