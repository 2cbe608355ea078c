"""The paper's facts, as data: Section 4's recipe, the ablation grid of Tables 1-5, and every reported figure.

Nothing here trains or reads files; the parameter schema (`apikit.schema`, which also says which keys make
a setting), the ablation runner and the report all read these tables, so each fact is written once.
"""

__all__ = ["RECIPE", "recipe", "MOMENTUM", "PAPER_DATASET", "PAPER_ARCH", "ABLATION_SETTING", "PAPER_WEIGHTS",
           "BEST_EPOCH", "METHOD", "METHOD_FIXED", "TABLES", "TABLE_TITLES", "REFERENCE", "PAPER", "PAPER_GAIN",
           "PAPER_SOTA", "PAPER_ARCHS", "scale_class_sizes"]

# Section 4, Implementation Details: the training recipe shared by every benchmark (Stanford Dogs differs, below).
# normalize=None: the backbone's own input statistics (torchvision's ImageNet ones, as the authors').
RECIPE = dict(pretrained=True, weights=None, normalize=None, size=448, resize=512, epochs=100, freeze_epochs=8,
              opt="sgd", lr=0.01, wd=5e-4, n_classes=30, n_images=4, precision="fp32")
_DOGS = dict(epochs=50, freeze_epochs=12, lr=0.001)
# The SGD of the recipe's opt="sgd" (Section 4), with RECIPE's weight decay.
MOMENTUM = 0.9

# weights=None means the paper's: the authors loaded torchvision 0.2's `pretrained=True`, today's IMAGENET1K_V1
# (ResNet-101: 77.4% top-1); torchvision's "DEFAULT" is IMAGENET1K_V2 (81.9%) for ResNet-50/101/152.
PAPER_WEIGHTS = "IMAGENET1K_V1"

# The authors evaluate the test set after every epoch and report the best; apikit's headline is the final
# epoch, and records the best beside it under this name.
BEST_EPOCH = "best epoch, as the authors' code selects"


# Tables 1-5 were run on CUB-200-2011 with ResNet-101 (the tables' captions): the paper's setting.
PAPER_DATASET = "cub"
PAPER_ARCH = "resnet101"


def recipe(dataset=PAPER_DATASET):
    """Section 4's configuration for `dataset` (Stanford Dogs: lr 0.001, 50 epochs, 12 frozen)."""
    return {**RECIPE, **(_DOGS if dataset == "dogs" else {}), "dataset": dataset}


# The setting of Tables 1-5: Section 4's recipe on the paper's data set and backbone.
ABLATION_SETTING = {**recipe(PAPER_DATASET), "arch": PAPER_ARCH}

# The paper's method (Section 4): what every ablation row starts from.
METHOD = dict(api=True, mutual="mlp", gate="pair", rank_weight=1.0, intra="similar", inter="similar")
# What no table varies: Eq. 10's margin epsilon (Section 4), and f_m's hidden width and the dropout rate (f_m's and
# the classifier's), as the authors' released code sets them.
METHOD_FIXED = dict(margin=0.05, hidden=512, dropout=0.5)

TABLE_TITLES = {
    "table1": "Table 1: Baseline vs API-Net",
    "table2": "Table 2: operations of the mutual vector",
    "table3_gate": "Table 3: gate vector",
    "table3_loss": "Table 3: interaction (loss)",
    "table4": "Table 4: pair construction",
    "table5_classes": "Table 5: class size N_cl (N_im = 4)",
    "table5_images": "Table 5: image size N_im (N_cl = 30)",
    "table5_both": "Table 5: (N_cl, N_im) at a fixed batch",
}

