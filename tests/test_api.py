"""Eq. 1-6 and the Table 2-3 ablations of `apikit/api.py`, against values computed here by hand."""
import pytest
import torch

from apikit.api import GATES, MUTUALS, APIModule

D = 6


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, D, generator=g), torch.randn(3, D, generator=g)


def sig(t):
    return 1 / (1 + torch.exp(-t))


def interact(x1, x2, g1, g2):
    """Eq. 3-6 written out."""
    return x1 + x1 * g1, x1 + x1 * g2, x2 + x2 * g2, x2 + x2 * g1


def test_mlp_mutual_vector_and_pair_gate(x):
    x1, x2 = x
    m = APIModule(D, hidden=5).eval()
    f = m.mutual
    # Eq. 1: FC(2D->hidden) then FC(hidden->D), no activation in between.
    h = torch.cat([x1, x2], 1) @ f.fc1.weight.T + f.fc1.bias
    xm = h @ f.fc2.weight.T + f.fc2.bias
    torch.testing.assert_close(m.mutual(x1, x2), xm)
    assert m.mutual(x1, x2).shape == (3, D)
    g1, g2 = sig(xm * x1), sig(xm * x2)  # Eq. 2
    for got, want in zip(m(x1, x2), interact(x1, x2, g1, g2)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.stack(m.gates(x1, x2)), torch.stack([g1, g2]))


def test_mlp_dropout_acts_between_the_layers_only_in_training(x):
    x1, x2 = x
    m = APIModule(D, hidden=64, dropout=0.5)
    assert isinstance(m.mutual.drop, torch.nn.Dropout) and m.mutual.drop.p == 0.5
    m.train()
    torch.manual_seed(0)
    a = m.mutual(x1, x2)
    torch.manual_seed(1)
    assert not torch.allclose(a, m.mutual(x1, x2))
    m.eval()
    torch.testing.assert_close(m.mutual(x1, x2), m.mutual(x1, x2))


@pytest.mark.parametrize("mutual,op", [
    ("sum", lambda a, b: a + b),
    ("product", lambda a, b: a * b),
    ("subtract_square", lambda a, b: (a - b) ** 2),
])
def test_elementwise_mutual_vectors(x, mutual, op):
    x1, x2 = x
    m = APIModule(D, mutual=mutual)
    xm = op(x1, x2)
    torch.testing.assert_close(m.mutual(x1, x2), xm)
    for got, want in zip(m(x1, x2), interact(x1, x2, sig(xm * x1), sig(xm * x2))):
        torch.testing.assert_close(got, want)
    assert list(m.parameters()) == []


def test_weight_attention(x):
    x1, x2 = x
    m = APIModule(D, mutual="weight_attention").eval()
    f = m.mutual
    assert f.fc1.out_features == 512 and f.fc2.out_features == 2
    w = ((torch.cat([x1, x2], 1) @ f.fc1.weight.T + f.fc1.bias) @ f.fc2.weight.T + f.fc2.bias).softmax(1)
    torch.testing.assert_close(m.mutual(x1, x2), w[:, :1] * x1 + w[:, 1:] * x2)


def test_compact_bilinear_is_a_count_sketch_of_the_outer_product(x):
    x1, x2 = x
    m = APIModule(D, mutual="compact_bilinear")
    f = m.mutual
    h1, h2, s1, s2 = f.h1.tolist(), f.h2.tolist(), f.s1.tolist(), f.s2.tolist()
    want = torch.zeros(3, D)
    for n in range(3):
        for a in range(D):
            for b in range(D):
                want[n, (h1[a] + h2[b]) % D] += s1[a] * s2[b] * x1[n, a] * x2[n, b]
    torch.testing.assert_close(m.mutual(x1, x2), want, atol=1e-5, rtol=1e-5)
    # The hashes are buffers: saved with the weights, identical across constructions.
    assert "mutual.h1" in m.state_dict()
    torch.testing.assert_close(APIModule(D, mutual="compact_bilinear").mutual.h1, f.h1)


