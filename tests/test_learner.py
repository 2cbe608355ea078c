"""`apikit/callback.py` and `apikit/learner.py` on a tiny Learner (real fastai path, pretrained=False)."""
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.interpret import ClassificationInterpretation
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from fastai.vision.all import get_image_files

from apikit.api import APIModule
from apikit.callback import APICallback
from apikit.learner import api_learner
from apikit.model import FineGrainedNet
from apikit.loss import api_loss
from apikit.pairs import mine_pairs

from conftest import tiny_dls


@pytest.fixture(scope="module")
def dls(image_root):
    return tiny_dls(image_root, n_classes=4, n_images=4)


def learner(dls, **kwargs):
    set_seed(0)
    return api_learner(dls, arch="resnet18", pretrained=False, **kwargs)


def test_training_loss_falls(dls):
    learn = learner(dls)
    learn.fit(2, 0.01)
    losses = [v[0] for v in learn.recorder.values]
    assert losses[1] < losses[0]
    # The API module trained with the rest.
    assert isinstance(learn.model.api, APIModule)
    assert any(p is learn.model.api.mutual.fc1.weight for g in learn.opt.param_lists for p in g)
    assert learn.model.api.mutual.fc1.weight.grad is not None


def test_the_callback_trains_on_eq8_over_mined_pairs(dls):
    learn = learner(dls, dropout=0.0)
    cb, model = learn.api_callback, learn.model.eval()
    x, y = dls.one_batch()
    cb.before_train()
    assert learn.loss_func == cb.lf
    got = learn.loss_func(model(x), y)
    cb.after_train()
    feats = model.pool(model.body(x))
    idx1, idx2 = mine_pairs(feats, y)
    assert len(idx1) == 2 * len(y)  # an intra and an inter pair per image
    x1s, x1o, x2s, x2o = model.api(feats[idx1], feats[idx2])
    plain = lambda t: t.as_subclass(torch.Tensor)
    want = api_loss(plain(model.fc(torch.cat([x1s, x2s]))), plain(model.fc(torch.cat([x1o, x2o]))),
                    plain(torch.cat([y[idx1], y[idx2]])))
    torch.testing.assert_close(got, want)


def test_validation_and_inference_run_the_plain_cnn(dls):
    learn = learner(dls)
    learn.fit(1, 0.01)
    preds, targs = learn.get_preds()
    model = learn.model.eval()
    xs = torch.cat([x for x, _ in dls.valid])
    with torch.no_grad():
        plain = model.fc(model.pool(model.body(xs))).softmax(1)
    torch.testing.assert_close(preds, plain, atol=1e-5, rtol=1e-4)
    assert learn.loss_func is not learn.api_callback.lf and not learn.api_callback.run_valid


def test_export_load_predict(dls, image_root, tmp_path):
    learn = learner(dls)
    learn.fit(1, 0.01)
    learn.path = tmp_path
    learn.export("model.pkl")
    loaded = load_learner(tmp_path / "model.pkl")
    item = get_image_files(image_root / "valid")[0]
    cls, idx, probs = loaded.predict(item)
    cls0, idx0, probs0 = learn.predict(item)
    assert cls == cls0 and idx == idx0
    torch.testing.assert_close(probs, probs0)
    assert isinstance(loaded.model, FineGrainedNet)


def test_cancelled_fit_restores_the_learner(dls):
    class Stop(Callback):
        def after_loss(self): raise CancelFitException()
    learn = learner(dls)
    old = learn.loss_func
    learn.fit(1, 0.01, cbs=Stop())
    assert learn.loss_func is old and learn.api_callback.hook.removed


def test_baseline_is_identical_but_for_the_callback(dls):
    base, api = learner(dls, api=False), learner(dls)
    assert not hasattr(base, "api") and not hasattr(base.model, "api")
    assert type(base.model) is type(api.model)
    assert [n for n, _ in base.model.named_parameters()] == [n for n, _ in api.model.named_parameters()
                                                            if not n.startswith("api.")]
    assert base.loss_func.__class__ is api.loss_func.__class__