# Each table is a list of rows `(row name, overrides)`: a row's run is the base configuration with those overrides.
TABLES = {
    "table1": [("Baseline", {"api": False}), ("API-Net", {})],
    "table2": [("Individual", {"mutual": "individual"}), ("Compact Bilinear Pooling", {"mutual": "compact_bilinear"}),
               ("Subtract Square", {"mutual": "subtract_square"}), ("Sum", {"mutual": "sum"}),
               ("Product", {"mutual": "product"}), ("Weight Attention", {"mutual": "weight_attention"}),
               ("MLP", {})],
    "table3_gate": [("Single", {"gate": "single"}), ("Pair", {})],
    "table3_loss": [("L_ce", {"rank_weight": 0.0}), ("L_ce + L_rk", {})],
    "table4": [("Random", {"intra": "random", "inter": "random"}),
               ("- / D", {"intra": None, "inter": "dissimilar"}), ("- / S", {"intra": None, "inter": "similar"}),
               ("D / -", {"intra": "dissimilar", "inter": None}), ("S / -", {"intra": "similar", "inter": None}),
               ("D / D", {"intra": "dissimilar", "inter": "dissimilar"}),
               ("S / D", {"intra": "similar", "inter": "dissimilar"}),
               ("D / S", {"intra": "dissimilar", "inter": "similar"}), ("S / S", {})],
    "table5_classes": [("N_cl=10", {"n_classes": 10}), ("N_cl=20", {"n_classes": 20}), ("N_cl=30", {})],
    "table5_images": [("N_im=2", {"n_images": 2}), ("N_im=3", {"n_images": 3}), ("N_im=4", {})],
    "table5_both": [("(24, 5)", {"n_classes": 24, "n_images": 5}), ("(30, 4)", {}),
                    ("(40, 3)", {"n_classes": 40, "n_images": 3})],
}

# The row each table's effects are measured against: API-Net over the Baseline in Table 1; elsewhere each
# ablation row against the full method (the row without overrides).
REFERENCE = {t: ("Baseline" if t == "table1" else next(name for name, o in rows if not o)) for t, rows in TABLES.items()}

# Top-1 accuracy (%) reported for each row above (CUB-200-2011, ResNet-101, 448 px).
PAPER = {
    "table1": {"Baseline": 85.4, "API-Net": 88.6},
    "table2": {"Individual": 87.9, "Compact Bilinear Pooling": 88.2, "Subtract Square": 88.3, "Sum": 88.5,
               "Product": 88.4, "Weight Attention": 88.4, "MLP": 88.6},
    "table3_gate": {"Single": 87.7, "Pair": 88.6},
    "table3_loss": {"L_ce": 88.1, "L_ce + L_rk": 88.6},
    "table4": {"Random": 86.4, "- / D": 85.4, "- / S": 87.2, "D / -": 87.1, "S / -": 87.6, "D / D": 87.0,
               "S / D": 87.4, "D / S": 88.3, "S / S": 88.6},
    "table5_classes": {"N_cl=10": 83.5, "N_cl=20": 87.0, "N_cl=30": 88.6},
    "table5_images": {"N_im=2": 88.1, "N_im=3": 88.2, "N_im=4": 88.6},
    "table5_both": {"(24, 5)": 87.7, "(30, 4)": 88.6, "(40, 3)": 88.2},
}

# Each row's effect in the paper: its figure minus its table's reference row (Table 1: API-Net - Baseline = +3.2).
PAPER_GAIN = {t: {row: round(v - PAPER[t][REFERENCE[t]], 1) for row, v in rows.items() if row != REFERENCE[t]}
              for t, rows in PAPER.items()}

PAPER_ARCHS = ("resnet50", "resnet101", "densenet161")

# Tables 6-10: API-Net top-1 (%) per data set and backbone.
PAPER_SOTA = {
    "cub": {"resnet50": 87.7, "resnet101": 88.6, "densenet161": 90.0},
    "aircraft": {"resnet50": 93.0, "resnet101": 93.4, "densenet161": 93.9},
    "cars": {"resnet50": 94.8, "resnet101": 94.9, "densenet161": 95.3},
    "dogs": {"resnet50": 88.3, "resnet101": 90.3, "densenet161": 89.4},
    "nabirds": {"resnet50": 86.2, "resnet101": 86.6, "densenet161": 88.1},
}


def scale_class_sizes(overrides, n_classes, n_images):
    """Map Table 5's paper-scale (N_cl, N_im) onto a smaller base batch, keeping the ratios to (30, 4)."""
    out = dict(overrides)
    if "n_classes" in out:
        out["n_classes"] = max(2, round(out["n_classes"] * n_classes / RECIPE["n_classes"]))
    if "n_images" in out:
        out["n_images"] = max(2, round(out["n_images"] * n_images / RECIPE["n_images"]))
    return out
