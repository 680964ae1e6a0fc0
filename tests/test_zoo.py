"""The ImageNet-class zoo (opq_hw.zoo): output shape and parameter counts equal the published
ones exactly, built on the meta device (no weights allocated, fast)."""
from __future__ import annotations

import pytest
import torch

from opq_hw import zoo

ARCHS = {
    "resnet18": lambda: zoo.ResNet(zoo.BasicBlock, (2, 2, 2, 2)),
    "resnet50": lambda: zoo.ResNet(zoo.Bottleneck, (3, 4, 6, 3)),
    "mobilenet-v1": zoo.MobileNetV1,
}
PUBLISHED = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet-v1": 4_231_976}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_shape_and_parameter_count(name):
    assert zoo.ZOO[name][2] == PUBLISHED[name]
    with torch.device("meta"):
        model = ARCHS[name]()
        y = model(torch.zeros((1,) + zoo.ZOO[name][1]))
    assert tuple(y.shape) == (1, 1000)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]


def test_layer_table_and_laplace_draws():
    """MobileNet-V1's specs follow Howard et al. Table 1 (27 convolutions + fc, 13 depthwise, a 7x7
    map at the end) and the weights are seeded Laplace draws (excess kurtosis ~3)."""
    from opq_hw.bnfold import fold_batchnorm
    from opq_hw.layers import inspect_model

    m = zoo.mobilenet_v1(seed=1)
    assert torch.equal(m.fc.weight, zoo.mobilenet_v1(seed=1).fc.weight)
    folds, kept = fold_batchnorm(m)
    assert folds and not kept
    specs = inspect_model(m.eval(), torch.zeros(1, 3, 224, 224))
    assert len(specs) == 28 and sum(s.groups > 1 for s in specs) == 13
    assert specs[-2].out_shape == (1024, 7, 7) and specs[-1].kind == "linear"
    w = m.features[-3].weight.detach().flatten().double()  # the last pointwise conv (1024 x 1024)
    z = (w - w.mean()) / w.std()
    assert 2.5 < float((z ** 4).mean()) - 3 < 3.5