def test_frozen_backbone_computes_no_gradient_but_batchnorm_stats_adapt(dls):
    learn = learner(dls)
    learn.freeze()
    bn = learn.model.body[1]
    mean0 = bn.running_mean.clone()
    learn.fit(1, 0.01)
    assert all(p.grad is None for p in learn.model.body.parameters())
    assert not any(p.requires_grad for p in learn.model.body.parameters())
    assert not torch.equal(mean0, bn.running_mean)
    assert learn.model.fc.weight.grad is not None


def test_fit_paper_schedule(dls):
    learn = learner(dls)
    learn.fit_paper(epochs=3, lr=0.02, freeze_epochs=1)
    lrs = learn.recorder.lrs
    assert lrs[0] == pytest.approx(0.02) and lrs[-1] < 0.02 * 0.1
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # cosine annealing decreases monotonically
    assert learn.opt.hypers[0]["mom"] == 0.9 and learn.opt.hypers[0]["wd"] == 5e-4
    assert learn.backbone_frozen is False and all(p.requires_grad for p in learn.model.body.parameters())


def test_fastai_features_keep_working(dls):
    learn = learner(dls)
    learn.lr_find(num_it=5, show_plot=False)
    learn.fit_one_cycle(1, 0.01)
    learn.to_bf16()
    learn.fit(1, 0.01)
    learn.to_fp32()
    interp = ClassificationInterpretation.from_learner(learn)
    preds, targs = learn.get_preds()  # the plain CNN: Interpretation sees what evaluation sees
    want = np.zeros((dls.c, dls.c), dtype=int)
    np.add.at(want, (targs.numpy(), preds.argmax(1).numpy()), 1)
    assert (interp.confusion_matrix() == want).all() and want.sum() == len(dls.valid_ds)
    learn.show_results(max_n=2)


def test_callback_options_are_checked_up_front(dls):
    with pytest.raises(ValueError, match="mutual='x' is not valid"):
        learner(dls, mutual="x")  # before the backbone is built, and so before any fit
    with pytest.raises(ValueError, match="intra='near' is not valid"):
        APICallback(intra="near")
    with pytest.raises(ValueError, match="takes intra='random' and inter='random' together"):
        APICallback(intra="random")


@pytest.mark.parametrize("options, message", [
    (dict(mining="global", intra="random", inter="random"), "mining='global' is not valid with intra='random', "
     "inter='random': global mining mines Class-Image pairs across all GPUs' features"),
    (dict(mining="global", intra="bogus"), "intra='bogus' is not valid: choose one of 'similar', 'dissimilar', None"),
    (dict(mining="everywhere"), "mining='everywhere' is not valid: choose one of 'rank', 'global'."),
    (dict(mutual="individual", gate="single"), "gate='single' is not valid: mutual='individual' has no mutual vector"),
])
def test_the_entry_points_refuse_what_check_params_refuses(dls, options, message, monkeypatch):
    """APICallback, api_learner and check_params: one rule, one message, before any backbone is built."""
    import apikit.learner
    from apikit.schema import check_params
    monkeypatch.setattr(apikit.learner, "create_backbone", lambda *a, **k: pytest.fail("built a backbone"))
    for entry in (lambda: APICallback(**options), lambda: learner(dls, **options), lambda: check_params(**options)):
        with pytest.raises(ValueError) as e:
            entry()
        assert message in str(e.value)


def test_a_run_checks_its_api_options_once(image_root, tmp_path, monkeypatch):
    """check_params (before any write), the callback and the API module get a run's options: each rule runs once, and
    a bad value is refused every time it is given."""
    import functools
    import apikit.choices as options
    from apikit.experiment import train
    ran = []
    for name in ("_api_rule", "_mining_rule"):
        rule = getattr(options, name)
        monkeypatch.setattr(options, name, functools.wraps(rule)(lambda *a, rule=rule: ran.append(rule.__name__) or
                                                                 rule(*a)))
    monkeypatch.setattr(options, "_VALID", set())
    rec = train(dataset="folder", data_path=str(image_root), size=16, resize=18, epochs=1, n_classes=2, n_images=2,
                mutual="sum", intra="dissimilar", run_dir=str(tmp_path / "run"))
    assert rec["status"] == "finished" and ran == ["_api_rule", "_mining_rule"]
    ran.clear()
    for _ in range(2):  # the pairs' defaults are new here, and checked once; the bad gate is refused both times
        with pytest.raises(ValueError, match="gate='single' is not valid"):
            APICallback(mutual="individual", gate="single")
    assert ran == ["_mining_rule", "_api_rule", "_api_rule"]


