"""Writes the video fixtures of this folder with PyAV alone (no ffmpeg command line):

- ``streams.mkv``: H.264 video, a SubRip stream (English), an ASS stream (French, with its script header) and
  a PGS bitmap stream (an empty display set: bitmap subtitles are skipped, never decoded);
- ``mov_text.mp4``: H.264 video and an MP4 timed-text (``mov_text``) stream (English).

The SubRip and ASS streams are remuxed from text files through FFmpeg's own demuxers (as ``ffmpeg -c copy``
does); the ``mov_text`` and PGS packets are written by hand in their formats. Run from anywhere:
``python tests/data/subtitles/make_media.py``.
"""

from __future__ import annotations

import struct
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).parent
SRT = """1
00:00:00,200 --> 00:00:00,900
The <i>runners</i> keep running

2
00:00:00,500 --> 00:00:01,200
over the bridge

3
00:00:01,300 --> 00:00:01,800
café au lait
"""
ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, \
Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, \
MarginV, Encoding
Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.30,0:00:01.00,Default,,0,0,0,,{\\an8}Le {\\i1}pont{\\i0}\\Nau matin
"""
MOV_TEXT = [(0.2, 0.9, "Hello world"), (1.0, 1.5, "Dogs are running")]
# A PGS display set that shows nothing: a presentation composition segment (32x32, no objects) and an end one.
PGS_EMPTY = b"\x16" + struct.pack(">H", 11) + struct.pack(">HHBHBBBB", 32, 32, 0x10, 0, 0x80, 0, 0, 0) + b"\x80\x00\x00"


def video_packets(container: av.container.OutputContainer, colour: int) -> list[av.Packet]:
    stream = container.add_stream("libx264", rate=5, options={"preset": "ultrafast"})
    stream.width = stream.height = 32
    stream.pix_fmt = "yuv420p"
    packets: list[av.Packet] = []
    for i in range(10):
        image = np.full((32, 32, 3), colour, np.uint8)
        image[12:20, i * 2 : i * 2 + 8] = 255 - colour
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += stream.encode(frame)
    return packets + list(stream.encode())


def remuxed(container: av.container.OutputContainer, text: str, suffix: str, language: str) -> list[av.Packet]:
    """Packets of a subtitle file read by FFmpeg's demuxer, for a stream of ``container`` made from it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"subtitles{suffix}"
        path.write_text(text, encoding="utf-8")
        with av.open(str(path)) as source:
            stream = container.add_stream_from_template(source.streams.subtitles[0])
            stream.metadata["language"] = language
            packets = [p for p in source.demux() if p.size]
    for packet in packets:
        packet.stream = stream
    return packets


def timed(
    container: av.container.OutputContainer, codec: str, cues: list[tuple[float, float, bytes]]
) -> list[av.Packet]:
    """Packets written by hand in ``codec``'s format, for a stream of ``container`` that only muxes them."""
    stream = container.add_mux_stream(codec, time_base=Fraction(1, 1000))
    stream.metadata["language"] = "eng"
    packets = []
    for start, end, data in cues:
        packet = av.Packet(data)
        packet.stream, packet.time_base = stream, Fraction(1, 1000)
        packet.pts = packet.dts = round(start * 1000)
        packet.duration = round((end - start) * 1000)
        packets.append(packet)
    return packets


def write(path: Path, make: list) -> None:
    """A video with the subtitle streams that each of ``make`` adds, packets in decoding order."""
    with av.open(str(path), "w") as container:
        packets = video_packets(container, 60)
        for maker in make:
            packets += maker(container)
        for packet in sorted(packets, key=lambda p: float(p.dts * p.time_base)):
            container.mux(packet)


if __name__ == "__main__":
    write(
        HERE / "streams.mkv",
        [
            lambda c: remuxed(c, SRT, ".srt", "eng"),
            lambda c: remuxed(c, ASS, ".ass", "fre"),
            lambda c: timed(c, "hdmv_pgs_subtitle", [(0.3, 1.0, PGS_EMPTY)]),
        ],
    )
    mov_text = [(a, b, struct.pack(">H", len(t.encode())) + t.encode()) for a, b, t in MOV_TEXT]
    write(HERE / "mov_text.mp4", [lambda c: timed(c, "mov_text", mov_text)])
