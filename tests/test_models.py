"""Models and accelerators: compact masks, the compiled-model cache (keys, rebuilds,
corruption), int8 acceptance by drift, engine files, and the one-line errors of a
backend whose runtime is missing. Builds here are real Ultralytics exports."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import framechain
from helpers.masks import dense as dense_mask

from pipeline.detections import Detections
from pipeline.errors import BackendUnavailableError, ModelFormatError
from pipeline.masks import BoxMasks, polygon_region
from stages.detect.backends import load_backend, read_model_info
from stages.detect.backends.tensorrt import split_engine_file
from stages.detect.export import build_with_ultralytics, compile_model, measure_drift
from stages.detect.modelcache import CompileSpec, ModelCache, cache_key


def random_masks(seed: int, n: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, height, width), bool)
    for mask in masks:
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        cv2.ellipse(
            mask.view(np.uint8),
            (int(x) + 10, int(y) + 10),
            (int(rng.integers(3, 40)), int(rng.integers(3, 60))),
            0,
            0,
            360,
            1,
            -1,
        )
    return masks


def test_box_masks_round_trip_and_geometry() -> None:
    """Masks packed inside their boxes come back pixel-exact, across the wire parts
    too, at a fraction of the dense size; areas and zone overlaps are exact."""
    dense = random_masks(0, 12, 450, 800)
    masks = BoxMasks.from_dense(dense)
    assert all(
        (dense_mask(masks, i, 450, 800) == dense[i]).all() for i in range(len(dense))
    )
    assert masks.bits.nbytes * 50 < dense.size  # bits, and only inside the boxes
    assert masks.area().tolist() == dense.sum(axis=(1, 2)).tolist()
    region = polygon_region(
        np.array([[0, 0], [400, 0], [400, 450], [0, 450]]), 450, 800
    )
    assert (
        masks.area_inside(region).tolist() == (dense & region).sum(axis=(1, 2)).tolist()
    )
    assert masks.coverage(region) == int((dense.any(axis=0) & region).sum())

    boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (12, 1))
    detections = Detections(
        xyxy=boxes,
        confidence=np.full(12, 0.9, np.float32),
        class_id=np.zeros(12, np.int32),
        masks=masks,
    )
    parts = [bytes(p) for p in detections.to_parts()]
    back = Detections.from_parts(12, parts, masks=True)
    assert back.masks is not None
    assert (back.masks.bits == masks.bits).all()
    picked = back[np.array([3, 7])]
    assert picked.masks is not None
    assert (dense_mask(picked.masks, 1, 450, 800) == dense[7]).all()
    with pytest.raises(ValueError, match="mask"):
        Detections.from_parts(12, [*parts[:3], parts[3], parts[4][:-1]], masks=True)


@pytest.fixture
def pt_model(assets: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "yolo11n.pt"
    shutil.copy2(assets / "yolo11n.pt", copy)
    return copy


def test_cache_key_covers_model_spec_and_platform(pt_model: Path) -> None:
    spec = CompileSpec("engine", imgsz=640, batch=8, precision="fp16")
    gpu = {"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
    key, fields = cache_key(pt_model, spec, gpu)
    assert cache_key(pt_model, spec, gpu)[0] == key
    assert fields["gpu"] == "NVIDIA H200" and fields["batch"] == 8
    changed = [
        cache_key(pt_model, CompileSpec("engine", 640, 8, precision="fp32"), gpu),
        cache_key(pt_model, CompileSpec("engine", 320, 8, precision="fp16"), gpu),
        cache_key(pt_model, CompileSpec("engine", 640, 16, precision="fp16"), gpu),
        cache_key(pt_model, spec, {**gpu, "tensorrt": "10.14.1"}),
        cache_key(pt_model, spec, {**gpu, "gpu": "Orin", "compute_capability": "8.7"}),
    ]
    with pt_model.open("r+b") as f:  # a retrained model with the same name
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    changed.append(cache_key(pt_model, spec, gpu))
    assert len({k for k, _ in changed} | {key}) == len(changed) + 1


@pytest.mark.slow
def test_cache_reuses_rebuilds_on_key_change_and_rejects_corruption(
    pt_model: Path, tmp_path: Path
) -> None:
    """Real ONNX exports through the cache: a second ask reuses the entry; a new
    image size builds a new one; a corrupted or half-written entry is detected by
    its checksum and rebuilt, never handed out."""
    cache = ModelCache(tmp_path / "cache")
    facts = {"ultralytics": "test"}
    spec = CompileSpec("onnx", imgsz=320)
    first = cache.get(pt_model, spec, facts, build_with_ultralytics)
    assert first.built and first.reason == "not in the cache"
    assert read_model_info(first.path).names[0] == "person"
    again = cache.get(pt_model, spec, facts, build_with_ultralytics)
    assert not again.built and again.path == first.path

    other = cache.get(
        pt_model, CompileSpec("onnx", imgsz=256), facts, build_with_ultralytics
    )
    assert other.built and other.path != first.path

    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.path.write_bytes(bytes(data))
    assert "corrupted" in (cache.verify(first.path, first.key) or "")
    rebuilt = cache.get(pt_model, spec, facts, build_with_ultralytics)
    assert rebuilt.built and "checksum" in rebuilt.reason
    assert cache.verify(rebuilt.path, rebuilt.key) is None

    first.path.with_name(first.path.name + ".json").write_text("{")  # killed build
    assert cache.get(pt_model, spec, facts, build_with_ultralytics).built


def crowd_images(assets: Path, folder: Path, count: int = 20) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    with av.open(str(assets / "crowd.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 20 == 0:
                image = frame.to_ndarray(format="bgr24")
                cv2.imwrite(str(folder / f"frame{i:04d}.jpg"), image)
                images.append(image)
            if len(images) == count:
                break
    return images


@pytest.mark.slow
def test_int8_drift_is_measured_and_bounds_acceptance(
    assets: Path, pt_model: Path, tmp_path: Path
) -> None:
    """A real int8 OpenVINO build (NNCF calibration on crowd frames) is compared
    with the fp32 model on those frames: refused with the numbers when the drift
    is above the limit (and removed from the cache), accepted below it."""
    pytest.importorskip("nncf", reason="nncf (OpenVINO int8 calibration) not installed")
    images = crowd_images(assets, tmp_path / "calibration")
    fp32 = load_backend(assets / "yolo11n.onnx", 640, device="cpu")
    assert measure_drift(fp32, fp32, images[:5]).drift == 0.0

    spec = CompileSpec(
        "openvino",
        imgsz=640,
        precision="int8",
        calibration=str(tmp_path / "calibration"),
    )
    cache = tmp_path / "cache"
    entry, drift = compile_model(pt_model, spec, cache, max_drift=0.3)
    assert drift is not None and 0 < drift.drift <= 0.3, drift
    assert drift.recall > 0.7 and drift.mean_iou > 0.8, drift.describe()
    int8 = load_backend(entry.path, 640, device="cpu")
    assert int8.names == fp32.names

    # the same build under a stricter limit: refused, and gone from the cache
    with pytest.raises(
        ModelFormatError, match=r"int8 build of yolo11n.pt refused: drift"
    ):
        compile_model(pt_model, spec, cache, max_drift=drift.drift / 2)
    assert not entry.path.exists()


def write_engine_file(path: Path, engine: bytes) -> None:
    import json

    meta = json.dumps(
        {
            "names": {"0": "person", "1": "car"},
            "stride": 32,
            "task": "detect",
            "batch": 8,
            "imgsz": [640, 640],
            "args": {"dynamic": True},
        }
    )
    path.write_bytes(
        len(meta).to_bytes(4, "little", signed=True) + meta.encode() + engine
    )


def test_engine_files_are_parsed_and_checked(tmp_path: Path) -> None:
    """An Ultralytics-style engine file's metadata is read without TensorRT; a file
    without it, or cut short, is refused with one line."""
    engine = tmp_path / "model.engine"
    write_engine_file(engine, b"\x00" * 256)
    info = read_model_info(engine)
    assert info.names == ("person", "car") and info.imgsz is None
    meta, blob = split_engine_file(engine.read_bytes(), engine.name)
    assert meta["task"] == "detect" and len(blob) == 256
    with pytest.raises(ModelFormatError, match="no Ultralytics metadata header"):
        split_engine_file(b"\x00\x00\x00\x00plan", "raw.engine")
    with pytest.raises(ModelFormatError, match="truncated"):
        split_engine_file(b"\x01", "cut.engine")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed"
)
def test_missing_runtime_is_one_line(tmp_path: Path, assets: Path) -> None:
    """An engine where TensorRT is absent: the detect stage fails with one line
    naming the package to install (here: a real run of the chain)."""
    engine = tmp_path / "model.engine"
    write_engine_file(engine, b"\x00" * 256)
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        load_backend(engine, 640)
    with pytest.raises(ModelFormatError, match=r"unsupported model format '\.tflite'"):
        load_backend(tmp_path / "model.tflite", 640)
    config = tmp_path / "engine.yaml"
    config.write_text(
        f"cameras:\n  cam:\n    source: {{kind: file, path: {assets / 'crowd.mp4'}}}\n"
        f"detector: {{model: {engine}}}\n"
        f"sinks: [{{kind: sqlite, path: {tmp_path / 'e.db'}}}]\n"
        "supervisor: {max_restarts: 0, stop_timeout_s: 3}\n"
    )
    result = framechain("run", str(config), "--no-progress", timeout=120)
    assert result.returncode != 0
    assert "TensorRT is not installed; pip install tensorrt-cu12" in result.stderr
    assert "Traceback" not in result.stderr


def _gpu_tensorrt() -> str | None:
    """Why the TensorRT tests cannot run here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt-cu12 on a GPU box)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    return None


