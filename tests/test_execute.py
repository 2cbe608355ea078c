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
