"""OpenVINO IR folders (``yolo export format=openvino``, fp32, fp16 or int8): the
fastest CPU path on Intel edge boxes."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from pipeline.errors import BackendUnavailableError, ModelFormatError
from stages.detect.backends.base import ModelInfo, YoloBackend


def _xml(path: Path) -> Path:
    """The IR's .xml: ``path`` itself, or the only one in the folder."""
    if path.suffix == ".xml":
        return path
    found = sorted(path.glob("*.xml"))
    if len(found) != 1:
        raise ModelFormatError(
            f"{path.name}: an OpenVINO model folder holds exactly one .xml (and its "
            f".bin), found {len(found)}; "
            "export with `framechain export --format openvino`"
        )
    return found[0]


def read_openvino_info(path: Path) -> ModelInfo:
    folder = path.parent if path.suffix == ".xml" else path
    metadata = folder / "metadata.yaml"
    _xml(path)
    try:
        meta = yaml.safe_load(metadata.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ModelFormatError(
            f"{folder.name}: no readable metadata.yaml beside the IR ({e}); "
            "export with Ultralytics so class names travel with the model"
        ) from e
    return ModelInfo.from_metadata(meta or {}, folder)


class OpenVinoBackend(YoloBackend):
    """An Ultralytics YOLO export on the OpenVINO runtime (CPU)."""

    def __init__(
        self, path: Path, imgsz: int, threads: int | None = None, device: str = "auto"
    ) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(
                "openvino is not installed; pip install openvino"
            ) from e
        if device == "cuda":
            raise ModelFormatError(
                f"{path.name} is an OpenVINO model, which runs on Intel devices; use "
                "device: cpu, or an .onnx/.engine/.pt model for CUDA"
            )
        info = read_openvino_info(path)
        core = ov.Core()
        try:
            model = core.read_model(str(_xml(path)))
        except RuntimeError as e:
            raise ModelFormatError(
                f"{path.name}: unreadable OpenVINO IR "
                f"({str(e).splitlines()[0][:200]}); "
                "re-export it or check the .bin is complete"
            ) from e
        shape = model.inputs[0].get_partial_shape()
        fixed = shape[2].is_static and shape[3].is_static
        info = replace(
            info,
            imgsz=(shape[2].get_length(), shape[3].get_length()) if fixed else None,
            batch=shape[0].get_length() if shape[0].is_static else None,
        )
        super().__init__(path, info, imgsz)
        threads = threads or os.cpu_count() or 1
        self.compiled: Any = core.compile_model(
            model,
            "CPU",
            {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads},
        )
        self.request = self.compiled.create_infer_request()
        self.runtime = f"OpenVINO {ov.__version__.split('-')[0]} CPU"

    def _run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        results = self.request.infer({0: tensor})
        return [np.asarray(results[output]) for output in self.compiled.outputs]