@pytest.mark.skipif(_gpu_tensorrt() is not None, reason=str(_gpu_tensorrt()))
def test_tensorrt_engine_cache_and_parity(assets: Path, tmp_path: Path) -> None:
    """On a GPU: an fp16 engine built through the cache matches the CPU ONNX path;
    a corrupted engine is rejected by checksum and rebuilt."""
    from pipeline.detections import box_iou
    from stages.detect.yolo import postprocess, preprocess

    pt = tmp_path / "yolo11n.pt"
    shutil.copy2(assets / "yolo11n.pt", pt)
    spec = CompileSpec("engine", imgsz=640, batch=8, precision="fp16")
    entry, _ = compile_model(pt, spec, tmp_path / "cache")
    engine = load_backend(entry.path, 640, device="cuda")
    cpu = load_backend(assets / "yolo11n.onnx", 640, device="cpu")
    images = crowd_images(assets, tmp_path / "frames", 8)
    ious = []
    for image in images:
        results = []
        for backend in (cpu, engine):
            box = backend.letterbox(*image.shape[:2])
            raw = backend.infer(preprocess([image], [box]))[0][0]
            results.append(postprocess(raw, box, 0.25, 0.7, 300, 80))
        iou = box_iou(results[0].xyxy, results[1].xyxy)
        ious += iou.max(axis=1).tolist()
    assert np.mean(ious) >= 0.95
    data = bytearray(entry.path.read_bytes())
    data[-100] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    rebuilt, _ = compile_model(pt, spec, tmp_path / "cache")
    assert rebuilt.built and "checksum" in rebuilt.reason


