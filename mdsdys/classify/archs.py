"""Classifier architectures by name (timm-style registry): `create_model(name, num_classes, **kw)`.

Every model takes (B, 3, S, S) float input and returns (B, num_classes) logits. Each entry also
names the layers Grad-CAM may look at, deepest first (see mdsdys.classify.cam.cam_layer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from mdsdys.errors import UnknownArchitectureError


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture and where to look for Grad-CAM."""

    build: Callable[..., nn.Module]  # (num_classes, **kw) -> model
    min_input: int                   # smallest square input side the network accepts, px
    cam_layers: tuple[str, ...]      # dotted module paths, deepest first
    summary: str
    head: str = "fc"                 # dotted path of the final nn.Linear; its input is the cell's embedding


Norm = Callable[[int], nn.Module]  # channels -> normalisation layer


def group_norm(channels: int) -> nn.Module:
    """GroupNorm with 8 groups: statistics of each image alone, none kept from the training set (Wu & He 2018)."""
    return nn.GroupNorm(min(8, channels), channels)


class _Block(nn.Module):
    """Pre-activation residual block (He et al. 2016): norm-ReLU-conv twice, 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Norm = nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn1, self.conv1 = norm(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = norm(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.project = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)."""
        pre = torch.relu(self.bn1(x))
        shortcut = x if self.project is None else self.project(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class CellNet(nn.Module):
    """A small pre-activation ResNet sized for 64-96 px cell crops on a CPU.

    A stride-2 stem (no max-pool, unlike ResNet-18) keeps the chromatin and granule detail of a
    small crop; four stages of `blocks` residual blocks halve the grid, ending at S/16 (4x4 at 64 px).
    `norm` is BatchNorm by default; `cellnet_gn` uses GroupNorm, which keeps no training-set statistics.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: int = 1,
                 dropout: float = 0.2, norm: Norm = nn.BatchNorm2d) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            layers = [_Block(c_in, width, 1 if i == 0 else 2, norm)] + [_Block(width, width, 1, norm)
                                                                         for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head_bn = norm(c_in)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, num_classes) logits."""
        x = self.stages(self.stem(x))               # (B, C, S/16, S/16)
        x = torch.relu(self.head_bn(x))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (B, C)
        return self.fc(self.dropout(x))


def _cellnet_gn(num_classes: int, **kw) -> nn.Module:
    return CellNet(num_classes, norm=group_norm, **kw)


def _inception_v3(num_classes: int, **kw) -> nn.Module:
    # The paper's network (Lee et al. 2022), from scratch: no auxiliary head, torchvision's init.
    kw = {"aux_logits": False, "init_weights": True, "transform_input": False} | kw
    return torchvision.models.inception_v3(weights=None, num_classes=num_classes, **kw)


def _resnet18(num_classes: int, **kw) -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=num_classes, **kw)


def _mobilenet_v3_small(num_classes: int, **kw) -> nn.Module:
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes, **kw)


ARCHITECTURES: dict[str, ArchSpec] = {
    "cellnet": ArchSpec(CellNet, 32, ("stages.3", "stages.2", "stages.1"),
                        "small pre-activation ResNet for 64-96 px crops (this project's)"),
    "cellnet_gn": ArchSpec(_cellnet_gn, 32, ("stages.3", "stages.2", "stages.1"),
                           "cellnet with GroupNorm: no training-set statistics (issue 13)"),
    "resnet18": ArchSpec(_resnet18, 32, ("layer4", "layer3", "layer2"), "torchvision ResNet-18, from scratch"),
    "mobilenet_v3_small": ArchSpec(_mobilenet_v3_small, 32, ("features.12", "features.8", "features.3"),
                                   "torchvision MobileNetV3-Small, from scratch", head="classifier.3"),
    "inception_v3": ArchSpec(_inception_v3, 75, ("Mixed_7c", "Mixed_6e", "Mixed_5d"),
                             "torchvision Inception-v3 as in Lee et al. 2022, from scratch, no aux head"),
}


def get_arch(name: str) -> ArchSpec:
    """The registry entry of an architecture; raises UnknownArchitectureError naming the choices."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"Unknown architecture {name!r}; use one of {', '.join(sorted(ARCHITECTURES))}."
        ) from None


def create_model(name: str, num_classes: int, **kw) -> nn.Module:
    """Build a freshly initialised (never pretrained) model of a registered architecture."""
    if num_classes < 2:
        raise ValueError(f"A classifier needs at least two classes, got {num_classes}.")
    return get_arch(name).build(num_classes, **kw)


def embedding_head(net: nn.Module, name: str) -> nn.Linear:
    """The final linear layer of a built `name` network: its input is the penultimate embedding (B, D)."""
    path = get_arch(name).head
    try:
        head = net.get_submodule(path)
    except AttributeError:
        head = None
    if not isinstance(head, nn.Linear):
        raise UnknownArchitectureError(
            f"Architecture {name!r} has no final linear layer at {path!r} to read embeddings from; "
            "set ArchSpec.head to the dotted path of its classifier's nn.Linear."
        )
    return head


def list_models() -> list[str]:
    """Names of every registered architecture."""
    return sorted(ARCHITECTURES)
