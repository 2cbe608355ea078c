"""`apikit/tables.py`: Tables 6-10 as one grid of the paper's recipe, each cell the run make paper makes."""
import pytest

from apikit.schema import paper_params
from apikit.runs import resolve
from apikit.tables import ARCHS, DATASETS, main, table_runs


def test_every_cell_is_the_papers_recipe_in_make_papers_folder():
    runs = table_runs(seeds=[0, 1])
    assert len(runs) == 5 * 3 * 2 and DATASETS == ("cub", "aircraft", "cars", "dogs", "nabirds")
    assert ARCHS == ("resnet50", "resnet101", "densenet161")
    for run in runs:
        dataset, arch = run.run_dir.parent.name.split("-")
        seed = run.params["seed"]
        paper = paper_params(dataset, arch, seed)
        assert run.run_dir == resolve(paper["run_dir"]) and run.label == f"{dataset}-{arch}/seed-{seed}"
        assert run.params == {k: v for k, v in paper.items() if k != "run_dir"}
    dogs = next(r for r in runs if r.label == "dogs-resnet50/seed-0")
    assert (dogs.params["lr"], dogs.params["epochs"], dogs.params["freeze_epochs"]) == (0.001, 50, 12)
    bf16 = table_runs(["cub"], ["resnet50"], [0], "/tmp/x", precision="bf16")
    assert [r.params["precision"] for r in bf16] == ["bf16"] and str(bf16[0].run_dir) == "/tmp/x/cub-resnet50/seed-0"


def test_bad_cells_are_refused_before_anything_runs(capsys):
    with pytest.raises(ValueError, match=r"datasets: 'imagenet' not in Tables 6-10; choose from cub, aircraft"):
        table_runs(["imagenet"])
    with pytest.raises(SystemExit) as e:
        main(["--datasets", "cub", "--workers", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "python -m apikit.tables: error: launcher option workers=0 is not valid: expected a whole " \
                      "number >= 1."
