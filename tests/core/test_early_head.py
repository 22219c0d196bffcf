import pytest
import torch
import torchvision
from torch import nn

from core import EarlyHead, saliency_map


def make():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    head = EarlyHead(model, "layer1", num_classes=10)
    return model, head


def test_infers_channels_and_stays_out_of_the_backbone():
    model, head = make()
    assert head.fc.in_features == 64
    assert not any(k.startswith("fc.weight") and v.shape[1] == 64 for k, v in model.state_dict().items())
    assert set(head.state_dict()) == {"fc.weight", "fc.bias"}
    assert all(not n.startswith("early") for n, _ in model.named_modules())


def test_missing_hook_point():
    with pytest.raises(ValueError, match="'layer9'"):
        EarlyHead(torchvision.models.resnet18(), "layer9", 10)


def test_aux_loss_trains_the_head():
    model, head = make()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    logits = model(x)
    aux = head.loss(y)
    ref = 0.3 * nn.functional.cross_entropy(head(head_features(model, x)), y)
    assert torch.allclose(aux, ref, atol=1e-6)
    (nn.functional.cross_entropy(logits, y) + aux).backward()
    assert head.fc.weight.grad is not None and head.fc.weight.grad.abs().sum() > 0
    assert model.layer1[0].conv1.weight.grad.abs().sum() > 0


def head_features(model, x):
    feats = {}
    h = model.layer1.register_forward_hook(lambda m, a, o: feats.setdefault("f", o))
    with torch.no_grad():
        model(x)
    h.remove()
    return feats["f"]


def test_saliency_from_aux_logits_stops_at_the_hook():
    model, head = make()
    calls = []
    model.layer2.register_forward_hook(lambda *a: calls.append(1))
    model.train()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3])
    sal = saliency_map(model, x, y, early_head=head)
    assert calls == []  # nothing after the hook point ran
    assert all(p.grad is None for p in list(model.parameters()) + list(head.parameters()))
    # reference: the aux logits of a manual truncated forward in eval mode
    model.eval()
    xr = x.clone().requires_grad_(True)
    f = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(xr)))))
    logits = head.fc(f.mean((2, 3)))
    logits[torch.arange(3), y].sum().backward()
    assert torch.allclose(sal, xr.grad.abs().amax(1), atol=1e-6)
    model.train()
    assert model.training and model.layer1.training


def test_remove_detaches_hook():
    model, head = make()
    head.remove()
    model(torch.randn(2, 3, 32, 32))
    with pytest.raises(RuntimeError, match="no captured features"):
        head()


class Emit(nn.Module):
    """Returns the fixed features ``f`` (batch 1), kept on the autograd graph of ``x``."""

    def __init__(self, f):
        super().__init__()
        self.register_buffer("f", f)

    def forward(self, x):
        return self.f + 0 * x.sum()


class Probe(nn.Module):
    """A backbone whose ``feat`` module outputs ``f``; ``extra`` attributes play the model's declarations."""

    def __init__(self, f, **extra):
        super().__init__()
        self.feat = Emit(f)
        for k, v in extra.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.feat(x).flatten(1)[:, :3]


def identity_head(model, channels, **kw):
    head = EarlyHead(model, "feat", channels, in_channels=channels, **kw)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(channels))
        head.fc.bias.zero_()
    return head


def test_each_layout_pools_the_image_positions_exactly():
    x = torch.zeros(1, 3, 4, 4)
    nchw = torch.arange(12.0).reshape(1, 3, 2, 2)  # channel means 1.5, 5.5, 9.5
    nhwc = torch.arange(12.0).reshape(1, 2, 2, 3)  # channel c: mean of c, 3 + c, 6 + c, 9 + c
    tokens = torch.tensor([[[104.0, -95.0], [1, 2], [3, 4], [5, 6], [7, 8]]])  # a class token, then 4 patches
    cases = [(nchw, {"layout": "nchw"}, [1.5, 5.5, 9.5]), (nhwc, {"layout": "nhwc"}, [4.5, 5.5, 6.5]),
             (tokens, {"prefix_tokens": 1}, [4.0, 5.0]), (tokens, {"prefix_tokens": 0}, [24.0, -15.0])]
    for f, kw, expected in cases:
        model = Probe(f)
        head = identity_head(model, len(expected), **kw)
        model(x)
        assert head().tolist() == [expected]
    model = Probe(tokens, num_prefix_tokens=1)  # declared as timm does
    head = identity_head(model, 2)
    model(x)
    assert head().tolist() == [[4.0, 5.0]]


def test_layout_read_from_the_shape_only_when_unambiguous():
    x = torch.zeros(1, 3, 4, 4)
    f = torch.arange(2 * 2 * 3.0).reshape(1, 2, 2, 3)  # 3 channels only in dim 3: NHWC
    model = Probe(f)
    head = identity_head(model, 3)
    model(x)
    assert head().tolist() == [[4.5, 5.5, 6.5]]
    cube = torch.randn(1, 3, 3, 3)
    model = Probe(cube)
    head = identity_head(model, 3)
    model(x)
    with pytest.raises(ValueError, match="pass layout='nchw' or 'nhwc'"):
        head()
    model = Probe(cube, output_fmt="NHWC", feature_info=[{"module": "feat", "num_chs": 3}])  # timm's declaration
    head = identity_head(model, 3)
    model(x)
    assert torch.allclose(head(), cube.mean((1, 2)))
    model = Probe(cube, feature_info=[{"module": "feat", "num_chs": 3}])  # timm without output_fmt: NCHW
    head = identity_head(model, 3)
    model(x)
    assert torch.allclose(head(), cube.mean((2, 3)))


