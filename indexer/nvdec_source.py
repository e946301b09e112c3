"""Reading a file with NVDEC (PyNvVideoCodec) for the GPU decoding path (``nvdec``): its frame timeline,
its facts, and its frames scaled, converted and turned upright on the GPU.

No PyAV: PyNvVideoCodec demuxes, OpenCV reads rotation and pixel aspect. Frame times are ``model.video``'s
(``shown_frames``); each plane is scaled as libswscale does (antialiased, same filter family), converted with
the stream's matrix and range (untagged: BT.709 from 720 lines), then turned upright, as
``model.video_frames``. What this path cannot decode or get right raises ``UseCpu``.
"""

from __future__ import annotations

import bisect
import importlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from model.video import sample_times
from model.video_frames import HD_MIN_HEIGHT, display_size, resize_plan
from model.video_pyav import TIME_EPS, frame_rate

from .clips import clip_windows
from .decode import DecodedChunk, DecodedClip, DecodeSpec, hash_file, jpeg_thumbnail
from .workers import Event

log = logging.getLogger(__name__)

NVDEC_CODECS = {"H264": "h264", "HEVC": "hevc", "VP9": "vp9", "AV1": "av1", "VP8": "vp8", "MPEG2": "mpeg2video"}
MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}  # (Kr, Kb)
NOPTS = -(2**63)  # FFmpeg's AV_NOPTS_VALUE
Planes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 Y (H, W), U and V (ceil(H/2), ceil(W/2))


class UseCpu(Exception):
    """This path gives up on a file: the CPU workers decode it (the message says why)."""


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['no message'])[0]}"[:300]


def gpu_index(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return device.index if device.index is not None else torch.cuda.current_device()


def _name(value: Any) -> str:  # an enum member's name (pybind11's print as Type.NAME)
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Timeline:
    times: list[float]  # seconds from the first frame, in display order
    index: dict[int, int]  # a frame's timestamp (stream units) -> its place in ``times``
    duration: float  # its frames' durations summed (what the container declares as the stream's)


def timeline(packets: Iterable[tuple[int, int]], time_base: Fraction) -> Timeline:
    """The frames of a stream from the (pts, duration) of each packet that is shown, in any order."""
    entries = list(packets)
    stamps = sorted(pts for pts, _ in entries)
    if not stamps:
        raise UseCpu("the stream has no frames")
    if stamps[0] == NOPTS or len(set(stamps)) < len(stamps):
        raise UseCpu("frames without timestamps, or sharing one")
    times = [float((pts - stamps[0]) * time_base) for pts in stamps]
    if all(length > 0 for _, length in entries):
        duration = float(sum(length for _, length in entries) * time_base)
    else:  # durations unknown: the last frame lasts as long as the one before it
        duration = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0.0)
    return Timeline(times, {pts: i for i, pts in enumerate(stamps)}, duration)


def shown_frames(frame_times: Sequence[float], times: Iterable[float]) -> list[int]:
    """The place in ``frame_times`` (ascending) of the frame shown at each time: the last frame at or
    before it (within ``TIME_EPS``), the first frame for earlier times: ``model.video``'s rule."""
    return [max(0, bisect.bisect_right(frame_times, t + TIME_EPS) - 1) for t in times]


@dataclass(frozen=True)
class StreamFacts:
    codec: str
    width: int  # as stored, before the pixel aspect ratio and rotation
    height: int
    fps: float
    timeline: Timeline
    declared: float = 0.0  # the container's duration (0: unknown), to tell a truncated file
    matrix: str | None = None  # "bt709", "bt601", or None (untagged)
    full_range: bool = False
    rotation: int = 0  # display rotation, degrees counterclockwise
    sample_aspect: Fraction | None = None

    @property
    def display(self) -> tuple[int, int]:
        return display_size(self.width, self.height, self.sample_aspect, self.rotation)


