"""torchvision's ResNet-18, adapted to small images the way CIFAR papers do.

ImageNet's stem (7x7 stride-2 conv + 3x3 stride-2 max-pool) shrinks a 32x32
image to 8x8 before the first residual block and costs several points of
CIFAR accuracy, so for ``image_size <= 32`` the stem becomes a 3x3 stride-1
conv with no max-pool. ``in_channels`` comes from the data (1 for MNIST-like,
3 for CIFAR), ``width`` scales every stage (64 = the standard network), and
``weights`` is always None: nothing is fetched.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.resnet import BasicBlock

SMALL_IMAGE = 32  # at or below this size the stem keeps full resolution


def resnet18(
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    width: int = 64,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build ``torchvision.models.resnet18(weights=None)`` with a small-image stem and ``width`` base channels.

    Stages have ``width, 2*width, 4*width, 8*width`` channels; the head maps ``8*width``
    features to ``num_classes``.
    """
    if int(width) < 1:
        raise ValueError(f"model.width={width}: must be a positive number of channels")
    width = int(width)
    model = tv_resnet18(
        weights=None, num_classes=int(num_classes), zero_init_residual=zero_init_residual
    )
    if width != 64:  # rebuild the stages with torchvision's own block builder
        model.inplanes = width
        model.layer1 = model._make_layer(BasicBlock, width, 2)
        model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
        model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
        model.fc = nn.Linear(8 * width * BasicBlock.expansion, int(num_classes))
        model.bn1 = nn.BatchNorm2d(width)
    if int(image_size) <= SMALL_IMAGE:
        model.conv1 = nn.Conv2d(
            int(in_channels), width, kernel_size=3, stride=1, padding=1, bias=False
        )
        model.maxpool = nn.Identity()
    elif int(in_channels) != 3 or width != 64:
        model.conv1 = nn.Conv2d(
            int(in_channels), width, kernel_size=7, stride=2, padding=3, bias=False
        )
    _init_like_torchvision(model, zero_init_residual)
    return model


def _init_like_torchvision(model: ResNet, zero_init_residual: bool) -> None:
    """Re-apply torchvision's ResNet initialisation to the replaced layers (He fan-out convs, unit BN)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock):
                nn.init.constant_(m.bn2.weight, 0)
