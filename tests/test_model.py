"""`apikit/model.py`: backbones, which weights are loaded (without a download), and the user's own checkpoints."""
import pytest
import torch
import torchvision

from apikit.model import FineGrainedNet, check_weights, create_backbone, load_weights


def test_backbones():
    body, d, loaded = create_backbone("densenet121", pretrained=False)
    assert d == 1024 and isinstance(body[-1], torch.nn.ReLU) and loaded is None
    body, d, _ = create_backbone("resnet10t", pretrained=False)  # a timm model
    assert d == 512 and body.eval()(torch.zeros(1, 3, 32, 32)).ndim == 4
    with pytest.raises(ValueError, match="neither a torchvision backbone"):
        create_backbone("not_a_model", pretrained=False)


def test_a_transformer_is_refused_with_what_apikit_needs():
    with pytest.raises(ValueError, match="vit_tiny_patch16_224.*apikit needs a CNN backbone with \\(B, C, H, W\\)"):
        create_backbone("vit_tiny_patch16_224", pretrained=False, size=64)


@pytest.fixture
def asked(monkeypatch):
    """Intercept torchvision's weights lookup: record what was asked for, build the model without a download."""
    seen = []
    real = torchvision.models.get_model

    def fake(arch, weights=None, **kw):
        seen.append(weights)
        return real(arch, weights=None, **kw)
    monkeypatch.setattr(torchvision.models, "get_model", fake)
    return seen


def test_the_paper_weights_are_imagenet1k_v1(asked):
    _, _, loaded = create_backbone("resnet101", pretrained=True)
    assert asked == [torchvision.models.ResNet101_Weights.IMAGENET1K_V1]
    assert loaded == "ResNet101_Weights.IMAGENET1K_V1"


def test_other_torchvision_weights_by_name(asked):
    assert create_backbone("resnet50", pretrained=True, weights="DEFAULT")[2] == "ResNet50_Weights.IMAGENET1K_V2"
    assert create_backbone("resnet50", pretrained=True, weights="IMAGENET1K_V2")[2] == "ResNet50_Weights.IMAGENET1K_V2"
    with pytest.raises(ValueError, match="weights='V9' is not a weights name of resnet50; choose one of DEFAULT, "
                                         "IMAGENET1K_V1, IMAGENET1K_V2, or a checkpoint file"):
        create_backbone("resnet50", pretrained=True, weights="V9")
    assert asked == [torchvision.models.ResNet50_Weights.IMAGENET1K_V2] * 2


def test_your_own_checkpoint_loads_without_its_classifier(tmp_path):
    torch.manual_seed(0)
    mine = torchvision.models.resnet18(num_classes=7)  # pretrained here on 7 other classes
    torch.save({"state_dict": mine.state_dict(), "meta": {"epochs": 3}}, tmp_path / "mine.pth")
    body, d, loaded = create_backbone("resnet18", pretrained=True, weights=str(tmp_path / "mine.pth"))
    assert d == 512 and loaded.startswith("file:mine.pth@sha256:")
    assert torch.equal(body[0].weight, mine.conv1.weight) and torch.equal(body[4][0].bn1.running_mean,
                                                                          mine.layer1[0].bn1.running_mean)


def test_a_checkpoint_of_another_arch_or_a_damaged_one_is_one_clear_error(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="does not fit ResNet.*Give the arch it was trained with"):
        create_backbone("resnet34", pretrained=True, weights=str(tmp_path / "r18.pth"))
    (tmp_path / "bad.pth").write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth cannot be read .*truncated.*save a plain state dict"):
        load_weights(torchvision.models.resnet18(), tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        create_backbone("resnet18", pretrained=True, weights=str(tmp_path / "none.pth"))


@pytest.mark.parametrize("arch, weights, error, message", [
    ("resnet50", "IMAGENET1K_V9", ValueError, "weights='IMAGENET1K_V9' is not a weights name of resnet50; choose one "
     "of DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2, or a checkpoint file."),
    ("resnet18", "/no/such/weights.pth", FileNotFoundError, "weights='/no/such/weights.pth': no such checkpoint file; "
     "give an existing file, a torchvision/timm weights name or 'packaged'."),
    ("resnet10t", "no_such_tag", ValueError, "weights='no_such_tag' is not a timm pretrained tag of resnet10t; choose "
     "one of c3_in1k, or a checkpoint file."),
    ("resnetblur18", None, ValueError, "arch='resnetblur18' has no pretrained weights in timm: train it with "
     "pretrained=False, or load weights from a checkpoint file."),
    ("resnet18", "packaged", ValueError, "weights='packaged' is not available for arch='resnet18': packaged ImageNet "
     "weights exist for tf_efficientnet_lite0."),
])
def test_weights_that_do_not_resolve_fail_before_anything_is_built(arch, weights, error, message, monkeypatch):
    """check_weights, create_backbone and check_params: one message, and no model is built or downloaded."""
    import timm
    from apikit.schema import check_params
    for module, name in ((torchvision.models, "get_model"), (timm, "create_model")):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("built a model"))
    for entry in (lambda: check_weights(arch, weights), lambda: create_backbone(arch, True, weights),
                  lambda: check_params(arch=arch, pretrained=True, weights=weights)):
        with pytest.raises(error) as e:
            entry()
        assert str(e.value) == message


