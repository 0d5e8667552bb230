"""Config validation UX: every malformed config gives one line per problem
naming the YAML path and line, exit status 2, and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ASSETS, REPO, framechain

CLIP = ASSETS / "crowd.mp4"

VALID = f"""\
cameras:
  cam1:
    source:
      kind: file
      path: {CLIP}
    rules:
      - kind: line
        name: door
        start: [0, 200]
        end: [800, 200]
detector:
  model: yolo11n.onnx
sinks:
  - kind: sqlite
    path: events.db
"""


def variant(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


# (name, config text, expected path in the message, expected line, words in the message)
MALFORMED = [
    (
        "two rules of one camera with one name",
        variant(
            "        end: [800, 200]\n",
            "        end: [800, 200]\n      - {kind: line, name: door, start: [0, 9], "
            "end: [9, 9]}\n",
        ),
        "cameras.cam1.rules",
        6,
        "['door'] appear more than once",
    ),
    (
        "two sinks with one name",
        VALID + "  - kind: sqlite\n    path: other.db\n",
        "sinks",
        13,
        "['sqlite'] appear more than once",
    ),
    (
        "unknown top-level key",
        VALID + "detectr:\n  model: x\n",
        "detectr",
        16,
        "unknown key",
    ),
    (
        "unknown nested key",
        variant("  model: yolo11n.onnx", "  model: yolo11n.onnx\n  batch: 4"),
        "detector.batch",
        13,
        "unknown key",
    ),
    (
        "wrong type",
        variant("  model: yolo11n.onnx", "  model: yolo11n.onnx\n  max_batch: four"),
        "detector.max_batch",
        13,
        "integer",
    ),
    (
        "out of range",
        variant("  model: yolo11n.onnx", "  model: yolo11n.onnx\n  confidence: 1.5"),
        "detector.confidence",
        13,
        "less than 1",
    ),
    (
        "imgsz not a stride multiple",
        variant("  model: yolo11n.onnx", "  model: yolo11n.onnx\n  imgsz: 650"),
        "detector.imgsz",
        13,
        "multiple of 32",
    ),
    (
        "missing model",
        variant("model: yolo11n.onnx", "model: yolo99.onnx"),
        "detector.model",
        12,
        "not found; searched",
    ),
    (
        "not a model file",
        variant("model: yolo11n.onnx", f"model: {CLIP}"),
        "detector.model",
        12,
        "unsupported model format",
    ),
    (
        "corrupt ONNX file",
        variant("model: yolo11n.onnx", "model: CORRUPT"),
        "detector.model",
        12,
        "not a loadable ONNX model",
    ),
    (
        "non-Ultralytics model",
        variant("model: yolo11n.onnx", "model: yolox_nano.onnx"),
        "detector.model",
        12,
        "not an Ultralytics YOLO export",
    ),
    (
        "bad polygon",
        variant(
            "      - kind: line\n        name: door\n        start: [0, 200]\n"
            "        end: [800, 200]",
            "      - kind: zone\n        name: z\n        polygon: [[0, 0], [5, 5]]",
        ),
        "cameras.cam1.rules[0].polygon",
        9,
        "at least 3",
    ),
    (
        "collinear polygon",
        variant(
            "      - kind: line\n        name: door\n        start: [0, 200]\n"
            "        end: [800, 200]",
            "      - kind: zone\n        name: z\n"
            "        polygon: [[0, 0], [5, 5], [10, 10]]",
        ),
        "cameras.cam1.rules[0].polygon",
        9,
        "no area",
    ),
    (
        "line of zero length",
        variant("end: [800, 200]", "end: [0, 200]"),
        "cameras.cam1.rules[0]",
        7,
        "same point",
    ),
    (
        "unknown rule kind",
        variant("kind: line", "kind: circle"),
        "cameras.cam1.rules[0].kind",
        7,
        "line",
    ),
    (
        "unset env var",
        variant(f"path: {CLIP}", "path: ${FRAMECHAIN_TEST_UNSET_CAMERA}"),
        "cameras.cam1.source.path",
        5,
        "FRAMECHAIN_TEST_UNSET_CAMERA is not set",
    ),
    (
        "password in the YAML",
        variant(
            f"      kind: file\n      path: {CLIP}",
            "      kind: rtsp\n      url: rtsp://admin:hunter2@10.0.0.2/live",
        ),
        "cameras.cam1.source.url",
        5,
        "password in plain text",
    ),
    (
        "missing video file",
        variant(f"path: {CLIP}", "path: /nonexistent/clip.mp4"),
        "cameras.cam1.source.path",
        5,
        "does not exist",
    ),
    (
        "unknown class name",
        variant(
            "        end: [800, 200]",
            "        end: [800, 200]\n        classes: [persn]",
        ),
        "cameras.cam1.rules[0].classes",
        11,
        "unknown class 'persn'",
    ),
    (
        "no cameras",
        "cameras: {}\ndetector:" + VALID.split("detector:")[1],
        "cameras",
        1,
        "at least 1",
    ),
    ("missing sinks", VALID.split("sinks:")[0], "sinks", None, "required"),
    ("bad camera name", variant("  cam1:", "  cam 1:"), "cameras.cam 1", 2, "pattern"),
    ("invalid YAML", VALID + "  - : : [\n", "", 16, "invalid YAML"),
    (
        "crowd hysteresis upside down",
        variant(
            "        end: [800, 200]",
            "        end: [800, 200]\n      - kind: crowd\n        name: busy\n"
            "        threshold: 3\n        clear_below: 5",
        ),
        "cameras.cam1.rules[1]",
        11,
        "must not exceed threshold",
    ),
    (
        "annotate without an output",
        variant("    rules:", "    annotate: {jpeg_quality: 70}\n    rules:"),
        "cameras.cam1.annotate",
        6,
        "give video",
    ),
    (
        "MQTT password in plain text",
        VALID + "  - kind: mqtt\n    host: broker\n    password: hunter2\n",
        "sinks[1].password",
        18,
        "plain-text passwords are refused",
    ),
    (
        "mask overlap with a detection model",
        variant(
            "      - kind: line\n        name: door\n        start: [0, 200]\n"
            "        end: [800, 200]",
            "      - kind: zone\n        name: z\n"
            "        polygon: [[0, 0], [400, 0], [400, 400]]\n"
            "        min_mask_overlap: 0.5",
        ),
        "cameras.cam1.rules[0].min_mask_overlap",
        10,
        "needs a segmentation model",
    ),
    (
        "int8 without calibration images",
        variant(
            "  model: yolo11n.onnx",
            "  model: yolo11n.pt\n  compile: openvino\n  precision: int8",
        ),
        "detector",
        11,
        "needs calibration",
    ),
    (
        "compile from an exported model",
        variant("  model: yolo11n.onnx", "  model: yolo11n.onnx\n  compile: engine"),
        "detector.model",
        12,
        "builds from an Ultralytics .pt",
    ),
    (
        "truncated TensorRT engine",
        variant("model: yolo11n.onnx", "model: ENGINE"),
        "detector.model",
        12,
        "no Ultralytics metadata header",
    ),
    (
        "privacy class the model lacks",
        variant("    rules:", "    privacy: {classes: [face]}\n    rules:"),
        "cameras.cam1.privacy.classes",
        6,
        "unknown class 'face'",
    ),
    (
        "webhook that is not http",
        VALID + "  - kind: webhook\n    url: ftp://example.com/x\n",
        "sinks[1].url",
        17,
        "must start with http",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "line", "words"),
    [case[1:] for case in MALFORMED],
    ids=[c[0] for c in MALFORMED],
)
def test_malformed_config_gives_one_line(
    tmp_path: Path, text: str, path: str, line: int | None, words: str
) -> None:
    """Each broken config names the YAML path (and line) of the problem, exits 2 and
    prints no traceback."""
    config = tmp_path / "bad.yaml"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes((ASSETS / "yolo11n.onnx").read_bytes()[:100_000])
    engine = tmp_path / "broken.engine"
    engine.write_bytes(b"\xff\xff\xff\x7f" + b"\0" * 64)
    config.write_text(
        text.replace("CORRUPT", str(corrupt)).replace("ENGINE", str(engine))
    )
    result = framechain("validate", str(config), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("error: ")
    if path:
        assert message.startswith(
            f"error: {path} (line {line})" if line else f"error: {path}"
        )
    elif line:
        assert f"(line {line})" in message
    assert words in message


def test_valid_config_passes(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text(VALID)
    result = framechain("validate", str(config), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 camera(s)" in result.stdout


def test_env_interpolation_and_credentials_directory(tmp_path: Path) -> None:
    """${ENV} resolves from the environment, then from $CREDENTIALS_DIRECTORY files."""
    from framechain.app import load as load_config

    config = tmp_path / "env.yaml"
    config.write_text(variant(f"path: {CLIP}", "path: ${CLIP_DIR}/${CLIP_NAME}"))
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "CLIP_NAME").write_text("crowd.mp4\n")
    environ = {
        "CLIP_DIR": str(ASSETS),
        "CREDENTIALS_DIRECTORY": str(credentials),
        "FRAMECHAIN_MODELS": str(ASSETS),
    }
    loaded = load_config(config, environ=environ)
    assert loaded.config.cameras["cam1"].source.path == str(CLIP)


def test_missing_config_file() -> None:
    result = framechain("validate", "/nonexistent/framechain.yaml", timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot read config file" in result.stderr


@pytest.mark.parametrize(
    "config", sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
)
def test_shipped_configs_validate(config: str) -> None:
    """Every example in configs/ is valid as shipped."""
    result = framechain("validate", f"configs/{config}")
    assert result.returncode == 0, result.stderr
