"""`apikit/cells.py`: papermill's injected parameters are checked against the notebook's own, and apikit's stops
show as their message alone."""
import pytest

from apikit.cells import INJECTED, Shown, UnknownParameter, check_injected

PARAMETERS = 'epochs: int = 6  # training epochs\nlr: float = 0.01  # initial learning rate\nrun_dir: str = "x"'


def test_a_name_the_parameters_cell_lacks_stops_the_notebook_naming_the_valid_ones():
    history = ["", PARAMETERS, INJECTED + "epochs = 1\nseeds = \"[0, 1]\"\nlearning_rate = 0.1\n", "check_injected()"]
    with pytest.raises(UnknownParameter) as e:
        check_injected(history)
    assert str(e.value).startswith("seeds, learning_rate: not parameters of this notebook")
    assert "valid ones: epochs, lr, run_dir." in str(e.value)
    assert e.value._render_traceback_() == [f"UnknownParameter: {e.value}"] and isinstance(e.value, ValueError)


def test_known_names_and_runs_without_papermill_pass():
    check_injected(["", PARAMETERS, INJECTED + "epochs = 1\nlr = 0.1\n", "check_injected()"])
    check_injected(["", PARAMETERS, "check_injected()"])  # Run All in Lab: nothing injected
    check_injected([])


def test_shown_exceptions_keep_their_kind():
    class Stop(Shown, KeyboardInterrupt):
        pass
    assert isinstance(Stop("x"), KeyboardInterrupt) and Stop("x")._render_traceback_() == ["Stop: x"]


def test_train_notebook_from_the_shell_stops_on_a_parameter_it_lacks(tmp_path):
    """`papermill notebooks/train.ipynb out.ipynb -p learning_rate 0.1 -p seeds '[0, 1]'`: papermill only warns, the
    notebook stops before any work, the exit status is not 0 and the message names the valid parameters."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from apikit.config import DEFAULTS
    from apikit.jupyter import install_kernelspec
    root = Path(__file__).resolve().parents[1]
    spec = install_kernelspec(tmp_path / "env")
    papermill = Path(sys.executable).parent / "papermill"
    proc = subprocess.run([str(papermill), str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "learning_rate", "0.1", "-p", "seeds", "[0, 1]", "-p", "run_dir", str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JUPYTER_PATH": str(spec.parents[2])})
    assert proc.returncode != 0
    assert ("UnknownParameter: learning_rate, seeds: not parameters of this notebook (papermill only warns, and the "
            f"run would go on without them); valid ones: {', '.join(DEFAULTS)}, overwrite.") in proc.stderr
    assert "without encryption" not in proc.stderr
    assert not (tmp_path / "run").exists()  # stopped before train() made its folder
