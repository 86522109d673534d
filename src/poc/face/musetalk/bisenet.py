"""BiSeNet face parsing (19 CelebAMask-HQ classes), built to load `79999_iter.pth` as published.

Upstream MuseTalk parses each avatar crop with this network to cut its blend mask. The module
and attribute names below are fixed by that checkpoint's tensor names (`cp.resnet.layer2.0.
downsample.0.weight`, `ffm.convblk.bn.running_mean`, ...), so they must not be renamed. The
network: a ResNet-18 backbone whose 1/8-scale features stand in for BiSeNet's spatial path; a
context path refining the 1/16 and 1/32 features with channel attention plus a global-average
branch; a fusion block; three output heads. Only the main head is evaluated at inference; the two
auxiliary heads exist so the checkpoint loads strictly.

This module imports torch at the top: import it only after `_deps.require("torch")`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CLASSES = 19


class ConvUnit(nn.Module):
    """Conv (no bias) -> batch norm -> ReLU; the checkpoint names the parts `conv` and `bn`."""

    def __init__(self, inputs: int, outputs: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convs, a 1x1 projection when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample: nn.Module | None = None
        if inputs != outputs or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


def _stage(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(inputs, outputs, stride), ResidualBlock(outputs, outputs, 1))


class Backbone(nn.Module):
    """ResNet-18 without its classifier; returns the 1/8, 1/16 and 1/32 scale features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        eighth = self.layer2(x)
        sixteenth = self.layer3(eighth)
        return eighth, sixteenth, self.layer4(sixteenth)


def _channel_gate(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1)


class AttentionRefinement(nn.Module):
    """Conv unit, then reweight its channels by a sigmoid of their global average."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv = ConvUnit(inputs, outputs)
        self.conv_atten = nn.Conv2d(outputs, outputs, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return features * torch.sigmoid(self.bn_atten(self.conv_atten(_channel_gate(features))))


class ContextPath(nn.Module):
    """Backbone features, refined top-down: 1/32 (+ global context) -> 1/16 -> 1/8."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = Backbone()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvUnit(128, 128)
        self.conv_head16 = ConvUnit(128, 128)
        self.conv_avg = ConvUnit(512, 128, kernel=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eighth, sixteenth, thirtysecond = self.resnet(x)
        context = self.conv_avg(_channel_gate(thirtysecond))  # (B, 128, 1, 1): broadcasts over 1/32
        top = self.arm32(thirtysecond) + context
        top = self.conv_head32(F.interpolate(top, sixteenth.shape[2:], mode="nearest"))
        middle = self.arm16(sixteenth) + top
        middle = self.conv_head16(F.interpolate(middle, eighth.shape[2:], mode="nearest"))
        return eighth, middle, top


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, mix them, and add a channel-attended copy."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.convblk = ConvUnit(inputs, outputs, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(outputs, outputs // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(outputs // 4, outputs, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        mixed = self.convblk(torch.cat([spatial, context], dim=1))
        weights = torch.sigmoid(self.conv2(F.relu(self.conv1(_channel_gate(mixed)))))
        return mixed + mixed * weights


class Head(nn.Module):
    """Conv unit, then a 1x1 conv to per-class scores."""

    def __init__(self, inputs: int, middle: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvUnit(inputs, middle)
        self.conv_out = nn.Conv2d(middle, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class FaceParsingNet(nn.Module):
    """(B, 3, H, W) ImageNet-normalised RGB -> (B, 19, H, W) class scores (main head only)."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, classes)
        self.conv_out16 = Head(128, 64, classes)  # training-time auxiliary heads: loaded, not run
        self.conv_out32 = Head(128, 64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eighth, context, _ = self.cp(x)
        scores = self.conv_out(self.ffm(eighth, context))
        return F.interpolate(scores, x.shape[2:], mode="bilinear", align_corners=True)
