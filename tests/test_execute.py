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


def test_a_committed_executed_notebook_keeps_no_run_records(tmp_path):
    """Two papermill runs of one notebook differ in times, paths and the injected cell's random id: all dropped."""
    import nbformat
    from apikit.execute import without_run_records
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = dict(start_time="2026-12-02T17:01:36", end_time="2026-12-02T17:02:00", duration=24.1,
                                    input_path=str(tmp_path / "notebooks" / "x.ipynb"), output_path="/tmp/x.ipynb",
                                    parameters={"a": 1}, version="2.7.0")
    cell = nbformat.v4.new_code_cell("a = 1", id="9f3c2a1b")
    cell.metadata.update(tags=["injected-parameters"], papermill=dict(duration=0.1),
                         execution={"iopub.status.busy": "2026-12-02T17:01:37"})
    nb.cells.append(cell)
    nbformat.write(nb, str(tmp_path / "x.ipynb"))
    without_run_records(tmp_path / "x.ipynb")
    got = nbformat.read(str(tmp_path / "x.ipynb"), as_version=4)
    assert got.metadata["papermill"] == {"parameters": {"a": 1}, "version": "2.7.0"}
    assert got.cells[0].id == "injected-parameters" and dict(got.cells[0].metadata) == {"tags": ["injected-parameters"]}
    assert not list(tmp_path.glob(".*.tmp"))
