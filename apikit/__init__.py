"""apikit: API-Net (Attentive Pairwise Interaction, AAAI 2020) for fine-grained classification on fastai."""
import warnings

from .lazy import lazy_exports

# fastai's layers call torch.jit.script at import time; torch 2.14 deprecates it. Noise, not advice for our users.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"

# Lazy exports: `from apikit.api import APIModule` must work in any torch loop without importing fastai.
_EXPORTS = {"APIModule": "api", "api_loss": "loss", "mine_pairs": "pairs", "random_pairs": "pairs",
            "ClassBalancedDL": "sampler", "APICallback": "callback", "api_learner": "learner",
            "FineGrainedNet": "model", "pair_step": "step", "get_dls": "data"}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
