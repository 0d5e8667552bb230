"""H.264 and HEVC packets to Annex B (start codes), with the parameter sets in
front of every keyframe.

A clip is muxed from copied packets with no demuxer behind it, so no stream
carries the codec's extradata into the muxer; the MP4 muxer then takes the
parameter sets from the first packet, which it can only do when they ride in
band, in Annex B form. Packets from an MP4 or MKV source are length-prefixed
(``avcC``/``hvcC`` extradata); packets from RTSP are Annex B already. This is
FFmpeg's ``h264_mp4toannexb``/``hevc_mp4toannexb``, written here because
PyAV's bitstream filters need a demuxed stream for their parameters.
"""

from __future__ import annotations

START = b"\x00\x00\x00\x01"
ANNEX_B_CODECS = frozenset({"h264", "hevc"})


class AnnexB:
    """Rewrites one stream's packets, given its extradata."""

    def __init__(self, codec: str, extradata: bytes | None) -> None:
        """Raises ValueError: the extradata is neither Annex B nor a valid
        ``avcC``/``hvcC`` record."""
        self.codec = codec
        self.length_size = 0  # 0: packets are Annex B already
        self.parameters = b""
        data = extradata or b""
        if codec not in ANNEX_B_CODECS or not data:
            return
        if data.startswith((b"\x00\x00\x01", START)):
            self.parameters = data
        elif codec == "h264":
            self.length_size, self.parameters = _avcc(data)
        else:
            self.length_size, self.parameters = _hvcc(data)

    def packet(self, data: bytes, keyframe: bool) -> bytes:
        """``data`` in Annex B; a keyframe with the parameter sets before it."""
        if self.codec not in ANNEX_B_CODECS:
            return data
        if self.length_size:
            data = _split(data, self.length_size)
        return self.parameters + data if keyframe else data


def _split(data: bytes, size: int) -> bytes:
    out = bytearray()
    at = 0
    while at + size <= len(data):
        length = int.from_bytes(data[at : at + size], "big")
        at += size
        out += START + data[at : at + length]
        at += length
    return bytes(out)


def _units(data: bytes, at: int, count: int, units: list[bytes]) -> int:
    """Appends ``count`` NAL units, each after its 2-byte length, read from
    ``at``; returns where they end."""
    for _ in range(count):
        length = int.from_bytes(data[at : at + 2], "big")
        units.append(data[at + 2 : at + 2 + length])
        at += 2 + length
    return at


def _avcc(data: bytes) -> tuple[int, bytes]:
    """(NAL length size, SPS and PPS in Annex B) of an ``avcC`` record."""
    if len(data) < 7 or data[0] != 1:
        raise ValueError("H.264 extradata is neither Annex B nor avcC")
    size = (data[4] & 3) + 1
    units: list[bytes] = []
    at = 5
    for mask in (0x1F, 0xFF):  # the SPS count (low 5 bits), then the PPS count
        count = data[at] & mask
        at += 1
        at = _units(data, at, count, units)
        if at > len(data):
            raise ValueError("H.264 avcC extradata is cut short")
    return size, b"".join(START + u for u in units)


def _hvcc(data: bytes) -> tuple[int, bytes]:
    """(NAL length size, VPS, SPS and PPS in Annex B) of an ``hvcC`` record."""
    if len(data) < 23:
        raise ValueError("HEVC extradata is neither Annex B nor hvcC")
    size = (data[21] & 3) + 1
    units: list[bytes] = []
    at = 23
    for _ in range(data[22]):
        count = int.from_bytes(data[at + 1 : at + 3], "big")
        at = _units(data, at + 3, count, units)
    if at > len(data):
        raise ValueError("HEVC hvcC extradata is cut short")
    return size, b"".join(START + u for u in units)
