"""ImageNet-class float models for allocation and cost experiments: ResNet-18, ResNet-50 and
MobileNet-V1 (1.0, 224), written from the papers' layer tables (torchvision does not load beside
the pinned CPU torch). No pre-trained weights ship with opq-hw: `laplace_init` draws heavy-tailed
weights (the distribution OPQ models, see OPQ.md) so that the allocation and the cost model can
be exercised at full size. Reach them with `opq-hw compress --model opq_hw.zoo:resnet50` (no
--data: the no-data path allocates, applies, exports and estimates from the weights alone).

Parameter counts (checked in tests/test_zoo.py, exactly): ResNet-18 11,689,512 and ResNet-50
25,557,032 (torchvision's `resnet18`/`resnet50` model cards, `num_params`); MobileNet-V1 4,231,976
(Keras Applications `MobileNet(alpha=1.0)`, trainable parameters: convolutions without bias,
BatchNorm gamma/beta, the 1000-way classifier with bias).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU()]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut (He et al. 2016, Fig. 2)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = _projection(cin, planes, stride)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a shortcut (He et al. 2016, Fig. 5 right). The stride
    sits on the 3x3 convolution ("ResNet v1.5", torchvision's layout); the paper puts it on the
    first 1x1. The parameter count is the same."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu3 = nn.ReLU()
        self.downsample = _projection(cin, out, stride)

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(y)))))
        return self.relu3(y + self.downsample(x))


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    """Shortcut: identity when the shape is kept, else a strided 1x1 convolution + BN (option B of
    He et al. 2016, Sec. 3.3)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """ResNet for 224x224 ImageNet (He et al., "Deep Residual Learning for Image Recognition",
    CVPR 2016, Table 1): conv1 7x7/2 64, max pool 3x3/2, four stages conv2_x..conv5_x at 64, 128,
    256, 512 planes (stride 2 on the first block of stages 3-5), global average pool, 1000-way fc."""

    def __init__(self, block, blocks: tuple[int, int, int, int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for b in range(n):
                layers.append(block(cin, planes, 2 if (b == 0 and i > 0) else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


# MobileNet-V1 body (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
# Mobile Vision Applications", arXiv 1704.04861, Table 1): (stride of the depthwise 3x3, output
# channels of the pointwise 1x1) per depthwise-separable block, after a 3x3/2 32-channel conv.
# Table 1 prints stride 2 for the last depthwise layer, but its output stays 7x7 (the reference
# implementations use stride 1); the parameter count does not depend on it.
MOBILENET_V1_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                       (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


class MobileNetV1(nn.Module):
    """MobileNet-V1, width multiplier 1.0, 224x224 input (Howard et al. 2017, Table 1): each
    depthwise 3x3 and pointwise 1x1 convolution is followed by BN and ReLU; global average pool,
    1000-way fully connected classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), *_bn_relu(32)]
        cin = 32
        for stride, cout in MOBILENET_V1_BLOCKS:
            layers += [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), *_bn_relu(cin),
                       nn.Conv2d(cin, cout, 1, bias=False), *_bn_relu(cout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.avgpool(self.features(x))))


def laplace_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draw every Conv/Linear weight from a Laplace distribution with the Kaiming (He) variance
    2 / fan_in (scale b = sqrt(2 / fan_in) / sqrt(2)), biases 0, BatchNorm as identity (gamma 1,
    beta 0, running mean 0, variance 1); seeded numpy, the same values on every machine. In place."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                b = math.sqrt(2.0 / fan_in) / math.sqrt(2.0)
                m.weight.copy_(torch.from_numpy(rng.laplace(0.0, b, size=tuple(m.weight.shape)).astype(np.float32)))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model


def resnet18(seed: int = 0) -> nn.Module:
    """ResNet-18 (He et al. 2016, Table 1: [2, 2, 2, 2] basic blocks), Laplace-drawn weights."""
    return laplace_init(ResNet(BasicBlock, (2, 2, 2, 2)), seed)


def resnet50(seed: int = 0) -> nn.Module:
    """ResNet-50 (He et al. 2016, Table 1: [3, 4, 6, 3] bottleneck blocks), Laplace-drawn weights."""
    return laplace_init(ResNet(Bottleneck, (3, 4, 6, 3)), seed)


def mobilenet_v1(seed: int = 0) -> nn.Module:
    """MobileNet-V1 1.0-224 (Howard et al. 2017, Table 1), Laplace-drawn weights."""
    return laplace_init(MobileNetV1(), seed)


# name -> (factory, input shape of one sample, published parameter count)
ZOO = {
    "resnet18": (resnet18, (3, 224, 224), 11_689_512),
    "resnet50": (resnet50, (3, 224, 224), 25_557_032),
    "mobilenet-v1": (mobilenet_v1, (3, 224, 224), 4_231_976),
}
