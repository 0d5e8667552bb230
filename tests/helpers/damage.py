"""Damaged copies of a real clip, made the ways recordings get damaged: bits flipped
at several rates, cut short inside the header, the index or the stream, ranges
zeroed, empty, not a video at all.

Each variant knows the first byte it damaged, so a test can count the frames that
lie wholly before it and demand that every one of them was processed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

# the frames of the base clips (a start at a keyframe, short enough for a quick run)
CLIP_FRAMES = 90


@dataclass(frozen=True)
class Clip:
    """One undamaged base clip and where its packets lie in the file."""

    path: Path
    data: bytes
    packet_ends: tuple[int, ...]  # byte offset just past each video packet, file order
    payload_start: int  # first byte of the first packet (after the header/index)


@dataclass(frozen=True)
class Damaged:
    """One damaged file: how it was made, and the frames wholly before the damage."""

    name: str
    path: Path
    intact_frames: int


def make_clip(source: Path, folder: Path, container: str, faststart: bool) -> Clip:
    """The first CLIP_FRAMES packets of ``source`` copied (not re-encoded) into
    ``container``; ``faststart`` puts an MP4's index before its packets."""
    suffix = {"mp4": ".mp4", "mpegts": ".ts", "matroska": ".mkv"}[container]
    path = folder / f"base-{container}{'-faststart' if faststart else ''}{suffix}"
    options = {"movflags": "faststart"} if faststart else {}
    with (
        av.open(str(source)) as src,
        av.open(str(path), "w", format=container, options=options) as out,
    ):
        stream_in = src.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        copied = 0
        for packet in src.demux(stream_in):
            if packet.size == 0 or copied >= CLIP_FRAMES:
                continue
            packet.stream = stream_out
            out.mux(packet)
            copied += 1
    with av.open(str(path)) as check:
        spans = [
            (int(p.pos), int(p.size))
            for p in check.demux(check.streams.video[0])
            if p.size and p.pos is not None and p.pos >= 0
        ]
    ends = sorted(pos + size for pos, size in spans)
    return Clip(path, path.read_bytes(), tuple(ends), min(pos for pos, _ in spans))


def _intact(clip: Clip, first_damaged: int) -> int:
    """Frames whose packets end before the first damaged byte. Packets are in
    decode order; a frame before the damage needs only earlier packets."""
    return sum(1 for end in clip.packet_ends if end <= first_damaged)


def _flip(rate: float, seed: int) -> Callable[[Clip], tuple[bytes, int]]:
    def damage(clip: Clip) -> tuple[bytes, int]:
        rng = random.Random(seed)
        data = bytearray(clip.data)
        count = max(1, int(len(data) * 8 * rate))
        # the header and index are left whole here (flips there are a variant of
        # their own): the point is damage inside the stream
        start = clip.payload_start
        offsets = sorted(rng.randrange(start, len(data)) for _ in range(count))
        for offset in offsets:
            data[offset] ^= 1 << rng.randrange(8)
        return bytes(data), offsets[0]

    return damage


def _flip_anywhere(rate: float, seed: int) -> Callable[[Clip], tuple[bytes, int]]:
    def damage(clip: Clip) -> tuple[bytes, int]:
        rng = random.Random(seed)
        data = bytearray(clip.data)
        for _ in range(max(1, int(len(data) * 8 * rate))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), 0

    return damage


def _cut(fraction: float) -> Callable[[Clip], tuple[bytes, int]]:
    """Cut the file short at ``fraction`` of the way through its packets, as a
    recorder killed mid-write leaves it: in the middle of a container packet (an
    odd length; a file cut at a packet boundary is a shorter recording)."""

    def damage(clip: Clip) -> tuple[bytes, int]:
        at = clip.payload_start + int((len(clip.data) - clip.payload_start) * fraction)
        return clip.data[: at | 1], at

    return damage


def _cut_at(at: int) -> Callable[[Clip], tuple[bytes, int]]:
    return lambda clip: (clip.data[:at], 0)


