"""`deploy.pt`: a finished network as this project's own arch and fused weights.

Unlike `deploy.pt2` and `deploy.onnx` (`trainers.deploy_export`), which run without this project, it
is rebuilt by `search_space.network`, so it runs at every input size, SAFM++'s included (whose
exported programs are fixed to one size), and it is what a distillation teacher trained by
`trainers.full` is loaded from (`trainers.loop.load_teacher_checkpoint`).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from search_space.arch import ArchConfig
from search_space.configio import atomic_write
from search_space.network import build, deploy

__all__ = ["DEPLOY_FILE", "load_deploy", "save_deploy"]

DEPLOY_FILE = "deploy.pt"


def save_deploy(fused: nn.Module, arch: ArchConfig, folder: str | Path) -> Path:
    """Write `folder/deploy.pt` (atomically): the deploy form `fused` of `arch`."""
    buffer = io.BytesIO()
    torch.save({"arch": arch.to_dict(), "state_dict": fused.state_dict()}, buffer)
    return atomic_write(Path(folder) / DEPLOY_FILE, buffer.getvalue())


def load_deploy(folder: str | Path) -> nn.Module:
    """The fused deploy model saved in `folder` (eval mode, float32, CPU)."""
    blob = torch.load(Path(folder) / DEPLOY_FILE, map_location="cpu", weights_only=False)
    model = deploy(build(ArchConfig.from_dict(blob["arch"])))
    model.load_state_dict(blob["state_dict"])
    return model.eval()
