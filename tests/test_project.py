"""Set-up promises: environment.yml and pyproject.toml name the same packages; README commands exist."""
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# conda names that differ from the PyPI ones
CONDA_TO_PYPI = {"pytorch": "torch"}


def pypi_names(reqs):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].strip().lower() for r in reqs}


def test_environment_yml_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    want = (pypi_names(meta["dependencies"]) | pypi_names(extras["dev"]) | pypi_names(extras["demo"])) - {"apikit"}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    # Package lines under `dependencies:` and its `pip:` section; skip `- pip:` itself and the channels.
    deps_at = lines.index("dependencies:")
    deps = [l.strip()[2:] for l in lines[deps_at:] if l.strip().startswith("- ") and not l.strip().endswith(":")]
    got = {CONDA_TO_PYPI.get(n, n) for n in pypi_names(deps)} - {"python", "pip"}
    assert got == want
    # conda-forge alone: PyTorch's own channel no longer publishes, and conda-forge carries pytorch and torchvision
    channels = [l.strip()[2:] for l in lines[lines.index("channels:") + 1:deps_at]]
    assert channels == ["conda-forge", "nodefaults"]


def test_one_python_version_everywhere():
    """pyproject's requires-python, the README's "Python 3.X+" and environment.yml's python name one minimum (the
    tests' tomllib needs 3.11), and this interpreter meets it."""
    import sys
    from packaging.specifiers import SpecifierSet
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    (readme,) = re.findall(r"Python (3\.\d+)\+", (ROOT / "README.md").read_text())
    (conda,) = re.findall(r"^  - python[=>]+(3\.\d+)$", (ROOT / "environment.yml").read_text(), re.M)
    assert required == f">={readme}" and conda == readme
    assert SpecifierSet(required).contains(".".join(map(str, sys.version_info[:3])))
    assert not SpecifierSet(required).contains("3.10.13")


def test_pyproject_allows_the_installed_and_the_capped_torch():
    """The torch range admits what is installed here and the machines' cap (2.14.1), and is really a range."""
    import torch
    from packaging.requirements import Requirement
    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    spec = deps["torch"].specifier
    installed = torch.__version__.split("+")[0]
    assert spec.contains(installed) and spec.contains("2.14.1") and not spec.contains("2.3.0")


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _tracked_texts():
    """(name, text) of every tracked text file (binary ones, the PNGs, left out)."""
    import subprocess
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        path = ROOT / name
        if path.is_file() and b"\0" not in (data := path.read_bytes()):
            yield name, data.decode(errors="replace")


def test_no_tracked_file_holds_a_local_path():
    """Every tracked text file (what `make demo` commits, the code, the docs) reads the same on every machine: paths
    relative to the project root (or ~), never this machine's folders."""
    local = re.compile(r"(?<![\w.~])/(?:root|home|Users|work|tmp/pytest)[/\w.-]*|" + re.escape(str(ROOT)) + "|"
                       + re.escape(str(Path.home())) + "/")
    checked = 0
    for name, text in _tracked_texts():
        found = local.search(text)
        assert found is None, f"{name} holds the local path {found.group()!r}"
        checked += 1
    assert checked > 100  # the whole tree, not reports/ alone


def test_packages_are_pinned_by_version_from_the_registry_not_by_a_file_hosts_url():
    """pyproject's requirements are names and versions (pip resolves them from the package index); no tracked file
    names a package file host (the docs may name project pages)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = meta["dependencies"] + [r for extra in meta["optional-dependencies"].values() for r in extra]
    assert [r for r in reqs if "@" in r or "://" in r] == []
    hosts = re.compile(r"files\.pythonhosted\.org|download\.pytorch\.org|pypi\.org/packages|conda\.anaconda\.org")
    for name, text in _tracked_texts():
        found = hosts.search(text)
        assert found is None, f"{name} names the package file host {found.group()!r}"


def test_no_tracked_file_cites_an_issue_number():
    """The repository does not hold the issue tracker: comments, docstrings and test names say what they mean
    instead of citing an issue's number."""
    cited = re.compile(r"(?i)\bissues? #?\d+|(?:^|[\s(\[])#\d+(?=[\s).,:;\]]|$)", re.M)
    for name, text in _tracked_texts():
        found = cited.search(text)
        assert found is None, f"{name} cites {found.group().strip()!r}"


