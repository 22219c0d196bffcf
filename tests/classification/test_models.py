import pytest
import torch

from classification.models import create_model, early_hook_point, list_models

# published parameter counts (millions): Cutout repo ResNet-18, He et al. ResNet-110, WRN paper,
# Shake-Shake paper, PyramidNet paper (alpha 200, bottleneck, 272 layers)
PUBLISHED = {"cifar_resnet18": 11.2, "cifar_resnet110": 1.7, "wrn_28_10": 36.5, "wrn_28_2": 1.5,
             "shake_shake_26_2x96d": 26.2, "pyramidnet272_shakedrop": 26.0, "resnet50": 25.6, "resnet101": 44.5}
TOLERANCE = {"cifar_resnet110": 0.03, "wrn_28_2": 0.03}  # published with 2 significant digits


def test_pyramidnet_count_follows_han_et_al_convention():
    """Han et al. count the conv and fc layers' parameters only (no BatchNorm): PyramidNet-272 alpha 200 is
    26.0M under that convention, as published (26.21M counting BatchNorm too)."""
    model = create_model("pyramidnet272_shakedrop", num_classes=10)
    counted = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                  for p in m.parameters())
    assert counted == 25_999_978 and round(counted / 1e6, 1) == PUBLISHED["pyramidnet272_shakedrop"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 26.21


def test_shake_and_pyramid_nets_use_he_fan_out_init():
    torch.manual_seed(0)
    for name in ("shake_shake_26_2x96d", "pyramidnet272_shakedrop"):
        model = create_model(name, num_classes=10)
        conv = max((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), key=lambda m: m.weight.numel())
        k, out = conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels
        std = conv.weight.std().item()
        assert abs(std - (2.0 / (k * out)) ** 0.5) / (2.0 / (k * out)) ** 0.5 < 0.02, (name, std)
    assert torch.equal(create_model("shake_shake_26_2x96d").fc.bias, torch.zeros(10))


@pytest.mark.parametrize("name", sorted(set(PUBLISHED) - {"pyramidnet272_shakedrop"}))
def test_parameter_counts(name):
    model = create_model(name, num_classes=1000 if name.startswith("resnet") else 10)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < TOLERANCE.get(name, 0.01), f"{name}: {n:.2f}M"


@pytest.mark.parametrize("name", ["cifar_resnet18", "cifar_resnet110", "wrn_28_2", "shake_shake_26_2x96d"])
def test_forward_backward_and_eval_determinism(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    model.eval()
    assert torch.equal(model(x), model(x))
    assert early_hook_point(model) == "layer1"


def test_shakedrop_network_small_forward():
    from classification.models.shake import PyramidNet

    torch.manual_seed(0)
    model = PyramidNet(depth=11, alpha=12, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    model.eval()
    assert torch.equal(model(x), model(x))


def test_timm_by_name_and_unknown_name():
    model = create_model("timm:resnet10t", num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert early_hook_point(model) == "layer1"
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet9000")
    assert "wrn_28_10" in list_models()