def scaled(planes: Planes, facts: StreamFacts, width: int, height: int, interpolation: str = "bicubic") -> torch.Tensor:
    """uint8 (3, height, width) RGB upright: each plane scaled to the size (antialiased), then converted."""
    stored_w, stored_h = (height, width) if facts.rotation % 180 == 90 else (width, height)
    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    y, u, v = (
        F.interpolate(p[None, None].float(), (stored_h, stored_w), mode=mode, antialias=True, align_corners=False)[0, 0]
        for p in planes
    )
    u, v = u - 128.0, v - 128.0
    if not facts.full_range:
        y, u, v = (y - 16.0) * (255 / 219), u * (255 / 224), v * (255 / 224)
    kr, kb = MATRICES[facts.matrix or ("bt709" if facts.height >= HD_MIN_HEIGHT else "bt601")]
    kg = 1.0 - kr - kb
    r = y + 2 * (1 - kr) * v
    g = y - (2 * kb * (1 - kb) / kg) * u - (2 * kr * (1 - kr) / kg) * v
    b = y + 2 * (1 - kb) * u
    rgb = torch.stack([r, g, b]).round_().clamp_(0, 255).to(torch.uint8)
    turns = (facts.rotation // 90) % 4
    return torch.rot90(rgb, turns, dims=(1, 2)) if turns else rgb


def for_encoder(planes: Planes, facts: StreamFacts, spec: DecodeSpec) -> torch.Tensor:
    """uint8 (3, S, S): ``model.video_frames.AVFrame.for_encoder`` on the device."""
    new_w, new_h, (left, top, right, bottom) = resize_plan(*facts.display, spec.preprocess)
    image = scaled(planes, facts, new_w, new_h, spec.preprocess.interpolation)
    return F.pad(image, (-left, -right, -top, -bottom))  # negative: a centre crop; positive: black borders


def thumbnail(planes: Planes, facts: StreamFacts, width: int) -> bytes:
    """A JPEG ``width`` pixels wide at most, as ``DisplayFrame.thumbnail`` (copied to the host: it is small)."""
    shown_w, shown_h = facts.display
    if shown_w <= width:
        image = scaled(planes, facts, shown_w, shown_h)
    else:
        image = scaled(planes, facts, width, max(1, round(shown_h * width / shown_w)), "bilinear")
    return jpeg_thumbnail(image.permute(1, 2, 0).cpu().numpy())


class FrameSource(Protocol):
    """A file opened for this path (a quick check, or ``UseCpu``); ``scan`` reads its facts, ``frames``
    gives (place in the timeline, planes) in display order, each valid until the next is asked for."""

    def scan(self) -> StreamFacts: ...
    def frames(self) -> Iterator[tuple[int, Planes]]: ...
    def close(self) -> None: ...


def decode_on_device(
    path: str, known_hash: str | None, spec: DecodeSpec, device: torch.device, source: Callable[[str], FrameSource]
) -> Iterator[Event]:
    """``decode.decode_video`` with frames decoded by ``source`` and converted on ``device``."""
    stream = source(path)  # before hashing: a file this path cannot do goes to the CPU at once
    try:
        probed = hash_file(path, known_hash)
        probed.decoder = "" if probed.status == "failed" else "nvdec"
        if probed.status != "ok":
            yield probed
            return
        started = time.perf_counter()
        facts = stream.scan()
        line = facts.timeline
        tolerance = max(1.0, 2.0 / max(facts.fps, 1e-3), 0.05 * facts.declared)
        if facts.declared - line.duration > tolerance:
            raise UseCpu(f"frames end at {line.duration:.2f} s, the file declares {facts.declared:.2f} s")
        probed.duration, probed.fps, probed.codec = line.duration, facts.fps, facts.codec
        probed.width, probed.height = facts.display
        probed.windows = clip_windows(line.duration, spec.policy)
        probed.timings["open"] = time.perf_counter() - started
        yield probed
        yield from _chunks(stream, facts, probed.windows, spec, device)
    finally:
        stream.close()


def _chunks(
    stream: FrameSource, facts: StreamFacts, windows: list[tuple[float, float]], spec: DecodeSpec, device: torch.device
) -> Iterator[DecodedChunk]:
    positions, per_clip = list(enumerate(windows)), spec.num_frames + 1
    groups = [positions[i : i + spec.chunk_clips] for i in range(0, len(positions), spec.chunk_clips)]
    plans = []  # per chunk: each clip's frames' places in the timeline, then its thumbnail's
    for group in groups:
        times = [t for _, (a, b) in group for t in [*sample_times(a, b, spec.num_frames, spec.sampling), (a + b) / 2]]
        plans.append(shown_frames(facts.timeline.times, times))
    wanted = {k for plan in plans for i, k in enumerate(plan) if i % per_clip < spec.num_frames}
    thumbs = {k for plan in plans for i, k in enumerate(plan) if i % per_clip == spec.num_frames}
    made: dict[int, torch.Tensor] = {}
    jpegs: dict[int, bytes] = {}
    frames = stream.frames()
    for g, (group, plan) in enumerate(zip(groups, plans, strict=True)):
        timings = {"decode": 0.0, "convert": 0.0}
        while max(plan) not in made and max(plan) not in jpegs:  # decode up to the chunk's last frame
            started = time.perf_counter()
            place, planes = next(frames, (-1, None))
            converted = time.perf_counter()
            if planes is None:
                raise UseCpu(f"the decoder gave fewer frames than the file holds ({len(facts.timeline.times)})")
            if place in wanted:
                made[place] = for_encoder(planes, facts, spec)
            if place in thumbs:
                jpegs[place] = thumbnail(planes, facts, spec.thumbnail_width)
            timings["decode"] += converted - started
            timings["convert"] += time.perf_counter() - converted
        clips = []
        for i, (position, (start, end)) in enumerate(group):
            block = plan[i * per_clip : (i + 1) * per_clip]
            clips.append(DecodedClip(position, start, end, _frames(made, block[:-1]), jpegs[block[-1]]))
        if device.type == "cuda":  # the encoder's stream reads these: let this session's work finish first
            torch.cuda.current_stream(device).synchronize()
        yield DecodedChunk(clips, timings)
        keep = min(plans[g + 1]) if g + 1 < len(plans) else len(facts.timeline.times)
        made = {k: t for k, t in made.items() if k >= keep}  # what later chunks cannot need


def _frames(made: dict[int, torch.Tensor], places: list[int]) -> torch.Tensor:
    return torch.stack([made[k] for k in places])  # (T, 3, S, S) on the device


def display_metadata(path: str) -> tuple[int, Fraction | None, float]:
    """(rotation counterclockwise, pixel aspect ratio or None, declared seconds or 0) read with OpenCV's
    FFmpeg reader, which gives the display matrix as a clockwise angle."""
    cv2 = importlib.import_module("cv2")
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_NONE])
    try:
        if not capture.isOpened():
            raise UseCpu("OpenCV cannot open it to read its display rotation and pixel aspect ratio")
        clockwise = round(capture.get(cv2.CAP_PROP_ORIENTATION_META))
        if clockwise % 90:
            raise UseCpu(f"a display rotation of {clockwise} degrees")
        num, den = int(capture.get(cv2.CAP_PROP_SAR_NUM)), int(capture.get(cv2.CAP_PROP_SAR_DEN))
        count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
        declared = count / fps if count > 0 and fps > 0 else 0.0
        return (-clockwise) % 360, Fraction(num, den) if num > 0 and den > 0 else None, declared
    finally:
        capture.release()


