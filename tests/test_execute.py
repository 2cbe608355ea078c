"""`apikit/execute.py`: executed notebooks' HTML copies (papermill runs are tested through the notebooks)."""
from pathlib import Path

import nbformat

from apikit.execute import export_html
from apikit.report.document import CSS
from apikit.runs import project_root


def test_html_copy_has_the_reports_style_and_no_local_paths(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(run_dir)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                           text=f"{project_root()}/reports/runs/x\n{Path.home()}/data/cub\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Train"), cell]
    nbformat.write(nb, tmp_path / "train.ipynb")
    html = export_html(tmp_path / "train.ipynb").read_text()
    assert (tmp_path / "train.html").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["train.html",
                                                                                                   "train.ipynb"]
    assert html.startswith("<!DOCTYPE html>") and f"<style>{CSS}</style>" in html and html.count("<style") == 1
    assert "reports/runs/x" in html and "~/data/cub" in html
    assert str(project_root()) not in html and str(Path.home()) + "/" not in html
    assert len(html) < 20_000  # a few lines of style, not nbconvert's stylesheet
    assert export_html(tmp_path / "none.ipynb") is None


def test_from_the_shell_an_interrupt_exits_130_and_an_error_1_with_the_notebooks_own_lines(tmp_path, monkeypatch,
                                                                                            capsys):
    import papermill as pm
    import pytest
    from apikit import execute

    def interrupted(*args, **kwargs):
        raise execute.NotebookInterrupted("interrupted after epoch 2 of 6; re-run to resume (reports/runs/x)")
    monkeypatch.setattr(execute, "run_notebook", interrupted)
    with pytest.raises(SystemExit) as e:
        execute.run_in_shell("notebooks/train.ipynb", tmp_path / "train.ipynb", {})
    assert e.value.code == 130
    assert capsys.readouterr().err == (f"interrupted after epoch 2 of 6; re-run to resume (reports/runs/x) (the "
                                       f"executed notebook: {tmp_path / 'train.ipynb'})\n")

    def failed(*args, **kwargs):  # what papermill raises for a RunFinished, shown as one line by the notebook
        raise pm.PapermillExecutionError(2, 3, "train(...)", "RunFinished", "x already holds a finished run",
                                         ["\x1b[0;31mRunFinished: x already holds a finished run\x1b[0m"])
    monkeypatch.setattr(execute, "run_notebook", failed)
    with pytest.raises(SystemExit) as e:
        execute.run_in_shell("notebooks/train.ipynb", tmp_path / "train.ipynb", {})
    assert e.value.code == 1
    assert capsys.readouterr().err.splitlines() == ["RunFinished: x already holds a finished run",
                                                    f"(the executed notebook: {tmp_path / 'train.ipynb'})"]
