"""Writing video files with PyAV: the one writer behind the tests' media, ``tvr synth`` and the benchmark corpus.

write_video("clip.mp4", frames, fps=30)                           # H.264 yuv420p, x264's defaults
write_video("cam.mp4", frame_iter, fps=30, gop=60, preset="veryfast", crf=21)  # frames from an iterator
write_video("phone.mp4", frames, fps=30, rotation=-90)             # shown turned 90 degrees clockwise
write_video("hdv.mp4", frames, fps=25, sample_aspect_ratio=Fraction(4, 3))
write_video("hdr.mp4", frames, fps=30, codec="libx265", pix_fmt="yuv420p10le")
write_video("vfr.mp4", frames, timestamps=[0.0, 0.04, 0.2, 0.21])  # variable frame rate

Frames are numpy arrays in ``frame_format`` (``rgb24`` (H, W, 3) uint8 by default; any layout PyAV's
``VideoFrame.from_ndarray`` takes, e.g. ``yuv420p`` planes (H * 3 / 2, W)): one array of all frames, or
any iterable of single frames, consumed one at a time so that a long file is never held in memory. PyAV
converts them to ``pix_fmt`` (swscale) when the two differ.

Everything the writer sets is a property of the file, read back by any demuxer and decoder:

- ``gop``: the keyframe interval in frames (AVCodecContext.gop_size: x264/x265 ``keyint``, libvpx
  ``kf_max_dist``); None keeps the encoder's default (x264 and x265: 250). Scene-cut detection stays on: a
  cut in the content may add a keyframe (for a fixed GOP: ``encoder_options={"sc_threshold": "0"}`` for
  x264, ``{"x265-params": "scenecut=0"}`` for x265, ``{"keyint_min": str(gop)}`` for libvpx).
- ``bframes``: the most consecutive B-frames (``max_b_frames``); None keeps the encoder's default (x264: 3
  for the presets from ``superfast`` to ``slower``, none for ``ultrafast``).
- ``preset``, ``crf`` and ``encoder_options``: more options for the encoder, as strings: its own (x264's
  ``tune``, ``x264-params``...) and FFmpeg's generic ones (``b``, ``maxrate``, ``bufsize`` for a bitrate).
- ``rotation``: the display matrix in the container, as phones write it: degrees counter-clockwise, as
  ``VideoFrame.rotation`` and ffprobe's "rotation of ... degrees" read it back. A phone held upright
  records landscape frames and -90 (turn 90 degrees clockwise to show). Written with PyAV 18's
  ``VideoStream.set_display_rotation`` (an ``AV_PKT_DATA_DISPLAYMATRIX`` coded side data of the stream,
  which the mp4/mov and matroska muxers store).
- ``sample_aspect_ratio``: the shape of a pixel (width / height), e.g. 4:3 for 1440x1080 HDV shown as
  1920x1080; stored in the codec's stream header (H.264/HEVC VUI) and by the muxer (mp4 ``pasp``).
- ``timestamps``: seconds of each frame (increasing), a variable frame rate; ``fps`` is then only the
  nominal rate the stream declares. Without them frame ``i`` is at ``i / fps`` exactly (time base 1/fps).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import numpy as np

# The time base of variable-frame-rate files: MPEG's 90 kHz clock, fine enough for any frame time.
VFR_TIME_BASE = Fraction(1, 90_000)
COLORSPACES = {"bt709": 1, "bt601": 6}  # the matrix coefficients each is tagged with (H.273: 1, 6 = SMPTE 170M)


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: float | Fraction = 25,
    timestamps: Iterable[float] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    frame_format: str = "rgb24",
    gop: int | None = None,
    bframes: int | None = None,
    preset: str | None = None,
    crf: float | None = None,
    encoder_options: Mapping[str, str] | None = None,
    threads: int | None = None,
    rotation: float | None = None,
    sample_aspect_ratio: Fraction | None = None,
    colorspace: str | None = None,
    container_format: str | None = None,
    container_options: Mapping[str, str] | None = None,
) -> int:
    """Encode ``frames`` into ``path`` and return the number of frames written.

    ``codec`` is a PyAV encoder name (``libx264``, ``libx265``, ``libvpx-vp9``, ``mjpeg``...), ``pix_fmt``
    the pixel format it stores (``yuv420p``, ``yuv420p10le``...). ``threads``: the encoder's threads (None:
    its default; 1 makes x264 independent of the machine's core count). ``container_format`` defaults to
    what the suffix of ``path`` implies; ``container_options`` go to the muxer (e.g. ``movflags``).
    ``colorspace`` ("bt709" or "bt601"): RGB frames are converted to YUV with that matrix (limited range)
    and the stream is tagged with it, as cameras tag theirs; None converts with libswscale's default
    (BT.601) and leaves the stream untagged. The other options are described in the module's docstring.
    Raises ValueError for no frames, frames of different sizes, or timestamps that do not match the frames.
    """
    import av

    rate = _rate(fps)
    if gop is not None and gop < 1:
        raise ValueError(f"gop must be >= 1 frame, got {gop}")
    if bframes is not None and bframes < 0:
        raise ValueError(f"bframes must be >= 0, got {bframes}")
    source: Iterator[np.ndarray] = iter(frames)
    first = next(source, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    width, height = _frame_size(first, frame_format)
    times: Iterator[float] | None = iter(timestamps) if timestamps is not None else None

    options: dict[str, str] = {}
    if crf is not None:
        options["crf"] = f"{crf:g}"
    if preset is not None:
        options["preset"] = preset
    options.update(encoder_options or {})

    count = 0
    with av.open(str(path), mode="w", format=container_format, options=dict(container_options or {})) as container:
        stream: Any = container.add_stream(codec, rate=rate, options=options or None)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        context = stream.codec_context
        if threads is not None:
            context.thread_count = threads
        if gop is not None:
            context.gop_size = gop
        if bframes is not None:
            context.max_b_frames = bframes
        if sample_aspect_ratio is not None:
            context.sample_aspect_ratio = Fraction(sample_aspect_ratio)
        if times is not None:  # otherwise the encoder's time base is 1/rate and frame i has pts i
            context.time_base = VFR_TIME_BASE
            stream.time_base = VFR_TIME_BASE
        if rotation is not None:
            stream.set_display_rotation(float(rotation))
        matrix = None
        if colorspace is not None:
            from av.video.reformatter import ColorRange, Colorspace

            if colorspace not in COLORSPACES:
                raise ValueError(f"colorspace must be one of {', '.join(COLORSPACES)}, got {colorspace!r}")
            matrix = Colorspace.ITU709 if colorspace == "bt709" else Colorspace.ITU601
            context.colorspace, context.color_range = COLORSPACES[colorspace], ColorRange.MPEG

        last_pts = -1
        for image in itertools.chain([first], source):
            if _frame_size(image, frame_format) != (width, height):
                raise ValueError(
                    f"frame {count} of {path} is {_frame_size(image, frame_format)} (width, height), "
                    f"the first was {(width, height)}"
                )
            frame = av.VideoFrame.from_ndarray(image, format=frame_format)
            if matrix is not None and frame_format == "rgb24":
                frame = frame.reformat(format=pix_fmt, dst_colorspace=matrix, dst_color_range="MPEG")
            if times is None:
                frame.pts = count
            else:
                seconds = next(times, None)
                if seconds is None:
                    raise ValueError(f"fewer timestamps than frames for {path}")
                frame.pts = round(float(seconds) / VFR_TIME_BASE)
                frame.time_base = VFR_TIME_BASE
                if frame.pts <= last_pts:
                    raise ValueError(f"timestamps for {path} must increase: {seconds} s at frame {count}")
                last_pts = frame.pts
            container.mux(stream.encode(frame))
            count += 1
        if times is not None and next(times, None) is not None:
            raise ValueError(f"more timestamps than frames for {path}")
        container.mux(stream.encode(None))
    return count


def _rate(fps: float | Fraction) -> Fraction:
    """The frame rate as a fraction: 25 -> 25, 29.97 -> 30000/1001, 23.976 -> 24000/1001, 12.5 -> 25/2."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if isinstance(fps, Fraction) or float(fps).is_integer():
        return Fraction(fps)
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)  # the NTSC rates, written 29.97 or 23.976
    if abs(float(ntsc) - fps) < 0.005:
        return ntsc
    return Fraction(fps).limit_denominator(1001)


def _frame_size(image: np.ndarray, frame_format: str) -> tuple[int, int]:
    """(width, height) of one frame of ``frame_format`` as PyAV's ``from_ndarray`` lays it out."""
    if image.ndim < 2:
        raise ValueError(f"a frame must be an array of at least 2 dimensions, got shape {image.shape}")
    rows, columns = image.shape[0], image.shape[1]
    if frame_format in {"yuv420p", "yuvj420p", "yuv420p10le", "nv12"}:
        return columns, rows * 2 // 3  # the chroma planes are stacked under the luma plane
    return columns, rows
