"""The templates as git stores them, and train.ipynb and ablations.ipynb under papermill with tiny parameters: the
real code path, asserted on files."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

import apikit.ablations as ablations
import apikit.jobs as jobs
from apikit.ablations import run_grid

from conftest import make_image_folders

ROOT = Path(__file__).resolve().parents[1]
TRAIN, ABLATIONS = ROOT / "notebooks" / "train.ipynb", ROOT / "notebooks" / "ablations.ipynb"
TEMPLATES = ["train", "ablations", "visualize", "explore", "report"]
# The notebook metadata the templates ship with: what JupyterLab and papermill write for an ipykernel kernel.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_image_folders(tmp_path_factory.mktemp("nb"), n_classes=4, n_train=4, n_valid=2, size=20)


def tiny(folders, **kw):
    return dict(dict(dataset="folder", data_path=str(folders), size=16, resize=18, epochs=1, n_classes=2,
                     n_images=2, lr=0.01), **kw)


# git and make in a scratch repository, whatever the caller's git state (a hook's GIT_DIR, signed commits).
GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def git(repo, *args, check=True):
    """`git args` in `repo`, as a test user; the CompletedProcess (text)."""
    return subprocess.run(["git", "-c", "user.name=apikit tests", "-c", "user.email=tests@apikit.invalid", "-c",
                           "commit.gpgsign=false", *args], cwd=repo, capture_output=True, text=True, check=check,
                          env=GIT_ENV)


@pytest.fixture(scope="module")
def templates_repo(tmp_path_factory):
    """A git repository holding the templates as they are here and .gitattributes, its filter registered by the
    Makefile's own rule (as `make install` does) for this interpreter's environment."""
    repo = tmp_path_factory.mktemp("clone") / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in TEMPLATES:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", repo / "notebooks")
    shutil.copy(ROOT / ".gitattributes", repo)
    git(repo, "init", "-q")
    subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "git-filter", f"VENV={sys.prefix}"], cwd=repo,
                   check=True, capture_output=True, env=GIT_ENV)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "templates")
    return repo


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_are_clean_and_parameterised(name, templates_repo):
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    # The kernelspec ipykernel installs and the language_info its kernel reports (less the Python version, which
    # the git filter drops), cell ids (nbformat 4.5), a tags list in every cell (papermill adds one to each):
    # JupyterLab and papermill find nothing to add, so opening or running a template changes nothing git sees.
    assert nb.metadata.kernelspec == KERNELSPEC and nb.metadata.language_info == LANGUAGE_INFO
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5) and all(c.get("id") for c in nb.cells)
    assert all(isinstance(c.metadata.get("tags"), list) for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.get("tags") == ["parameters"]
    # Every parameter carries a comment, which papermill --help-notebook shows.
    assert all(p["help"] for p in pm.inspect_notebook(str(path)).values())
    # A run here keeps its outputs in the file; git stores the template without them.
    stored = git(templates_repo, "show", f"HEAD:notebooks/{name}.ipynb").stdout
    code = [c for c in nbformat.reads(stored, as_version=4).cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    if not any(c.outputs or c.execution_count for c in nb.cells if c.cell_type == "code"):
        # The template as committed is what the filter writes: a fresh checkout shows no change.
        assert path.read_text(encoding="utf-8") == stored


def test_templates_are_filtered_in_notebooks_only(templates_repo):
    attrs = git(templates_repo, "check-attr", "filter", "diff", "--", "notebooks/train.ipynb",
                "reports/demo/notebooks/visualize.ipynb").stdout.splitlines()
    assert attrs == ["notebooks/train.ipynb: filter: nbstripout", "notebooks/train.ipynb: diff: ipynb",
                     "reports/demo/notebooks/visualize.ipynb: filter: unspecified",
                     "reports/demo/notebooks/visualize.ipynb: diff: unspecified"]  # executed copies keep outputs
    assert git(templates_repo, "config", "filter.nbstripout.required").stdout.strip() == "true"


def test_a_template_run_in_place_keeps_its_outputs_and_git_sees_only_edits(templates_repo, tmp_path,
                                                                          python3_kernel):
    """Run All and save (papermill into the same path): the outputs stay on disk, git shows no change until the
    code or a parameter changes, and then only that change."""
    repo, path = templates_repo, templates_repo / "notebooks" / "report.ipynb"
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    params = nb.cells[1]
    for old, new in (("'reports/runs'", repr(str(tmp_path / "runs"))), ("'reports'", repr(str(tmp_path / "out")))):
        assert params.source.count(old) == 1
        params.source = params.source.replace(old, new)
    nbformat.write(nb, path)
    (tmp_path / "runs").mkdir()
    git(repo, "commit", "-qam", "the researcher's parameters")
    pm.execute_notebook(str(path), str(path), kernel_name=python3_kernel, progress_bar=False, cwd=str(repo))

    ran = nbformat.read(path, as_version=4)
    code = [c for c in ran.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code) and "runs from " + str(tmp_path / "runs") in str(code[-1].outputs)
    assert "papermill" in ran.metadata and ran.metadata.language_info.get("version")
    assert (tmp_path / "out" / "README.md").is_file()
    assert git(repo, "diff", "--quiet", "notebooks/", check=False).returncode == 0
    # `git status` goes by the file's size and lists it until it is added (nbstripout's known limit): adding it
    # records nothing, and the outputs stay on disk.
    git(repo, "add", "-A")
    assert git(repo, "diff", "--cached", "--quiet", check=False).returncode == 0
    assert git(repo, "status", "--porcelain").stdout == ""
    assert nbformat.read(path, as_version=4).cells[2].outputs

    ran.cells[1].source = ran.cells[1].source.replace("'API-Net reproduction: results'", "'My runs'")
    nbformat.write(ran, path)
    assert git(repo, "diff", "--quiet", "notebooks/", check=False).returncode == 1
    diff = git(repo, "diff", "notebooks/").stdout
    changed = [l for l in diff.splitlines() if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert len(changed) == 2 and "My runs" in changed[1] and "API-Net reproduction" in changed[0]
    git(repo, "commit", "-qam", "a new title")
    stored = nbformat.reads(git(repo, "show", "HEAD:notebooks/report.ipynb").stdout, as_version=4)
    assert "'My runs'" in stored.cells[1].source and not any(c.get("outputs") for c in stored.cells)
    assert nbformat.read(path, as_version=4).cells[2].outputs  # still on disk


def test_train_notebook_writes_its_run_dir(folders, tmp_path, python3_kernel):
    run = tmp_path / "run"
    out = pm.execute_notebook(str(TRAIN), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel,
                              parameters=tiny(folders, run_dir=str(run)), progress_bar=False, cwd=str(ROOT))
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "finished" and m["config"]["n_images"] == 2 and len(m["history"]) == 1
    for f in ("model.pkl", "curves.png", "confusion.png"):
        assert (run / f).stat().st_size > 0
    assert any(c.get("outputs") for c in out.cells if c.cell_type == "code")
    # The history table shows lr in scientific notation: the epoch's last lr, near 0 at the schedule's end.
    tables = [o["data"]["text/html"] for c in out.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert f">{m['history'][0]['lr']:.2e}<" in tables[-1] and "e-0" in f"{m['history'][0]['lr']:.2e}"


def test_train_notebook_from_notebooks_folder_writes_under_the_project_root(folders, tmp_path, python3_kernel):
    """JupyterLab starts kernels in notebooks/: a relative run_dir still means the project root's reports/."""
    import shutil, uuid
    rel = f"reports/runs/.pytest-cwd-{uuid.uuid4().hex[:8]}"
    try:
        nb = pm.execute_notebook(str(TRAIN), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel,
                                 parameters=tiny(folders, run_dir=rel), progress_bar=False, cwd=str(ROOT / "notebooks"))
        assert json.loads((ROOT / rel / "metrics.json").read_text())["status"] == "finished"
        assert not (ROOT / "notebooks" / "reports").exists()
        printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert f"run_dir: {ROOT / rel}" in printed and "epoch 1/1  train loss" in printed
        assert "IProgress" not in printed and "without encryption" not in printed
    finally:
        shutil.rmtree(ROOT / rel, ignore_errors=True)