class NvdecSource:
    """A file through PyNvVideoCodec: its header checked on opening, a demuxing pass for the timeline, then a
    second pass decoding on the GPU (frames kept there, as NV12, until converted)."""

    def __init__(self, path: str, device: torch.device) -> None:
        self.path, self.device = path, device
        self._nvc = nvc = importlib.import_module("PyNvVideoCodec")
        try:
            demuxer = nvc.CreateDemuxer(filename=path)
        except Exception as exc:
            raise UseCpu(f"PyNvVideoCodec cannot open it ({first_line(exc)})") from None
        self._codec_id = demuxer.GetNvCodecId()
        codec, depth, chroma = _name(self._codec_id), int(demuxer.BitDepth()), _name(demuxer.ChromaFormat())
        if codec not in NVDEC_CODECS or depth != 8 or chroma != "YUV420":
            raise UseCpu(f"{codec} {depth}-bit {chroma}: NVDEC decodes {', '.join(NVDEC_CODECS)} 8-bit 4:2:0 here")
        self._demuxer: Any = demuxer
        self._index: dict[int, int] = {}
        self._size = (0, 0)

    def scan(self) -> StreamFacts:
        demuxer = self._demuxer
        time_base = Fraction(demuxer.GetTimebaseNum(), demuxer.GetTimebaseDen())
        shown = [(p.pts, p.duration) for p in demuxer if p.bsl > 0 and not getattr(p, "discardable", 0)]
        line = timeline(shown, time_base)
        rotation, sample_aspect, declared = display_metadata(self.path)
        rates = SimpleNamespace(average_rate=demuxer.FrameRate(), guessed_rate=getattr(demuxer, "RFrameRate", int)())
        matrix = {"BT_709": "bt709", "BT_601": "bt601"}.get(_name(demuxer.ColorSpace()))
        self._index, self._size = line.index, (int(demuxer.Width()), int(demuxer.Height()))
        codec = NVDEC_CODECS[_name(self._codec_id)]
        full_range = _name(demuxer.ColorRange()) == "JPEG"
        fps = frame_rate(rates, default=0.0)
        return StreamFacts(codec, *self._size, fps, line, declared, matrix, full_range, rotation, sample_aspect)

    def frames(self) -> Iterator[tuple[int, Planes]]:
        nvc, gpu = self._nvc, gpu_index(self.device)
        decoder = nvc.CreateDecoder(gpuid=gpu, codec=self._codec_id, cudacontext=0, cudastream=0, usedevicememory=True)
        for packet in nvc.CreateDemuxer(filename=self.path):
            yield from self._shown(decoder.Decode(packet))
        while decoded := decoder.Decode(nvc.PacketData()):  # an empty packet: what the decoder holds back
            yield from self._shown(decoded)

    def _shown(self, decoded: list[Any]) -> Iterator[tuple[int, Planes]]:
        for frame in decoded:
            pts = frame.getPTS() if hasattr(frame, "getPTS") else frame.timestamp
            if pts not in self._index:
                raise UseCpu(f"a decoded frame's timestamp ({pts}) is no packet's")
            yield self._index[pts], self._planes(frame)
        if decoded and self.device.type == "cuda":  # the decoder reuses its frames' memory: finish with them
            torch.cuda.current_stream(self.device).synchronize()

    def _planes(self, frame: Any) -> Planes:
        if _name(getattr(frame, "format", "NV12")) != "NV12":
            raise UseCpu(f"decoded as {_name(frame.format)}, not NV12")
        surface = torch.from_dlpack(frame)  # (rows, width): Y rows, then interleaved U/V rows
        (w, h), ch, cw = self._size, (self._size[1] + 1) // 2, (self._size[0] + 1) // 2
        rows = surface.shape[0] * 2 // 3 if surface.dim() == 2 else 0  # luma rows, padding included
        if rows < h or surface.shape[0] < rows + ch or surface.shape[1] < 2 * cw:
            raise UseCpu(f"an NV12 surface of {tuple(surface.shape)} for {w}x{h} frames")
        uv = surface[rows : rows + ch, : 2 * cw]
        return surface[:h, :w], uv[:, 0::2], uv[:, 1::2]

    def close(self) -> None:
        self._demuxer = None