def test_make_lab_passes_lab_args_and_says_how_to_run_as_root(tmp_path):
    """`make lab LAB_ARGS=...` hands the arguments to `jupyter lab`; as root without --allow-root it says how."""
    import os
    import subprocess
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "jupyter").write_text('#!/bin/sh\necho "jupyter $*"\n')  # stands in for JupyterLab
    (venv / "bin" / "jupyter").chmod(0o755)
    make = lambda *args: subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "lab", f"VENV={venv}", "-o",
                                         f"{venv}/.apikit-installed", *args], cwd=tmp_path, capture_output=True,
                                        text=True, env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"})
    ran = make("LAB_ARGS=--allow-root --no-browser --port 8890")
    assert ran.returncode == 0 and ran.stdout == "jupyter lab --notebook-dir . --allow-root --no-browser --port 8890\n"
    plain = make()
    if os.geteuid() == 0:
        assert plain.returncode != 0 and plain.stdout == ""
        assert "make lab LAB_ARGS=--allow-root" in plain.stderr
        # before anything is installed: without -o, the venv's stamp would be built (pip) had the check come later
        first = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "lab", f"VENV={venv}"], cwd=tmp_path,
                               capture_output=True, text=True,
                               env={k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}, timeout=60)
        assert first.returncode != 0 and "LAB_ARGS=--allow-root" in first.stderr
        assert not (venv / ".apikit-installed").exists()
    else:
        assert plain.returncode == 0 and plain.stdout == "jupyter lab --notebook-dir .\n"


def _readme_commands():
    """Every shell command the README and docs/ show: their bash blocks' lines (continuations joined) and inline
    `...` code that starts with make, papermill or python -m apikit."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`((?:make |\.venv/bin/papermill |papermill |(?:\.venv/bin/)?python -m apikit)[^`]*)`",
                        text.replace("\n", " "))
    return [line.split("  #")[0].split(" # ")[0].strip() for line in lines if line.strip()]


def test_every_readme_command_names_what_exists(tmp_path):
    """make targets exist; `python -m apikit.X` options are in its --help; papermill's notebooks and -p names exist.
    The --help runs start in an empty folder, which stays empty: a --help writes nothing."""
    import os
    import subprocess
    import sys
    import papermill
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    commands = _readme_commands()
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    helps = {}
    seen = set()
    for cmd in commands:
        words = cmd.split()
        if words[0] == "make":
            target = next((w for w in words[1:] if "=" not in w), "demo")
            assert target in targets, f"README: `{cmd}`: no make target {target!r}"
            seen.add("make")
        elif "-m" in words and words[words.index("-m") + 1].startswith("apikit"):
            module = words[words.index("-m") + 1]
            if module not in helps:
                helps[module] = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env,
                                               capture_output=True, text=True, timeout=120).stdout
            for option in (w.split("=")[0] for w in words if w.startswith("--")):
                assert option in helps[module], f"README: `{cmd}`: {module} has no option {option}"
            seen.add("python")
        elif words[0].endswith("papermill"):
            notebook = next(w for w in words[1:] if w.endswith(".ipynb"))
            if re.search(r"[A-Z]{2,}|<", notebook):  # a placeholder (notebooks/NAME.ipynb), not a command to run
                continue
            params = papermill.inspect_notebook(str(ROOT / notebook))
            for name in (words[i + 1] for i, w in enumerate(words[:-1]) if w == "-p" and words[i + 1] != "..."):
                assert name in params, f"README: `{cmd}`: {notebook} has no parameter {name!r}"
            seen.add("papermill")
    assert seen == {"make", "python", "papermill"}
    assert list(tmp_path.iterdir()) == []


def test_the_slurm_tests_share_one_process_of_make_test(tmp_path):
    """`make test`'s two processes: every test of the SLURM files on one of them (one cluster, started once) and
    first, each other file on one (its module fixtures built once); with the suite's scheduler (tests/slurm_first.py),
    whatever pytest's node ids."""
    import os
    import subprocess
    import sys
    (tmp_path / "slurm_first.py").write_text((ROOT / "tests" / "slurm_first.py").read_text())
    for name in ("test_slurm_cluster", "test_slurm_grid", "test_other"):
        (tmp_path / f"{name}.py").write_text(
            "import os, time, pytest\n"
            "@pytest.mark.parametrize('i', range(4))\n"
            f"def test_{name}(i):\n"
            "    time.sleep(0.2)\n"
            f"    open(f'{name}-{{i}}.worker', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n"
            f"    open(os.environ['PYTEST_XDIST_WORKER'] + '.order', 'a').write('{name}\\n')\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
                          "--no-loadscope-reorder", "-p", "no:cacheprovider", "-p", "slurm_first"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-2000:]
    workers = {f.stem: f.read_text() for f in tmp_path.glob("*.worker")}
    assert len(workers) == 12
    on_slurm = {w for name, w in workers.items() if name.startswith("test_slurm")}
    assert len(on_slurm) == 1 and set(workers.values()) == {"gw0", "gw1"}
    assert len({w for name, w in workers.items() if name.startswith("test_other")}) == 1  # a file on one process
    order = (tmp_path / f"{on_slurm.pop()}.order").read_text().split()
    assert order[:8] == ["test_slurm_cluster"] * 4 + ["test_slurm_grid"] * 4  # first, in their files' order