def _cut_trailing_index(clip: Clip) -> tuple[bytes, int]:
    """Cut an MP4 whose moov comes after its packets: the index is lost, and with
    it every frame."""
    return clip.data[: len(clip.data) // 2], 0


def _cut_index(clip: Clip) -> tuple[bytes, int]:
    """Cut inside the index: a faststart MP4's moov lies before the packets."""
    return clip.data[: clip.payload_start // 2], 0


def _zero(fraction: float, length: int) -> Callable[[Clip], tuple[bytes, int]]:
    def damage(clip: Clip) -> tuple[bytes, int]:
        at = clip.payload_start + int((len(clip.data) - clip.payload_start) * fraction)
        data = bytearray(clip.data)
        data[at : at + length] = bytes(min(length, len(data) - at))
        return bytes(data), at

    return damage


def _zero_index(clip: Clip) -> tuple[bytes, int]:
    data = bytearray(clip.data)
    data[32 : clip.payload_start - 8] = bytes(clip.payload_start - 40)
    return bytes(data), 0


def _replace(data: bytes) -> Callable[[Clip], tuple[bytes, int]]:
    return lambda _clip: (data, 0)


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
    b"\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00"
    b"\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82"
)

# (name, base clip: (container, faststart), damage)
VARIANTS: list[tuple[str, tuple[str, bool], Callable[[Clip], tuple[bytes, int]]]] = [
    ("empty", ("mp4", True), _replace(b"")),
    ("not-a-video", ("mp4", True), _replace(b"camera notes\n" * 400)),
    ("png", ("mp4", True), _replace(PNG)),
    ("random-bytes", ("mp4", True), _replace(random.Random(7).randbytes(200_000))),
    ("mp4-header-cut", ("mp4", True), _cut_at(20)),
    ("mp4-index-cut", ("mp4", True), _cut_index),
    ("mp4-index-zeroed", ("mp4", True), _zero_index),
    ("mp4-trailing-index-lost", ("mp4", False), _cut_trailing_index),
    ("mp4-stream-cut-30", ("mp4", True), _cut(0.3)),
    ("mp4-stream-cut-70", ("mp4", True), _cut(0.7)),
    ("mp4-stream-cut-97", ("mp4", True), _cut(0.97)),
    ("mp4-zeroed-4k", ("mp4", True), _zero(0.4, 4096)),
    ("mp4-zeroed-200k", ("mp4", True), _zero(0.3, 200_000)),
    ("mp4-flips-3e-6", ("mp4", True), _flip(3e-6, 1)),
    ("mp4-flips-1e-5", ("mp4", True), _flip(1e-5, 2)),
    ("mp4-flips-1e-4", ("mp4", True), _flip(1e-4, 3)),
    ("mp4-flips-1e-3", ("mp4", True), _flip(1e-3, 4)),
    ("mp4-flips-anywhere-1e-4", ("mp4", True), _flip_anywhere(1e-4, 5)),
    ("ts-header-cut", ("mpegts", False), _cut_at(100)),
    ("ts-stream-cut-50", ("mpegts", False), _cut(0.5)),
    ("ts-zeroed-64k", ("mpegts", False), _zero(0.5, 65_536)),
    ("ts-flips-1e-5", ("mpegts", False), _flip(1e-5, 6)),
    ("ts-flips-1e-3", ("mpegts", False), _flip(1e-3, 7)),
    ("mkv-stream-cut-60", ("matroska", False), _cut(0.6)),
    ("mkv-flips-1e-4", ("matroska", False), _flip(1e-4, 8)),
]


def make_corpus(source: Path, folder: Path) -> list[Damaged]:
    """Every variant of ``VARIANTS`` written into ``folder``."""
    clips: dict[tuple[str, bool], Clip] = {}
    corpus = []
    for name, base, damage in VARIANTS:
        if base not in clips:
            clips[base] = make_clip(source, folder, *base)
        clip = clips[base]
        data, first_damaged = damage(clip)
        path = folder / f"{name}{clip.path.suffix}"
        path.write_bytes(data)
        corpus.append(Damaged(name, path, _intact(clip, first_damaged)))
    return corpus