def test_stage_processes_inherit_the_model_metadata(
    assets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor reads a .pt's metadata once; the stage processes it starts
    validate the same config from what it handed down, without importing PyTorch
    (five processes importing it at once took over 10 s before their first heartbeat
    on 2 cores, and the supervisor killed them as silent)."""
    import json
    import subprocess
    import sys

    from stages.detect.backends import MODEL_INFO_ENV

    monkeypatch.delenv(MODEL_INFO_ENV, raising=False)
    info = read_model_info(assets / "yolo11n.pt")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pathlib import Path; "
            "from stages.detect.backends import read_model_info; "
            f"info = read_model_info(Path({str(assets / 'yolo11n.pt')!r})); "
            "print(json.dumps([list(info.names), info.task, 'torch' in sys.modules]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    names, task, imported_torch = json.loads(child.stdout)
    assert (tuple(names), task) == (info.names, info.task)
    assert not imported_torch


@pytest.mark.parametrize("imgsz", [160, 416, 640])
def test_dynamic_model_warms_up_at_any_stride_multiple(
    assets: Path, imgsz: int
) -> None:
    """Warm-up infers a wide letterbox (half the height): for imgsz 160 or 416 half
    is not a multiple of the stride, and the model's concats refused the tensor, so
    detect failed at start-up with every such size."""
    model = load_backend(assets / "yolo11n.onnx", imgsz, threads=1, device="cpu")
    model.warm_up()
    box = model.letterbox(90, 160)
    tensor = np.zeros((1, 3, box.input_h, box.input_w), np.float32)
    assert model.infer(tensor)[0].shape[0] == 1
