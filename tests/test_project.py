"""Set-up promises: environment.yml and pyproject.toml name the same packages; README commands exist."""
import re
import tomllib
from pathlib import Path

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
