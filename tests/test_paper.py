"""`apikit/paper.py`: the paper's facts, checked against the paper's text."""
from apikit.paper import (ABLATION_SETTING, METHOD, METHOD_FIXED, PAPER, PAPER_ARCH, PAPER_DATASET, PAPER_GAIN,
                          REFERENCE, TABLES, recipe, scale_class_sizes)


def test_each_table_has_its_figures_and_reference():
    assert set(TABLES) == set(PAPER)
    for table, rows in TABLES.items():
        assert [name for name, _ in rows] == list(PAPER[table])
        assert REFERENCE[table] in PAPER[table]
    assert REFERENCE["table1"] == "Baseline" and REFERENCE["table2"] == "MLP" and REFERENCE["table4"] == "S / S"


def test_gains_are_differences_to_the_reference_row():
    assert PAPER_GAIN["table1"] == {"API-Net": 3.2}
    assert PAPER_GAIN["table3_loss"] == {"L_ce": -0.5} and PAPER_GAIN["table4"]["- / D"] == -3.2


def test_section_4_recipe():
    assert recipe("cub")["lr"] == 0.01 and recipe("cub")["epochs"] == 100 and recipe("cub")["freeze_epochs"] == 8
    assert (recipe("dogs")["lr"], recipe("dogs")["epochs"], recipe("dogs")["freeze_epochs"]) == (0.001, 50, 12)
    assert recipe("aircraft")["precision"] == "fp32" and recipe("aircraft")["weights"] is None


def test_table_5_scales_to_a_smaller_batch():
    assert scale_class_sizes({"n_classes": 10}, 8, 4) == {"n_classes": 3}
    assert scale_class_sizes({"n_images": 2}, 8, 2) == {"n_images": 2}


def test_the_papers_setting_is_written_once():
    """CUB-200-2011 with ResNet-101 (Tables 1-5's captions): the report's setting, the preset's and the CLIs' --paper
    defaults read it here."""
    from apikit.schema import paper_params
    from apikit.report import match
    assert (PAPER_DATASET, PAPER_ARCH) == ("cub", "resnet101") and recipe() == recipe("cub")
    assert ABLATION_SETTING == {**recipe("cub"), "arch": "resnet101"} and match.ABLATION_SETTING is ABLATION_SETTING
    p = paper_params()
    assert {k: p[k] for k in ABLATION_SETTING} == ABLATION_SETTING
    assert p["run_dir"] == "reports/runs/paper/cub-resnet101/seed-0"


def test_the_methods_defaults_are_the_papers():
    """Section 4 and the authors' code: the defaults of the API module, its callback and api_learner."""
    import inspect
    from apikit.learner import api_learner
    assert METHOD_FIXED == dict(margin=0.05, hidden=512, dropout=0.5)
    defaults = {k: v.default for k, v in inspect.signature(api_learner).parameters.items()}
    assert {k: defaults[k] for k in (*METHOD, *METHOD_FIXED)} == {**METHOD, **METHOD_FIXED}
    assert (defaults["arch"], defaults["opt"], defaults["precision"]) == ("resnet101", "sgd", "fp32")