def test_weights_that_resolve_pass(tmp_path):
    (tmp_path / "mine.pth").write_bytes(b"")  # only its existence is checked here
    for arch, weights in (("resnet50", None), ("resnet50", "DEFAULT"), ("resnet18", str(tmp_path / "mine.pth")),
                          ("resnet10t", None), ("resnet10t", "c3_in1k")):
        assert check_weights(arch, weights) is None


def test_fine_grained_net_is_pool_dropout_fc():
    body, d, _ = create_backbone("resnet18", pretrained=False)
    net = FineGrainedNet(body, d, 5, dropout=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), net.fc(body(x).mean((2, 3))))


def test_input_statistics_are_the_backbones_own(tmp_path):
    """torchvision: ImageNet's; timm: the pretrained_cfg of the tag asked for; packaged: the package's;
    a checkpoint file: ImageNet's unless stated; `normalize` states them."""
    from apikit.model import NORMALIZATIONS, input_stats
    mine = tmp_path / "mine.pth"
    torch.save({}, mine)
    imagenet, inception = (dict(zip(("mean", "std"), map(list, NORMALIZATIONS[n]))) for n in ("imagenet", "inception"))
    pick = lambda s: {k: s[k] for k in ("mean", "std")}
    assert pick(input_stats("resnet50", True, "IMAGENET1K_V2")) == imagenet
    assert input_stats("resnet50", True, None)["name"] == "imagenet"
    lite = input_stats("tf_efficientnet_lite0", True, None)
    assert pick(lite) == inception and lite["name"] == "inception" and "pretrained_cfg" in lite["source"]
    assert pick(input_stats("tf_efficientnet_lite0", True, "packaged")) == inception
    assert pick(input_stats("tf_efficientnet_lite0", False, None)) == inception  # the arch's own, from scratch
    assert pick(input_stats("resnet10t", True, "c3_in1k")) == imagenet
    assert pick(input_stats("tf_efficientnet_lite0", True, str(mine))) == imagenet  # a checkpoint: ImageNet's
    assert pick(input_stats("tf_efficientnet_lite0", True, str(mine), normalize="inception")) == inception
    assert input_stats("resnet18", True, None, normalize="clip")["source"] == "stated"
    with pytest.raises(ValueError, match="normalize='zca' is not valid: choose one of imagenet, inception, clip"):
        input_stats("resnet18", normalize="zca")


def test_weights_are_described_once_and_travel_with_the_model(tmp_path):
    """resolve_weights gives each kind of weights one description; create_backbone's body and the network carry
    it (model.weights_cfg, as timm's pretrained_cfg); the data's default statistics are the same constant."""
    from apikit.data.transforms import batch_tfms
    from apikit.model import NORMALIZATIONS, resolve_weights
    mine = tmp_path / "mine.pth"
    torch.save({}, mine)
    cases = {("resnet50", True, None): ("torchvision", "IMAGENET1K_V1", "imagenet"),
             ("resnet50", True, "DEFAULT"): ("torchvision", "IMAGENET1K_V2", "imagenet"),
             ("resnet18", False, None): ("scratch", None, "imagenet"),
             ("tf_efficientnet_lite0", True, None): ("timm", None, "inception"),
             ("resnet10t", True, "c3_in1k"): ("timm", "c3_in1k", "imagenet"),
             ("tf_efficientnet_lite0", True, "packaged"): ("packaged", "tf_efficientnet_lite0", "inception"),
             ("resnet18", True, str(mine)): ("file", str(mine), "imagenet")}
    for (arch, pretrained, weights), (kind, name, stats) in cases.items():
        cfg = resolve_weights(arch, pretrained, weights)
        assert (cfg.kind, cfg.name, cfg.stats["name"]) == (kind, name, stats), (arch, weights, cfg)
        assert (cfg.mean, cfg.std) == NORMALIZATIONS[stats]
    body, d, loaded = create_backbone("resnet18", pretrained=False)
    net = FineGrainedNet(body, d, 3)
    assert net.weights_cfg == resolve_weights("resnet18", False) and loaded is None
    norm = batch_tfms()[0]
    for got, want in zip((norm.mean, norm.std), NORMALIZATIONS["imagenet"]):
        torch.testing.assert_close(got.flatten().float(), torch.tensor(want))
