"""`apikit/notebook_errors.py`: papermill's injected parameters are checked against the notebook's own, and apikit's stops
show as their message alone."""
import pytest

from apikit.notebook_errors import (INJECTED, OneLineError, UnknownParameter, check_injected, did_you_mean, one_line_errors,
                          template_differences)

PARAMETERS = 'epochs: int = 6  # training epochs\nlr: float = 0.01  # initial learning rate\nrun_dir: str = "x"'


def test_a_name_the_parameters_cell_lacks_stops_the_notebook_naming_the_valid_ones():
    history = ["", PARAMETERS, INJECTED + "epochs = 1\nseeds = \"[0, 1]\"\nlearning_rate = 0.1\n", "check_injected()"]
    with pytest.raises(UnknownParameter) as e:
        check_injected(history)
    assert str(e.value).startswith("seeds, learning_rate (did you mean lr?): not parameters of this notebook")
    assert "valid ones: epochs, lr, run_dir." in str(e.value)
    assert e.value._render_traceback_() == [f"UnknownParameter: {e.value}"] and isinstance(e.value, ValueError)


def test_known_names_and_runs_without_papermill_pass():
    check_injected(["", PARAMETERS, INJECTED + "epochs = 1\nlr = 0.1\n", "check_injected()"])
    check_injected(["", PARAMETERS, "check_injected()"])  # Run All in Lab: nothing injected
    check_injected([])


def test_shown_exceptions_keep_their_kind():
    class Stop(OneLineError, KeyboardInterrupt):
        pass
    assert isinstance(Stop("x"), KeyboardInterrupt) and Stop("x")._render_traceback_() == ["Stop: x"]


def test_train_notebook_from_the_shell_stops_on_a_parameter_it_lacks(tmp_path):
    """`papermill notebooks/train.ipynb out.ipynb -p learning_rate 0.1 -p seeds '[0, 1]'`: papermill only warns, the
    notebook stops before any work, the exit status is not 0 and the message names the valid parameters."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    from apikit.schema import DEFAULTS
    from apikit.jupyter import install_kernelspec
    root = Path(__file__).resolve().parents[1]
    spec = install_kernelspec(tmp_path / "env")
    papermill = Path(sys.executable).parent / "papermill"
    proc = subprocess.run([str(papermill), str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "learning_rate", "0.1", "-p", "seeds", "[0, 1]", "-p", "run_dir", str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JUPYTER_PATH": str(spec.parents[2])})
    assert proc.returncode != 0
    assert ("UnknownParameter: learning_rate (did you mean lr?), seeds (did you mean seed?): not parameters of this "
            "notebook (papermill only warns, and the run would go on without them); valid ones: "
            f"{', '.join(DEFAULTS)}, overwrite.") in proc.stderr
    assert "without encryption" not in proc.stderr
    assert not (tmp_path / "run").exists()  # stopped before train() made its folder


def test_a_name_typed_into_the_parameters_cell_stops_the_notebook(monkeypatch):
    """Run All in Lab (nothing injected), or papermill on a template saved so: the parameters cell's own names are
    checked against the notebook's parameters."""
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    defaults = {"epochs": 6, "lr": 0.01, "run_dir": "x"}
    typed = PARAMETERS + "\nlearning_rate = 0.1"
    for history in (["", typed, "check_injected()"], ["", typed, INJECTED + "epochs = 1\n", "check_injected()"],
                    ["", typed, "check_injected()", "import x\nout = x.run(run_dir)", "check_injected()"]):
        with pytest.raises(UnknownParameter) as e:
            check_injected(history, defaults)
        assert e.value._render_traceback_() == [
            "UnknownParameter: learning_rate (did you mean lr?): not a parameter of this notebook (set in the "
            "parameters cell, and the run would go on without it): rename or remove it there; valid ones: epochs, lr, "
            "run_dir. `papermill --help-notebook NOTEBOOK` describes them."]
    # The working names of a later cell (imports, calls, `out = ...`) are not taken for parameters.
    check_injected(["", PARAMETERS, "check_injected()", "import x\nout = x.run(run_dir)", "check_injected()"], defaults)
    check_injected(["import x\nout = x.run()", "check_injected()"], defaults)