def _demo_lines(d):
    """The lines `make demo` prints for a demo.json: each arm's top-1 per seed, and the verdict."""
    rows = [f"  {arm:9s} " + "  ".join(f"{s}: {d['top1'][arm][s]:5.1f}" for s in map(str, d["seeds"]))
            for arm in ("Baseline", "API-Net")]
    return rows + ["  " + d["verdict"]]


def test_the_demo_figures_quoted_in_docs_are_the_recorded_ones():
    """docs/demo.md quotes `make demo`'s printout and Fig. 3's part hits: each figure equals reports/demo's
    demo.json and viz.json (and a rerun's demo.json under reports/demo/reruns/), so the text cannot drift."""
    text = (ROOT / "docs" / "demo.md").read_text()
    runs = [ROOT / "reports" / "demo" / "demo.json", *sorted((ROOT / "reports" / "demo" / "reruns").glob("*.json"))]
    for path in runs:
        for line in _demo_lines(json.loads(path.read_text())):
            assert line in text, f"docs/demo.md lacks {path.name}'s line {line.strip()!r}"
    hits = json.loads((ROOT / "reports" / "demo" / "visualize" / "viz.json").read_text())["part_hit_rate"]
    pct = lambda x: f"{100 * x:.1f}%"
    ci = lambda key: f"{pct(hits[key])} [{100 * hits[key + '_ci95'][0]:.1f}, {100 * hits[key + '_ci95'][1]:.1f}]"
    for quoted in (ci("api_gate"), ci("baseline_gate"), f"{hits['api_gate_n_peaks']:,} peaks",
                   f"{hits['n_images']:,} test images", f"{pct(hits['chance'])} for a peak at a random cell",
                   f"{hits['baseline_gate_flat_maps']:,} of them are flat", f"API-Net {pct(hits['api_own'])}",
                   f"Baseline {pct(hits['baseline_own'])}"):
        assert quoted in " ".join(text.split()), f"docs/demo.md does not quote viz.json's {quoted!r}"


def test_docs_demo_is_rendered_from_the_demos_records(tmp_path):
    """docs/demo.md is docs/demo.template.md with its fields filled from reports/demo's records (`apikit.demodoc`):
    an edit to either that the other does not share fails here; a field the records do not give is named."""
    from apikit import demodoc
    assert (ROOT / "docs" / "demo.md").read_text() == demodoc.render(), "run `python -m apikit.demodoc`"
    template = (ROOT / "docs" / "demo.template.md").read_text()
    assert "${printout}" in template and "${api_gate}" in template and "${rerun_printout}" in template
    bad = tmp_path / "t.md"
    bad.write_text("The gain was ${gian} points.")
    with pytest.raises(ValueError, match=r"asks for gian, which the demo's records do not give: fields are seeds, "):
        demodoc.render(template=bad)


def test_the_readme_reads_in_five_minutes():
    """At most 150 lines: the two commands, your own folder, the notebooks and the method; the rest is in docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    for doc in ("docs/data.md", "docs/notebooks.md", "docs/demo.md", "docs/paper.md", "docs/scale.md"):
        assert f"({doc})" in "\n".join(lines) and (ROOT / doc).is_file()