def test_torchvision_swin_at_an_ambiguous_size_needs_layout():
    """torchvision's Swin declares nothing; with H == W == C (like swin_t's (2, 96, 96, 96) at 384 px) the
    layout cannot be known, so it is an error, and layout='nhwc' pools over (H, W)."""
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer([4, 4], 8, [2], [1], [4, 4], num_classes=10)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    head = EarlyHead(model, "features.0", 10)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 8\).*'features.0'.*layout="):
        saliency_map(model, x, y, early_head=head)
    head = EarlyHead(model, "features.0", 10, layout="nhwc")
    feats = {}
    model.features[0].register_forward_hook(lambda m, a, o: feats.update(f=o))
    model(x)
    assert torch.allclose(head(), head.fc(feats["f"].permute(0, 3, 1, 2).mean((2, 3))), atol=1e-6)
    with pytest.raises(ValueError, match="layout must be one of"):
        EarlyHead(model, "features.0", 10, layout="NHWC")
    with pytest.raises(ValueError, match="prefix_tokens must be"):
        EarlyHead(model, "features.0", 10, prefix_tokens=-1)


def test_timm_declares_nhwc_even_when_h_equals_c():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10, img_size=32, window_size=4,
                              embed_dim=8, depths=(2,), num_heads=(1,))
    head = EarlyHead(model, "layers.0", 10)
    feats = {}
    model.layers[0].register_forward_hook(lambda m, a, o: feats.update(f=o))
    model(torch.randn(2, 3, 32, 32))
    assert feats["f"].shape == (2, 8, 8, 8)
    assert torch.allclose(head(), head.fc(feats["f"].mean((1, 2))), atol=1e-6)


def test_prefix_tokens_declared_checked_and_required():
    timm = pytest.importorskip("timm")
    x = torch.zeros(1, 3, 4, 4)
    tokens = torch.randn(1, 5, 2)
    model = Probe(tokens)  # nothing declared: how many of the 5 tokens are patches is unknown
    head = identity_head(model, 2)
    model(x)
    with pytest.raises(ValueError, match="pass prefix_tokens"):
        head()
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, patch_size=8, depth=1, embed_dim=8,
                            num_heads=1, reg_tokens=2)  # 4 patches + class + 2 registers
    head = EarlyHead(vit, "blocks.0", 10)
    feats = {}
    vit.blocks[0].register_forward_hook(lambda m, a, o: feats.update(f=o))
    vit(torch.randn(2, 3, 16, 16))
    assert feats["f"].shape == (2, 7, 8)
    assert torch.allclose(head(), head.fc(feats["f"][:, 3:].mean(1)), atol=1e-6)
    # a 4-token output at a point declared with 3 prefix tokens and 4 patches: no prefix tokens there (CaiT)
    assert torch.allclose(head(feats["f"][:, 3:]), head.fc(feats["f"][:, 3:].mean(1)), atol=1e-6)
    with pytest.raises(ValueError, match="not the declared 4 patches plus 3 prefix tokens"):
        head(feats["f"][:, 1:])


def test_token_saliency_reaches_the_pixels_through_the_patch_grid():
    """Hooked at timm's patch embedding (a p x p stride-p conv, then the tokens), the aux logit is
    fc . mean over patches of (W * patch + b): every pixel's gradient is fc_y . W[:, c, i % p, j % p] / N, the
    same in every patch, so the map repeats with the patch grid and equals that product."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    p, side = 4, 16
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=side, patch_size=p, depth=1,
                            embed_dim=8, num_heads=1)
    head = EarlyHead(vit, "patch_embed", 10)
    x, y = torch.randn(2, 3, side, side), torch.tensor([3, 5])
    sal = saliency_map(vit, x, y, early_head=head)
    w = vit.patch_embed.proj.weight.detach()  # (C, 3, p, p)
    n = (side // p) ** 2
    per_patch = torch.einsum("bk,kcij->bcij", head.fc.weight.detach()[y], w).abs().amax(1) / n  # (B, p, p)
    assert torch.allclose(sal, per_patch.repeat(1, side // p, side // p), rtol=1e-5, atol=1e-9)


def test_hook_output_must_be_a_tensor():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(Pair())
    EarlyHead(model, "0", 10, in_channels=3)
    with pytest.raises(ValueError, match="hook point '0' returned a tuple"):
        model(torch.randn(1, 3, 4, 4))


def test_head_attached_after_a_compiled_call_says_what_to_do():
    torch.manual_seed(0)
    model = small_cnn()
    compiled = torch.compile(model, backend="eager")
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    saliency_map(compiled, x, y)  # compiles the eval-mode graph, without the head's hook
    head = EarlyHead(model, "1", 10)
    with pytest.raises(RuntimeError, match="OptimizedModule is compiled.*before the model's first compiled call"):
        saliency_map(compiled, x, y, early_head=head)
    compiled(x)  # a train-mode call compiled now, with the hook
    assert head.loss(y).shape == ()
    torch._dynamo.reset()
    fresh = small_cnn()
    head = EarlyHead(fresh, "1", 10)  # attached first: the compiled forward runs the hook
    compiled = torch.compile(fresh, backend="eager")
    assert torch.allclose(saliency_map(compiled, x, y, early_head=head), saliency_map(fresh, x, y, early_head=head))
    torch._dynamo.reset()


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 10))


def test_loss_of_given_logits():
    model, head = make()
    logits = torch.randn(3, 10)
    y = torch.tensor([0, 4, 9])
    assert torch.allclose(head.loss(y, logits), 0.3 * nn.functional.cross_entropy(logits, y))
