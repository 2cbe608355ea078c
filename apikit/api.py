"""The Attentive Pairwise Interaction module (Eq. 1-6) and its ablations (Tables 2-3).

Plain torch: no fastai import, so the module plugs into any training loop.
"""
import torch
from torch import nn

from .choices import GATES, MUTUALS, check_api_options as check_options
from .paper import METHOD, METHOD_FIXED

__all__ = ["APIModule", "check_options", "MUTUALS", "GATES"]

# The paper's f_m width and dropout rate, the defaults of every f_m below.
HIDDEN, DROPOUT = METHOD_FIXED["hidden"], METHOD_FIXED["dropout"]


class MutualMLP(nn.Module):
    """Eq. 1 with f_m = FC(2D->hidden) -> dropout -> FC(hidden->D), the paper's *MLP*."""

    def __init__(self, dim, hidden=HIDDEN, dropout=DROPOUT):
        super().__init__()
        # No activation between the layers: the authors' released code has none.
        self.fc1, self.drop, self.fc2 = nn.Linear(2 * dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, dim)

    def forward(self, x1, x2):
        return self.fc2(self.drop(self.fc1(torch.cat([x1, x2], dim=1))))


class WeightAttention(nn.Module):
    """Table 2 (IV): [w1, w2] = softmax(f_w([x1, x2])), x_m = w1*x1 + w2*x2."""

    def __init__(self, dim, hidden=HIDDEN, dropout=DROPOUT):
        super().__init__()
        # The same two-layer shape as f_m, ending in the two weights.
        self.fc1, self.drop, self.fc2 = nn.Linear(2 * dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, 2)

    def forward(self, x1, x2):
        w = self.fc2(self.drop(self.fc1(torch.cat([x1, x2], dim=1)))).softmax(dim=1)
        return w[:, :1] * x1 + w[:, 1:] * x2


class CompactBilinear(nn.Module):
    """Table 2 (II): Tensor Sketch compact bilinear pooling of x1 and x2 (Gao et al. 2016), to D dims."""

    def __init__(self, dim, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # Random hashes h: [D] -> [D] and signs s in {-1, +1}, fixed at construction and saved with the weights.
        for k in (1, 2):
            self.register_buffer(f"h{k}", torch.randint(dim, (dim,), generator=g))
            self.register_buffer(f"s{k}", torch.randint(2, (dim,), generator=g).float() * 2 - 1)
        self.dim = dim

    def sketch(self, x, h, s):
        """Count sketch: out[:, h[c]] += s[c] * x[:, c]."""
        return x.new_zeros(x.shape[0], self.dim).index_add_(1, h, x * s)

    def forward(self, x1, x2):
        # The sketch of the outer product is the circular convolution of the two sketches.
        # FFTs need at least float32 (no half-precision FFT for arbitrary sizes); float64 stays float64.
        wide = torch.promote_types(x1.dtype, torch.float32)
        f1 = torch.fft.rfft(self.sketch(x1.to(wide), self.h1, self.s1.to(wide)), dim=1)
        f2 = torch.fft.rfft(self.sketch(x2.to(wide), self.h2, self.s2.to(wide)), dim=1)
        return torch.fft.irfft(f1 * f2, n=self.dim, dim=1).to(x1.dtype)


class Elementwise(nn.Module):
    """Table 2 (III): a parameter-free x_m = op(x1, x2)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x1, x2):
        return self.op(x1, x2)


def _sum(x1, x2): return x1 + x2
def _product(x1, x2): return x1 * x2
def _subtract_square(x1, x2): return (x1 - x2) ** 2


class Individual(nn.Module):
    """Table 2 (I): no mutual vector; each image gets x~_i = f_m(x_i) (returned as a pair)."""

    def __init__(self, dim, hidden=HIDDEN, dropout=DROPOUT):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(dim, hidden), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x1, x2):
        return self.f(x1), self.f(x2)


def pair_gate(xm, x1, x2):
    """Eq. 2: g_i = sigmoid(x_m * x_i)."""
    return torch.sigmoid(xm * x1), torch.sigmoid(xm * x2)


def single_gate(xm, x1, x2):
    """Table 3 (I): one gate g_m = sigmoid(x_m) for both images."""
    g = torch.sigmoid(xm)
    return g, g


def individual_gate(xm, x1, x2):
    """Table 2 (I): g_i = sigmoid(f_m(x_i))."""
    return torch.sigmoid(xm[0]), torch.sigmoid(xm[1])


class APIModule(nn.Module):
    """Attentive Pairwise Interaction (Eq. 1-6): (x1, x2) -> (x1_self, x1_other, x2_self, x2_other)."""

    def __init__(self, dim, hidden=HIDDEN, mutual=METHOD["mutual"], gate=METHOD["gate"], dropout=DROPOUT):
        super().__init__()
        check_options(hidden, mutual, gate, dropout)
        if not (isinstance(dim, int) and dim > 0):
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        self.dim, self.mutual_name, self.gate_name = dim, mutual, gate
        self.mutual = {
            "mlp": lambda: MutualMLP(dim, hidden, dropout),
            "sum": lambda: Elementwise(_sum),
            "product": lambda: Elementwise(_product),
            "subtract_square": lambda: Elementwise(_subtract_square),
            "weight_attention": lambda: WeightAttention(dim, hidden, dropout),
            "compact_bilinear": lambda: CompactBilinear(dim),
            "individual": lambda: Individual(dim, hidden, dropout),
        }[mutual]()
        self.gate = individual_gate if mutual == "individual" else {"pair": pair_gate, "single": single_gate}[gate]

    def forward(self, x1, x2):
        xm = self.mutual(x1, x2)                                      # Eq. 1
        g1, g2 = self.gate(xm, x1, x2)                                # Eq. 2
        return x1 + x1 * g1, x1 + x1 * g2, x2 + x2 * g2, x2 + x2 * g1  # Eq. 3, 5, 4, 6

    def gates(self, x1, x2):
        """The gate vectors (g1, g2) of Eq. 2, for visualisation and diagnostics."""
        return self.gate(self.mutual(x1, x2), x1, x2)

    def extra_repr(self):
        return f"dim={self.dim}, mutual={self.mutual_name!r}, gate={self.gate_name!r}"