def test_bad_parameter_stops_before_any_work(folders, tmp_path, python3_kernel):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(TRAIN), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel,
                            parameters=tiny(folders, mutual="foo", run_dir=str(tmp_path / "run")),
                            progress_bar=False, cwd=str(ROOT))
    assert "parameter mutual='foo' is not valid: choose one of 'mlp'" in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_an_edited_template_says_which_defaults_differ_and_a_bad_parameter_stops_in_one_line(folders, tmp_path,
                                                                                             python3_kernel):
    """train.ipynb edited and saved in Lab (epochs 2): every later papermill run takes its defaults, as
    --help-notebook shows, and says which differ from apikit's and how to restore the template. A parameter the run
    cannot take stops it in one line, as the executed notebook shows it."""
    nb = nbformat.read(TRAIN, as_version=4)
    old = "epochs: int = 6  # training epochs (the paper: 100; Dogs 50)"
    assert nb.cells[1].source.count(old) == 1
    nb.cells[1].source = nb.cells[1].source.replace(old, "epochs: int = 2  # 2 epochs for the check")
    edited = tmp_path / "train.ipynb"
    nbformat.write(nb, edited)
    shown = subprocess.run([str(Path(sys.executable).parent / "papermill"), "--help-notebook", str(edited)],
                           capture_output=True, text=True, check=True).stdout
    assert f"{'  epochs: int (default 2)':<34}2 epochs for the check" in shown.splitlines()  # papermill's layout
    with pytest.raises(pm.PapermillExecutionError):
        pm.execute_notebook(str(edited), str(tmp_path / "out.ipynb"), kernel_name=python3_kernel, progress_bar=False,
                            parameters=tiny(folders, lr=-1, run_dir=str(tmp_path / "run")), cwd=str(ROOT))
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []))
    assert ("note: this notebook's parameters cell differs from apikit's defaults: epochs 2 (apikit's default: 6). "
            "They are the defaults of every papermill run of it; `git checkout notebooks/train.ipynb` restores the "
            "template.") in printed.splitlines()
    errors = [o for c in out.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert [e["traceback"] for e in errors] == [["ParameterError: parameter lr=-1.0 is not valid: must be a finite "
                                                 "number > 0."]]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def grid(folders, tmp_path_factory, python3_kernel):
    """One batch of Table 1 plus a broken configuration, run once for the tests below."""
    out = tmp_path_factory.mktemp("grid") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        # N_cl=99 scales to 7 classes per batch: valid as a parameter, but the data set has only 4 classes.
        mp.setitem(ablations.TABLES, "broken", [("ok", {}), ("bad", {"n_classes": 99})])
        status = run_grid(tiny(folders), ["table1", "broken"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                          html=False)
    return out, status


def test_grid_records_failures_and_goes_on(grid):
    out, status = grid
    assert status == {str(out / "api-False" / "seed-0"): "finished", str(out / "api-net" / "seed-0"): "finished",
                      str(out / "n_classes-7" / "seed-0"): "failed"}
    bad = json.loads((out / "n_classes-7" / "seed-0" / "metrics.json").read_text())
    assert bad["status"] == "failed" and "n_classes=7 is larger than the 4 classes" in bad["error"]
    assert json.loads((out / "batch.json").read_text()) == status


def test_ablations_notebook_keeps_finished_runs_and_renders_the_tables(folders, grid, tmp_path, python3_kernel):
    out, _ = grid
    before = (out / "api-net" / "seed-0" / "metrics.json").read_bytes()
    nb = pm.execute_notebook(str(ABLATIONS), str(tmp_path / "ablations.ipynb"), kernel_name=python3_kernel,
                             parameters=dict(tiny(folders), tables=["table1"], seeds=[0], out_root=str(out)),
                             progress_bar=False, cwd=str(ROOT))
    assert (out / "api-net" / "seed-0" / "metrics.json").read_bytes() == before  # skipped, not retrained
    assert json.loads((out / "batch.json").read_text())[str(out / "api-net" / "seed-0")] == "finished (kept)"
    top1 = {name: json.loads((out / name / "seed-0" / "metrics.json").read_text())["metrics"]["top1"]
            for name in ("api-False", "api-net")}
    shown = "".join(o.get("data", {}).get(kind, "") for c in nb.cells for o in c.get("outputs", [])
                    for kind in ("text/markdown", "text/html"))
    for v in top1.values():
        assert f"{v:.1f}" in shown
    # Not the paper's setting: the paper's gain (+3.2) is shown, its absolute figures (85.4, 88.6) are not.
    assert "+3.2" in shown and "85.4" not in shown and "88.6" not in shown


def test_failed_runs_are_redone(folders, grid, python3_kernel):
    out, _ = grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ablations.TABLES, "broken", [("bad", {"n_classes": 99})])
        again = run_grid(tiny(folders), ["broken"], seeds=[0], out_root=out, kernel_name=python3_kernel, html=True)
    assert again == {str(out / "n_classes-7" / "seed-0"): "failed"}  # tried again, fails again
    assert (out / "n_classes-7" / "seed-0" / "train.html").exists()


def test_grid_checks_every_row_before_the_first_run(folders, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ablations.TABLES, "broken", [("ok", {}), ("bad", {"mutual": "bogus"})])
        with pytest.raises(ValueError, match="parameter mutual='bogus' is not valid"):
            run_grid(tiny(folders), ["broken"], seeds=[0], out_root=tmp_path / "runs")
    assert not (tmp_path / "runs" / "api-net").exists()
    with pytest.raises(ValueError, match="seeds='\\[0' is not valid.*-y 'seeds: \\[0, 1\\]'"):
        run_grid(tiny(folders), ["table1"], seeds="[0", out_root=tmp_path / "runs")


def test_grid_goes_on_past_a_corrupt_metrics_json(folders, tmp_path, python3_kernel):
    out = tmp_path / "runs"
    (out / "api-net" / "seed-0").mkdir(parents=True)
    (out / "api-net" / "seed-0" / "metrics.json").write_text("{truncated")
    lines = []
    status = run_grid(tiny(folders), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel, html=False,
                      log=lines.append)
    assert status == {str(out / "api-False" / "seed-0"): "finished", str(out / "api-net" / "seed-0"): "corrupt"}
    assert any("metrics.json cannot be read" in l for l in lines)
    # The ETA counts only the runs that will train: the corrupt one is skipped, so nothing is "to go".
    assert any(l.startswith("[1/2] finished  api-False/seed-0") and "to go" not in l for l in lines)
    assert any(l.startswith("[2/2] corrupt") for l in lines)


def test_grid_goes_on_past_crafted_metrics_and_refuses_foreign_folders(folders, tmp_path, monkeypatch):
    """A deeply nested metrics.json and a FIFO named metrics.json are reported with their reason and the
    grid goes on; a run_dir holding what no run wrote stops the grid before its first run. (The notebook itself is
    replaced by a stand-in that records a finished run: the grid's bookkeeping is what is tested.)"""
    from apikit.runs import NotARunFolder, write_json

    def stand_in(src, dst, params, **kwargs):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(dst).parent / "metrics.json", {"status": "finished", "config": {"seed": params["seed"]}})
    monkeypatch.setattr(jobs, "run_notebook", stand_in)
    out = tmp_path / "runs"
    (out / "api-net" / "seed-0").mkdir(parents=True)
    (out / "api-net" / "seed-0" / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    (out / "api-False" / "seed-1").mkdir(parents=True)
    os.mkfifo(out / "api-False" / "seed-1" / "metrics.json")
    lines = []
    status = run_grid(tiny(folders), ["table1"], seeds=[0, 1], out_root=out, html=False, log=lines.append)
    assert status == {str(out / "api-False" / "seed-0"): "finished", str(out / "api-False" / "seed-1"): "corrupt",
                      str(out / "api-net" / "seed-0"): "corrupt", str(out / "api-net" / "seed-1"): "finished"}
    assert any("api-net/seed-0/metrics.json cannot be read (nested deeper than Python can parse)" in l for l in lines)
    assert any("api-False/seed-1/metrics.json is a FIFO, not a file apikit wrote" in l for l in lines)
    (out / "api-net" / "seed-2").mkdir()
    (out / "api-net" / "seed-2" / "thesis.tex").write_text("draft")
    with pytest.raises(NotARunFolder, match=r"seed-2.* holds what no run wrote \('thesis.tex'\)"):
        run_grid(tiny(folders), ["table1"], seeds=[2], out_root=out, html=False, log=lines.append)
    assert not (out / "api-False" / "seed-2").exists()  # stopped before its first run


def test_an_interrupted_grid_says_in_one_line_which_run_stopped_and_returns_what_it_has(folders, tmp_path,
                                                                                     python3_kernel, capsys):
    """Ctrl-C (SIGINT to the process running the grid, as in a terminal; Kernel > Interrupt sends the same to a
    notebook's kernel) stops the running run at its last checkpoint: one line says which and how far, no traceback,
    and run_grid returns, so that the notebook's next cell renders what finished."""
    import signal
    import threading
    import time
    out = tmp_path / "runs"
    first = out / "api-False" / "seed-0"

    def interrupt():  # once the first epoch is checkpointed, as a researcher would press Ctrl-C
        while not (first / "checkpoint.pth").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    lines = []
    status = run_grid(tiny(folders, epochs=40), ["table1"], seeds=[0], out_root=out, kernel_name=python3_kernel,
                      html=False, log=lines.append, stdout=False)
    m = json.loads((first / "metrics.json").read_text())
    done = m["epochs_done"]
    assert m["status"] == "interrupted" and 1 <= done < 40
    assert lines[-1] == f"[1/2] api-False/seed-0 interrupted after epoch {done} of 40; re-run to resume"
    assert status == {str(first): "interrupted"} and json.loads((out / "batch.json").read_text()) == status
    assert not (out / "api-net").exists()  # the grid stopped there
    assert "Traceback" not in capsys.readouterr().err
    # The executed train.ipynb shows the interrupt as the same one line, as Jupyter does.
    errors = [o for c in nbformat.read(first / "train.ipynb", as_version=4).cells for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert [e["traceback"] for e in errors] == [[f"RunInterrupted: interrupted after epoch {done} of 40; re-run to "
                                                 f"resume ({first})"]]
