"""Models written only here, without annotations, to check the analysis on unseen code."""
import torch
import torch.nn as nn


class ResidualConcatDepthwise(nn.Module):
    """A residual add, a concat of two branches, a depthwise conv, a flatten over 4x4 positions."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.body_bn = nn.BatchNorm2d(16)
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 12, 1)
        self.dw = nn.Conv2d(20, 20, 3, padding=1, groups=20, bias=False)
        self.dw_bn = nn.BatchNorm2d(20)
        self.pw = nn.Conv2d(20, 24, 1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(24 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.body_bn(self.body(x)).relu()
        y = torch.cat([self.left(x), self.right(x)], 1)
        y = torch.relu(self.dw_bn(self.dw(y)))
        z = self.pool(self.pw(y))
        return self.fc(torch.flatten(z, 1))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.reduce = nn.Conv2d(32, 8, 1)
        self.expand = nn.Conv2d(8, 32, 1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(s))))
        x = x * s
        return self.head(x.mean((2, 3)))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


class WithGroupNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).mean((2, 3)))


def randomise_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so slicing bugs show."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
