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
