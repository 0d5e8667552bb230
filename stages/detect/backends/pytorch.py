"""Ultralytics ``.pt`` checkpoints on PyTorch (CPU, or CUDA with fp16). Needs the
``ultralytics`` extra; the default CPU path never imports torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import BackendUnavailableError, ModelFormatError
from stages.detect.backends.base import ModelInfo, YoloBackend
from stages.detect.models import keep_ultralytics_offline

INSTALL = "pip install 'framechain[ultralytics]' (Ultralytics and PyTorch)"


def _load(path: Path, device: str) -> tuple[Any, Any]:
    keep_ultralytics_offline()
    try:
        import torch
        from ultralytics.nn.tasks import load_checkpoint
    except ImportError as e:
        raise BackendUnavailableError(
            f"{path.name} needs PyTorch and Ultralytics, which are not installed; "
            + INSTALL
        ) from e
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "detector.device is cuda but PyTorch sees no CUDA GPU; install a CUDA "
            "build of torch, or use device: cpu"
        )
    target = torch.device(
        "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    )
    try:
        model = load_checkpoint(str(path), device=target)[0]
    except Exception as e:  # torch.load raises many types for a bad file
        raise ModelFormatError(
            f"{path.name} is not a loadable Ultralytics checkpoint "
            f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); "
            "check the file is complete"
        ) from e
    return model, target


def _info(model: Any, path: Path) -> ModelInfo:
    names = getattr(model, "names", None)
    if not isinstance(names, dict):
        raise ModelFormatError(f"{path.name} is not an Ultralytics YOLO checkpoint")
    return ModelInfo.from_metadata(
        {
            "names": names,
            "task": getattr(model, "task", "detect"),
            "stride": max(int(model.stride.max()), 32),
            "args": {"dynamic": True},
        },
        path,
    )


def read_pytorch_info(path: Path) -> ModelInfo:
    return _info(_load(path, "cpu")[0], path)


class PyTorchBackend(YoloBackend):
    """An Ultralytics checkpoint, fused and in eval mode, called directly: its raw
    head output is what an export would produce, so post-processing is shared."""

    def __init__(
        self,
        path: Path,
        imgsz: int,
        threads: int | None = None,
        device: str = "auto",
        half: bool = False,
    ) -> None:
        import torch

        if threads or device == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        model, self.device = _load(path, device)
        super().__init__(path, _info(model, path), imgsz)
        self.half = half and self.device.type == "cuda"
        model = model.fuse(verbose=False)
        model = (model.half() if self.half else model.float()).eval()
        for parameter in model.parameters():
            parameter.requires_grad = False
        self.model = model
        self.runtime = f"PyTorch {torch.__version__} {self.device.type}" + (
            " fp16" if self.half else ""
        )

    def _run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        import torch

        batch = torch.from_numpy(tensor).to(self.device, non_blocking=True)
        with torch.inference_mode():
            output = self.model(batch.half() if self.half else batch)
        head = output[0] if isinstance(output, list | tuple) else output
        tensors = head if isinstance(head, list | tuple) else [head]
        return [t.float().cpu().numpy() for t in tensors]
