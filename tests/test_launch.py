"""`apikit/launch.py`: the launcher's options, checked before anything starts, and the grids' common path."""
import pytest

from apikit.launch import LAUNCH, check_launch, parse_time


@pytest.mark.parametrize("value, minutes", [
    (90, 90), ("90", 90), ("1:30", 2), ("01:30:00", 90), ("2-00:00:00", 2880), ("1-12", 2160), ("0-00:01", 1),
    ("3-4:05", 3 * 1440 + 4 * 60 + 5), ("0:59", 1)])
def test_parse_time_reads_minutes_and_slurms_forms(value, minutes):
    assert parse_time(value) == minutes


@pytest.mark.parametrize("value", ["90min", "1:2:3:4", "", "-5", "0", "a-01:00:00", 0, -3, True, 1.5])
def test_a_malformed_time_is_one_clear_error(value):
    with pytest.raises(ValueError, match=r"give minutes \(90\) or SLURM's D-HH:MM:SS|no time at all"):
        parse_time(value)


def test_local_options_are_checked_and_completed(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert check_launch()["workers"] == 1 and check_launch()["threads"] is None  # one after another, torch's threads
    o = check_launch(workers=4)
    assert (o["workers"], o["threads"], o["gpus"]) == (4, 4, [])  # 16 cores shared by 4 runs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    o = check_launch()
    assert (o["workers"], o["gpus"]) == (3, ["2", "5", "7"])  # one run per visible GPU
    assert check_launch(workers="2")["workers"] == 2  # papermill's and argparse's strings


@pytest.mark.parametrize("options, message", [
    (dict(executor="pbs"), r"executor='pbs' is not valid: expected one of 'local', 'slurm'"),
    (dict(workers=0), r"workers=0 is not valid: expected a whole number >= 1"),
    (dict(nodes=2), r"launcher option\(s\) nodes do not exist; valid ones: executor, workers"),
    (dict(partition="gpu"), r"partition is SLURM's: add executor='slurm' \(--executor slurm\)"),
    (dict(time="1:00:00", mem="8G"), r"mem, time are SLURM's"),
    (dict(wait=False), r"wait=False \(--no-wait\) needs executor='slurm'"),
    (dict(max_requeue=-1), r"max_requeue=-1 is not valid: expected 0 or more"),
])
def test_bad_launcher_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        check_launch(**options)


def test_slurm_options_need_slurms_commands(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match=r"executor='slurm' needs SLURM's commands on PATH \(sbatch, sinfo, sacct, "
                                         r"scontrol not found\): submit from the cluster's login node"):
        check_launch(executor="slurm", time=10)
    with pytest.raises(ValueError, match="workers and threads are the local executor's"):
        check_launch(executor="slurm", workers=2)


def test_the_launchers_knobs_are_one_table():
    """The CLIs' flags, the notebook's parameters and check_launch read LAUNCH: every knob has a help text."""
    names = [p.name for p in LAUNCH]
    assert len(set(names)) == len(names) and all(p.help for p in LAUNCH)
    assert set(check_launch()) >= set(names)