def test_api_learner_passes_the_callbacks_options_on(dls):
    """The callback's and the module's options by name, in api_learner's signature as fastai's `delegates` shows them;
    any other keyword goes to the Learner, and the Baseline has no callback to take them."""
    import inspect
    assert {"rank_weight", "margin", "intra", "inter", "mining", "miner", "hidden", "mutual", "gate"} <= set(
        inspect.signature(api_learner).parameters)
    learn = learner(dls, hidden=7, margin=0.1, intra="dissimilar", dropout=0.0, model_dir="weights")
    cb, api = learn.api_callback, learn.model.api
    assert (cb.margin, cb.intra, cb.inter, api.mutual.fc1.out_features, api.mutual.drop.p) == (0.1, "dissimilar",
                                                                                               "similar", 7, 0.0)
    assert learn.model.drop.p == 0.0 and str(learn.model_dir) == "weights"
    baseline = learner(dls, api=False, mutual="sum")
    assert not hasattr(baseline.model, "api") and not any(isinstance(c, APICallback) for c in baseline.cbs)


def test_global_mining_uses_the_global_miner():
    from apikit.distributed import global_pairs
    assert APICallback(mining="global").miner is global_pairs and APICallback().miner is None


def test_each_optimiser_name_has_its_fastai_optimiser():
    from apikit.learner import OPT_FUNCS
    from apikit.choices import OPTIMIZERS
    assert tuple(OPT_FUNCS) == OPTIMIZERS


def test_random_pairs_and_ablation_options_train(dls):
    learn = learner(dls, intra="random", inter="random", mutual="sum", gate="single", rank_weight=0.0)
    learn.fit(1, 0.01)
    assert torch.isfinite(torch.tensor(learn.recorder.values[0][0]))
    # The last batch was paired at random (Table 4): 2B pairs, no self-pairs, not the anchor-ordered mining.
    b, n = learn.api_callback.batch, len(learn.api_callback.batch["labels"])
    assert len(b["idx1"]) == 2 * n and b["valid"].all() and (b["idx1"] != b["idx2"]).all()
    assert b["idx1"].tolist() != list(range(n)) * 2


def test_test_predictions_do_not_depend_on_batch_size_or_order(dls):
    learn = learner(dls)
    learn.fit(1, 0.01)
    ref, _ = learn.get_preds()
    for bs in (1, 3, 7):
        p, _ = learn.get_preds(dl=dls.valid.new(bs=bs))
        torch.testing.assert_close(p, ref, atol=1e-5, rtol=1e-4)
    order = torch.randperm(len(dls.valid_ds), generator=torch.Generator().manual_seed(0)).tolist()
    items = [dls.valid_ds.items[i] for i in order]
    p, _ = learn.get_preds(dl=dls.test_dl(items, with_labels=True))
    torch.testing.assert_close(p, ref[order], atol=1e-5, rtol=1e-4)


def test_evaluation_runs_in_eval_mode(dls):
    seen = []
    class Spy(Callback):
        def before_batch(self):
            seen.append((self.training, self.learn.model.training,
                         any(m.training for m in self.learn.model.modules())))
    learn = learner(dls)
    learn.fit(1, 0.01, cbs=Spy())
    assert (True, True, True) in seen and (False, False, False) in seen
    seen.clear()
    learn.get_preds(cbs=Spy())
    assert seen and all(s == (False, False, False) for s in seen)


