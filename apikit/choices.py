"""The choices of API-Net's options and the rules over their combinations. Plain Python: no torch, no fastai.

The API module (`api`) and its callback (`callback`, the module's and the pairs' options) check their options
with the rules here when they are made, and re-export the vocabulary; `apikit.schema` calls the same rules on
a run's parameters before any work, so a value an owner refuses is refused there first, with the same message.
A run hands the same options to all three, and the rules run once for them (`_once`).
"""
from .paper import METHOD, METHOD_FIXED

__all__ = ["invalid", "one_of", "check_choice", "MUTUALS", "GATES", "check_api_options", "CHOICES", "PAIRINGS",
           "check_pair_options", "MINING", "check_mining", "PRECISIONS", "OPTIMIZERS", "NORMALIZATIONS",
           "CHECKPOINT_SUFFIXES"]


def invalid(name, value, want):
    """The one message for a bad option: "name=value is not valid: want."."""
    return f"{name}={value!r} is not valid: {want}."


def one_of(choices):
    """"choose one of 'a', 'b'": what a message offers instead of a bad value."""
    return "choose one of " + ", ".join(map(repr, choices))


def check_choice(name, value, choices):
    """Raise a ValueError listing `choices` unless `value` is one of them."""
    if value not in choices:
        raise ValueError(invalid(name, value, one_of(choices)))


# The mutual vector (Eq. 1 and Table 2's ablations) and the gate (Eq. 2 and Table 3's single gate).
MUTUALS = ("mlp", "sum", "product", "subtract_square", "weight_attention", "compact_bilinear", "individual")
GATES = ("pair", "single")


# The options found valid in this process, by rule: a run passes the same ones to check_params, the callback and the
# module, and each rule runs once for them. Only valid ones are kept, so a bad value is refused every time.
_VALID = set()


def _once(rule, *args):
    """Apply `rule` to `args` unless it has passed them before."""
    try:
        key = (rule.__name__, tuple((type(a), a) for a in args))
        if key in _VALID:
            return
    except TypeError:  # an unhashable value: the rule says what is wrong with it
        return rule(*args)
    rule(*args)
    _VALID.add(key)


def check_api_options(hidden=METHOD_FIXED["hidden"], mutual=METHOD["mutual"], gate=METHOD["gate"],
                      dropout=METHOD_FIXED["dropout"]):
    """Raise a ValueError that names a bad API option and its valid values."""
    _once(_api_rule, hidden, mutual, gate, dropout)


def _api_rule(hidden, mutual, gate, dropout):
    check_choice("mutual", mutual, MUTUALS)
    check_choice("gate", gate, GATES)
    if mutual == "individual" and gate == "single":
        raise ValueError(invalid("gate", gate, "mutual='individual' has no mutual vector to share, so it needs "
                                 "gate='pair'"))
    if not (isinstance(hidden, int) and hidden > 0):
        raise ValueError(f"hidden must be a positive integer, got {hidden!r}.")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}.")


# How an anchor's intra or inter partner is chosen (Table 4); "random" (both together) is Table 4's Random row.
CHOICES = ("similar", "dissimilar", None)
PAIRINGS = CHOICES + ("random",)


def check_pair_options(intra, inter, allow_random=True):
    """Raise a ValueError for an unknown `intra`/`inter`, Random for one only, or no pair at all."""
    for name, value in (("intra", intra), ("inter", inter)):
        check_choice(name, value, PAIRINGS if allow_random else CHOICES)
    if (intra == "random") != (inter == "random"):
        raise ValueError(f"intra={intra!r}, inter={inter!r}: Table 4's Random construction takes intra='random' "
                         "and inter='random' together.")
    if intra is None and inter is None:
        raise ValueError("intra=None, inter=None: with both None there is no pair; choose at least one.")


# Multi-GPU pair mining: in each rank's batch, or across every rank's features (`apikit.distributed.global_pairs`).
MINING = ("rank", "global")


def check_mining(mining, intra, inter):
    """Raise a ValueError for an unknown miner, or pairs it cannot build (global mining has no Random pairs)."""
    _once(_mining_rule, mining, intra, inter)


def _mining_rule(mining, intra, inter):
    check_choice("mining", mining, MINING)
    if mining == "global" and "random" in (intra, inter):
        raise ValueError(f"mining='global' is not valid with intra={intra!r}, inter={inter!r}: global mining "
                         "mines Class-Image pairs across all GPUs' features, and Table 4's Random pairs are drawn "
                         "in each GPU's batch; use mining='rank' with them.")
    check_pair_options(intra, inter, allow_random=mining == "rank")


# Training precision: fp32 is the paper's; bf16/fp16 through fastai's MixedPrecision (fp16 needs a GPU).
PRECISIONS = ("fp32", "bf16", "fp16")
# Optimisers (apikit.learner.OPT_FUNCS maps each to fastai's): sgd is the paper's; adam trains from scratch
# in a few CPU epochs, where the paper's SGD (made for ImageNet-pretrained weights) does not.
OPTIMIZERS = ("sgd", "adam")

# Input statistics (mean, std per RGB channel) a backbone's weights were trained with. "imagenet": torchvision's
# weights and most others; "inception": inputs scaled to [-1, 1] (TF-trained models, e.g. EfficientNet-Lite);
# "clip": OpenAI CLIP's.
# A weights value that ends so is a checkpoint file of one's own (an existing file is one whatever its name).
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")

NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
