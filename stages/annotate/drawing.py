"""What the chain sees, drawn on a frame: boxes, labels with track ids and track
traces (supervision's annotators), zones with their occupancy, lines with their
in/out counts, instance masks. Shared by the annotate stage (video, MJPEG) and
the API's live pictures; OpenCV and supervision load with this module, so only
the processes that draw pay for them."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.convert import to_supervision
from pipeline.detections import Detections
from pipeline.messages import Overlay

LINE_COLOUR = (0, 215, 255)  # BGR
ZONE_COLOUR = (255, 160, 0)
CROWD_COLOUR = (0, 0, 255)


class Painter:
    """Draws one camera's frames; keeps the traces of its tracks between frames."""

    def __init__(self, trace_frames: int = 30, text_scale: float = 0.5) -> None:
        import supervision as sv

        by_track = sv.ColorLookup.TRACK
        self._annotators: list[Any] = [
            sv.BoxAnnotator(thickness=2, color_lookup=by_track)
        ]
        if trace_frames:
            self._annotators.append(
                sv.TraceAnnotator(
                    trace_length=trace_frames,
                    position=sv.Position.BOTTOM_CENTER,
                    color_lookup=by_track,
                )
            )
        self._labels = sv.LabelAnnotator(
            text_scale=text_scale, text_padding=3, color_lookup=by_track
        )

    def draw(
        self,
        pixels: np.ndarray,
        detections: Detections,
        names: tuple[str, ...],
        overlay: Overlay | None,
        labels: tuple[str, ...] = (),
    ) -> np.ndarray:
        """A drawn copy of ``pixels`` (detections and overlay in its pixels)."""
        image = pixels.copy()
        for zone in overlay.zones if overlay is not None else ():
            colour = CROWD_COLOUR if zone.crowd else ZONE_COLOUR
            points = np.array(zone.polygon, np.int32)
            cv2.polylines(image, [points], True, colour, 2)
            x, y = points.min(axis=0)
            _label(image, f"{zone.name}: {zone.count}", (x + 4, y + 18), colour)
        for line in overlay.lines if overlay is not None else ():
            start = (int(line.start[0]), int(line.start[1]))
            end = (int(line.end[0]), int(line.end[1]))
            cv2.line(image, start, end, LINE_COLOUR, 2)
            _label(
                image,
                f"{line.name} in {line.count_in} out {line.count_out}",
                (min(start[0], end[0]) + 4, min(start[1], end[1]) - 8),
                LINE_COLOUR,
            )
        if detections.masks is not None and len(detections):
            paint_masks(image, detections)
        if len(detections):
            sv_detections = to_supervision(detections)
            for annotator in self._annotators:
                image = annotator.annotate(image, sv_detections)
            secondary = detections.data.get("label", np.full(len(detections), -1))
            texts = [
                f"#{t} {names[c] if 0 <= c < len(names) else c} {p:.2f}"
                + (f" {labels[k]}" if 0 <= k < len(labels) else "")
                for t, c, p, k in zip(
                    detections.tracker_id.tolist(),  # type: ignore[union-attr]
                    detections.class_id.tolist(),
                    detections.confidence.tolist(),
                    secondary.tolist(),
                    strict=True,
                )
            ]
            image = self._labels.annotate(image, sv_detections, labels=texts)
        return image


def paint_masks(image: np.ndarray, detections: Detections, alpha: float = 0.45) -> None:
    """Tint each instance mask in its track's colour, in place, touching only the
    pixels inside the masks' boxes."""
    import supervision as sv

    assert detections.masks is not None
    palette = sv.ColorPalette.DEFAULT
    ids = (
        detections.tracker_id
        if detections.tracker_id is not None
        else np.arange(len(detections))
    )
    colours = ids.tolist()
    for i, rows, columns, inside in detections.masks.in_frame(*image.shape[:2]):
        region = image[rows, columns]
        colour = np.array(palette.by_idx(colours[i]).as_bgr(), np.float32)
        region[inside] = (region[inside] * (1 - alpha) + colour * alpha).astype(
            np.uint8
        )


def _label(
    image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]
) -> None:
    x, y = max(0, int(origin[0])), max(14, int(origin[1]))
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 1)