def test_anchors_without_partners_add_nothing_to_the_loss(dls):
    """A batch with a singleton class: the callback's fixed-size loss equals Eq. 8 over the mined pairs only."""
    learn = learner(dls, dropout=0.0)
    cb, model = learn.api_callback, learn.model.eval()
    x, y = dls.one_batch()
    y = y.clone()
    others = (y == y[0]) & (torch.arange(len(y)) > 0)
    y[others] = (y[0] + 1) % dls.c  # image 0 is now the only one of its class in the batch
    cb.before_train()
    got = learn.loss_func(model(x), y)
    cb.after_train()
    assert not cb.batch["valid"][0] and cb.batch["valid"].sum() == 2 * len(y) - 1
    plain = lambda t: t.as_subclass(torch.Tensor)
    feats, y = plain(model.pool(model.body(x))), plain(y)
    idx1, idx2 = mine_pairs(feats, y)
    x1s, x1o, x2s, x2o = model.api(feats[idx1], feats[idx2])
    want = api_loss(plain(model.fc(torch.cat([x1s, x2s]))), plain(model.fc(torch.cat([x1o, x2o]))),
                    torch.cat([y[idx1], y[idx2]]))
    torch.testing.assert_close(got, want)


def test_fast_path_options(dls):
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision
    learn = learner(dls, precision="bf16", channels_last=True)
    assert isinstance(learn.mixed_precision, MixedPrecision) and isinstance(learn.channels_last, ChannelsLast)
    learn.fit(1, 0.01)
    conv = learn.model.body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="precision='fp8' is not valid: choose one of 'fp32', 'bf16', 'fp16'."):
        learner(dls, precision="fp8")
    with pytest.raises(ValueError, match="opt='lamb' is not valid: choose one of 'sgd', 'adam'."):
        learner(dls, opt="lamb")
    # compile=True compiles the backbone in place (running inductor is too slow for this suite on 2 cores).
    compiled = learner(dls, compile=True)
    assert compiled.model.body._compiled_call_impl is not None and learn.model.body._compiled_call_impl is None
    assert list(compiled.model.state_dict()) == list(learner(dls).model.state_dict())  # names unchanged
    from apikit.gradcache import GradCache
    chunked = learner(dls, chunk_size=5)
    assert isinstance(chunked.model.body, GradCache) and chunked.model.body.chunk_size == 5


def test_unfreeze_keeps_the_heads_momentum_as_the_authors_code(dls_tensors):
    """fit_paper through the unfreeze equals the authors' recipe written in plain torch on the same batches:
    one SGD for the head (API module + classifier), one for the backbone, per-iteration cosine for both, the
    backbone's step skipped while frozen, and the head's momentum kept across the unfreeze."""
    import copy, math
    from apikit.step import pair_step
    dls, batches = dls_tensors
    epochs, freeze_epochs, lr = 3, 1, 0.05
    learn = learner(dls, dropout=0.0)
    model = copy.deepcopy(learn.model)  # the same initial weights
    learn.fit_paper(epochs, lr, freeze_epochs)

    head = [p for n, p in model.named_parameters() if not n.startswith("body.")]
    opt_head = torch.optim.SGD(head, lr, momentum=0.9, weight_decay=5e-4)
    opt_body = torch.optim.SGD(model.body.parameters(), lr, momentum=0.9, weight_decay=5e-4)
    total = epochs * len(batches)
    for epoch in range(epochs):
        model.train()
        for i, (x, y) in enumerate(batches):
            t = epoch * len(batches) + i
            for opt in (opt_head, opt_body):
                for group in opt.param_groups:
                    group["lr"] = lr * (1 + math.cos(math.pi * t / total)) / 2
            loss, _ = pair_step(model, model.pool(model.body(x)), y)
            opt_head.zero_grad()
            opt_body.zero_grad()
            loss.backward()
            if epoch >= freeze_epochs:
                opt_body.step()
            opt_head.step()
    got, want = dict(learn.model.named_parameters()), dict(model.named_parameters())
    for name in want:
        torch.testing.assert_close(got[name].detach(), want[name].detach(), rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture
def dls_tensors():
    """Two fixed training batches of 4 classes x 2 images (no shuffling), as plain tensors."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    g = torch.Generator().manual_seed(0)
    items = [(torch.randn(3, 16, 16, generator=g) + c, torch.tensor(c)) for _ in range(4) for c in range(4)]
    items = [items[k] for k in sorted(range(16), key=lambda k: (k // 8, items[k][1].item()))]
    dls = DataLoaders(DataLoader(items, bs=8, shuffle=False), DataLoader(items, bs=8), device="cpu")
    dls.c = 4
    return dls, [b for b in DataLoader(items, bs=8, shuffle=False)]
