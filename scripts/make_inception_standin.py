"""A timing stand-in for the FID/KID detector: Inception-v3's architecture with random weights.

It has the calling convention of ``inception-2015-12-05.pt`` (``detector(x, return_features=True)``
on float images 0..255, 2048 features), so ``benchmarks/evaluate.py --fid-weights`` can time FID
and KID on a network of Inception's real size where the real weights cannot be fetched. Its FID
values mean nothing: never point ``DRAWAI_FID_WEIGHTS`` at it.

torchvision does not import beside the project's torch 2.13.0, so run this in a separate venv:

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvenv/bin/python scripts/make_inception_standin.py /tmp/inception_v3_random.pt
"""

from __future__ import annotations

import sys

import torch
import torchvision
from torch import nn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        net.fc = nn.Identity()  # the 2048 pool features, as the real detector's return_features=True
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 128.0) / 128.0)


class _Detector(nn.Module):
    def __init__(self, inner: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.inner(x)


def main(path: str) -> None:
    inner = torch.jit.trace(_Net().eval(), torch.zeros(2, 3, 299, 299))
    detector = torch.jit.script(_Detector(inner))
    detector.save(path)
    with torch.no_grad():
        shape = tuple(detector(torch.zeros(2, 3, 299, 299), return_features=True).shape)
    print(f"wrote {path}: features {shape}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "inception_v3_random.pt")
