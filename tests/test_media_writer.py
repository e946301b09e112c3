"""model.media.write_video: each option is a property of the written file, read back with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import moving_square

from model.media import write_video


def keyframe_indices(path: Path) -> list[int]:
    """Frame numbers (presentation order, from 0) of the packets the container marks as keyframes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted((p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None)
    return [i for i, (_, key) in enumerate(pts) if key]


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_gop_puts_keyframes_where_asked_and_bframes_between(tmp_path: Path) -> None:
    path = tmp_path / "gop.mp4"
    assert write_video(path, moving_square(45, 64), fps=15, gop=10, bframes=2, preset="veryfast", crf=23) == 45
    assert keyframe_indices(path) == [0, 10, 20, 30, 40]
    types = [av.video.frame.PictureType(frame.pict_type).name for frame in decoded(path)]
    assert [i for i, t in enumerate(types) if t == "I"] == [0, 10, 20, 30, 40]
    assert "B" in types  # veryfast keeps x264's B-frames

    no_b = tmp_path / "no_b.mp4"
    write_video(no_b, moving_square(45, 64), fps=15, gop=10, bframes=0, preset="veryfast")
    assert {av.video.frame.PictureType(frame.pict_type).name for frame in decoded(no_b)} == {"I", "P"}


def test_default_gop_is_the_encoders(tmp_path: Path) -> None:
    path = tmp_path / "default.mp4"
    write_video(path, moving_square(60, 64), fps=30)
    assert keyframe_indices(path) == [0]  # x264's keyint 250: one keyframe in 60 frames of steady motion


def test_rotation_is_stored_as_a_display_matrix(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    write_video(path, moving_square(5, 64)[:, :, :48], fps=30, rotation=-90)  # 48x64 stored
    frames = decoded(path)
    assert frames[0].rotation == -90
    assert (frames[0].width, frames[0].height) == (48, 64)  # the pixels are stored as given
    plain = tmp_path / "plain.mp4"
    write_video(plain, moving_square(5, 64), fps=30)
    assert decoded(plain)[0].rotation == 0


def test_sample_aspect_ratio_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "sar.mp4"
    write_video(path, moving_square(5, 64), fps=25, sample_aspect_ratio=Fraction(16, 15))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.sample_aspect_ratio == Fraction(16, 15)
        assert stream.codec_context.sample_aspect_ratio == Fraction(16, 15)  # in the H.264 stream itself


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_ten_bit_pixel_format_is_stored(tmp_path: Path, codec: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} is not in this PyAV build")
    path = tmp_path / f"10bit-{codec}.mp4"
    options = {"x265-params": "log-level=error"} if codec == "libx265" else None
    write_video(path, moving_square(5, 64), fps=25, codec=codec, pix_fmt="yuv420p10le", encoder_options=options)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert decoded(path)[0].format.name == "yuv420p10le"


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path) -> None:
    times = [0.0, 0.01, 0.25, 0.26, 1.0, 1.033, 2.5]
    path = tmp_path / "vfr.mp4"
    write_video(path, moving_square(len(times), 64), fps=30, timestamps=times)
    got = [float(frame.time) for frame in decoded(path)]
    assert got == pytest.approx(times, abs=1e-4)


def test_constant_frame_rate_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "ntsc.mp4"
    write_video(path, moving_square(10, 64), fps=29.97)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)
    assert [frame.time for frame in decoded(path)] == pytest.approx([i * 1001 / 30000 for i in range(10)], abs=1e-4)


def test_frames_from_an_iterator_are_consumed_one_at_a_time(tmp_path: Path) -> None:
    held: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(moving_square(20, 64)):
            held.append(i)
            yield frame

    path = tmp_path / "iter.webm"
    assert write_video(path, frames(), fps=10, codec="libvpx-vp9", gop=5) == 20
    assert held == list(range(20)) and len(decoded(path)) == 20
    assert keyframe_indices(path) == [0, 5, 10, 15]


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", iter([]), fps=10)
    mixed = [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "mixed.mp4", mixed, fps=10)
    with pytest.raises(ValueError, match="increase"):
        write_video(tmp_path / "back.mp4", moving_square(3, 32), timestamps=[0.0, 0.5, 0.4])
    with pytest.raises(ValueError, match="fewer timestamps"):
        write_video(tmp_path / "short.mp4", moving_square(3, 32), timestamps=[0.0, 0.5])