def test_train_notebook_run_as_lab_runs_it_stops_on_a_name_typed_into_its_parameters_cell(tmp_path, python3_kernel,
                                                                                         monkeypatch):
    """train.ipynb with `learning_rate = 0.1` typed into its parameters cell, executed as JupyterLab's Run All does
    (nbclient, nothing injected): the check cell stops it in one line before any work."""
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)  # the kernel's environment: one line, not a traceback
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from pathlib import Path
    from apikit.schema import NOTEBOOK_DEFAULTS
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "train.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert params.source.count("'reports/runs/train'") == 1
    params.source = params.source.replace("'reports/runs/train'", repr(str(tmp_path / "run")))
    params.source += "\nlearning_rate = 0.1"
    client = NotebookClient(nb, kernel_name=python3_kernel, resources={"metadata": {"path": str(tmp_path)}},
                            timeout=120)
    with pytest.raises(CellExecutionError):
        client.execute()
    check = nb.cells[nb.cells.index(params) + 1]
    error = [o for o in check.outputs if o.output_type == "error"]
    assert len(error) == 1 and error[0].traceback == [
        "UnknownParameter: learning_rate (did you mean lr?): not a parameter of this notebook (set in the parameters "
        "cell, and the run would go on without it): rename or remove it there; valid ones: "
        f"{', '.join(NOTEBOOK_DEFAULTS)}. `papermill --help-notebook NOTEBOOK` describes them."]
    assert not (tmp_path / "run").exists()  # stopped before train() made its folder


@pytest.mark.parametrize("name, meant", [("lrr", "lr"), ("epoch", "epochs"), ("learning_rate", "lr"),
                                         ("run_directory", "run_dir"), ("colour", None), ("seed", None)])
def test_did_you_mean_finds_close_spellings_and_initials(name, meant):
    assert did_you_mean(name, ["epochs", "lr", "run_dir"]) == meant


def test_an_unknown_parameter_is_one_line_with_its_likely_meaning(monkeypatch):
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    with pytest.raises(UnknownParameter) as e:
        check_injected(["", PARAMETERS, INJECTED + "lrr = 0.1\n", "check_injected()"])
    assert e.value._render_traceback_() == [
        "UnknownParameter: lrr (did you mean lr?): not a parameter of this notebook (papermill only warns, and the "
        "run would go on without it); valid ones: epochs, lr, run_dir. `papermill --help-notebook NOTEBOOK` describes "
        "them."]
    # --debug (APIKIT_DEBUG=1): IPython finds no one-line rendering and prints the whole traceback.
    monkeypatch.setenv("APIKIT_DEBUG", "1")
    assert not hasattr(e.value, "_render_traceback_")


EDITED = PARAMETERS.replace("epochs: int = 6  # training epochs", "epochs: int = 2  # 2 epochs for the check")


def test_a_papermill_run_of_an_edited_template_says_which_defaults_differ_and_how_to_restore_it():
    defaults = {"epochs": 6, "lr": 0.01, "run_dir": "x"}
    assert template_differences(EDITED, defaults) == [("epochs", 2, 6)]
    assert template_differences(PARAMETERS, defaults) == [] and template_differences("lr = 1", {"lr": True}) == [
        ("lr", 1, True)]
    said = []
    for history in (["", EDITED, INJECTED + "lr = 0.1\n", "check_injected()"], ["", EDITED, "check_injected()"]):
        check_injected(history, defaults, "notebooks/train.ipynb", log=said.append)
    assert said == ["note: this notebook's parameters cell differs from apikit's defaults: epochs 2 (apikit's "
                    "default: 6). They are the defaults of every papermill run of it; `git checkout "
                    "notebooks/train.ipynb` restores the template."] * 2
    check_injected(["", PARAMETERS, "check_injected()"], defaults, log=said.append)
    assert len(said) == 2  # the template as the schema has it: nothing to say


def test_a_command_line_ends_on_an_apikit_stop_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("APIKIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e, one_line_errors("python -m apikit.report"):
        raise UnknownParameter("x: not a parameter")
    assert e.value.code == 2
    assert capsys.readouterr().err == "python -m apikit.report: UnknownParameter: x: not a parameter\n"
    monkeypatch.setenv("APIKIT_DEBUG", "1")
    with pytest.raises(UnknownParameter), one_line_errors("python -m apikit.report"):
        raise UnknownParameter("x: not a parameter")
    with pytest.raises(KeyError), one_line_errors("python -m apikit.report"):  # not a stop: a bug, with its traceback
        raise KeyError("x")