def test_individual_has_no_mutual_vector(x):
    x1, x2 = x
    m = APIModule(D, hidden=5, mutual="individual").eval()
    f = m.mutual.f
    fm = lambda v: (v @ f[0].weight.T + f[0].bias) @ f[2].weight.T + f[2].bias
    g1, g2 = sig(fm(x1)), sig(fm(x2))  # g_i = sigmoid(f_m(x_i)), no product with x_i
    for got, want in zip(m(x1, x2), interact(x1, x2, g1, g2)):
        torch.testing.assert_close(got, want)
    # Image 1's gate does not depend on image 2.
    torch.testing.assert_close(m(x1, x2)[0], m(x1, torch.randn(3, D))[0])


def test_single_gate(x):
    x1, x2 = x
    m = APIModule(D, mutual="sum", gate="single")
    g = sig(x1 + x2)
    x1_self, x1_other, x2_self, x2_other = m(x1, x2)
    torch.testing.assert_close(x1_self, x1 + x1 * g)
    torch.testing.assert_close(x2_self, x2 + x2 * g)
    torch.testing.assert_close(x1_other, x1_self)
    torch.testing.assert_close(x2_other, x2_self)


@pytest.mark.parametrize("mutual", MUTUALS)
@pytest.mark.parametrize("gate", GATES)
def test_every_option_gives_four_features_of_dim_D(x, mutual, gate):
    if mutual == "individual" and gate == "single":
        with pytest.raises(ValueError, match="needs gate='pair'"):
            APIModule(D, mutual=mutual, gate=gate)
        return
    x1, x2 = (v.clone().requires_grad_() for v in x)
    outs = APIModule(D, mutual=mutual, gate=gate)(x1, x2)
    assert len(outs) == 4 and all(o.shape == (3, D) for o in outs)
    sum(o.sum() for o in outs).backward()  # differentiable end to end


def test_unknown_options_list_the_valid_values():
    with pytest.raises(ValueError, match=r"mutual='foo' is not valid: choose one of 'mlp', 'sum', 'product'"):
        APIModule(D, mutual="foo")
    with pytest.raises(ValueError, match=r"gate='both' is not valid: choose one of 'pair', 'single'"):
        APIModule(D, gate="both")
    with pytest.raises(ValueError, match="dropout must be a number in"):
        APIModule(D, dropout=1.5)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        APIModule(0)


def test_the_run_parameters_refuse_what_the_module_refuses():
    """check_params calls the module's own rule: the same message, before any data loads."""
    from apikit.schema import check_params
    with pytest.raises(ValueError) as module:
        APIModule(D, mutual="individual", gate="single")
    with pytest.raises(ValueError) as params:
        check_params(mutual="individual", gate="single")
    assert str(params.value) == str(module.value) == ("gate='single' is not valid: mutual='individual' has no mutual "
                                                      "vector to share, so it needs gate='pair'.")


def test_plain_torch_without_fastai():
    import subprocess, sys
    code = "import sys, apikit.api, apikit.pairs, apikit.loss; assert 'fastai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("mutual", MUTUALS)
def test_gradcheck_in_float64(mutual):
    """Every mutual vector works after .double() and its analytic gradients match finite differences."""
    torch.manual_seed(0)
    m = APIModule(D, hidden=4, mutual=mutual, dropout=0.0).double().eval()
    x1 = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, D, dtype=torch.float64, requires_grad=True)
    assert all(t.dtype == torch.float64 for t in m(x1, x2))
    assert torch.autograd.gradcheck(lambda a, b: m(a, b), (x1, x2))


@pytest.mark.parametrize("mutual", MUTUALS)
def test_bf16_autocast_still_works(mutual, x):
    m = APIModule(D, hidden=4, mutual=mutual)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(*x)
    assert all(o.shape == (3, D) and torch.isfinite(o.float()).all() for o in out)
