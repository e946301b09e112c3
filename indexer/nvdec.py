"""GPU decoding (``--decoder nvdec``): NVDEC through PyNvVideoCodec, in the encoder's process.

``GpuPool`` has ``workers.WorkerPool``'s interface: ``sessions`` threads each decode a file at a time (NVDEC
engines decode several streams at once) into a bounded queue the ingestion loop reads. The events are
``decode.decode_video``'s, but frames are uint8 (T, 3, S, S) tensors on the encoder's device, never in host
memory (JPEG thumbnails are). What this path cannot decode or get right (not 8-bit 4:2:0 of a codec NVDEC
decodes, no timestamps, frames ending before the declared duration) raises ``UseCpu``: the CPU workers,
started on first need, decode that file ("restart" voids what the GPU sent). No PyAV: PyNvVideoCodec
demuxes, OpenCV reads rotation and pixel aspect. Frame times are ``model.video``'s (``shown_frames``); each
plane is scaled as libswscale does (antialiased, same filter family), converted with the stream's matrix
and range (untagged: BT.709 from 720 lines), then turned upright, as ``model.video_frames``.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, Generic, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from model.files import sha256_of_file
from model.video import sample_times
from model.video_frames import HD_MIN_HEIGHT, display_size, resize_plan
from model.video_pyav import TIME_EPS, frame_rate

from .clips import clip_windows
from .decode import DecodedChunk, DecodedClip, DecodeSpec, Probed, jpeg_thumbnail
from .errors import IndexerError
from .workers import Event, Message, Owner, Task, WorkerPool

log = logging.getLogger(__name__)

DECODERS = ("auto", "cpu", "nvdec")
NVDEC_CODECS = {"H264": "h264", "HEVC": "hevc", "VP9": "vp9", "AV1": "av1", "VP8": "vp8", "MPEG2": "mpeg2video"}
MATRICES = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}  # (Kr, Kb)
NOPTS = -(2**63)  # FFmpeg's AV_NOPTS_VALUE
Planes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 Y (H, W), U and V (ceil(H/2), ceil(W/2))
GpuDecodeFn = Callable[[str, "str | None", DecodeSpec, torch.device], Iterator[Event]]


class UseCpu(Exception):
    """This path gives up on a file: the CPU workers decode it (the message says why)."""


def nvdec_unavailable(device: str | torch.device) -> str | None:
    """Why NVDEC cannot feed an encoder on ``device`` here, or None when it can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"the encoder runs on {device}, not a CUDA GPU (NVDEC frames go to the encoder on the GPU)"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        nvc = importlib.import_module("PyNvVideoCodec")
    except Exception as exc:  # not installed, or e.g. RuntimeError: no libnvidia-encode.so.1 (no driver)
        if isinstance(exc, ModuleNotFoundError) and exc.name == "PyNvVideoCodec":
            return "PyNvVideoCodec is not installed (pip install PyNvVideoCodec)"
        return f"PyNvVideoCodec fails to load: {_first_line(exc)}"
    try:
        importlib.import_module("cv2")
    except Exception as exc:
        return f"OpenCV (cv2), which reads display rotation and pixel aspect here, does not import: {_first_line(exc)}"
    try:  # an H.264 decoder session: the driver's NVDEC library is there and works
        nvc.CreateDecoder(gpuid=_gpu(device), codec=nvc.cudaVideoCodec.H264, cudacontext=0, cudastream=0)
    except Exception as exc:
        return f"PyNvVideoCodec cannot start an NVDEC decoder: {_first_line(exc)}"
    return None


def choose_decoder(requested: str, device: str | torch.device, *, injected: bool = False) -> str:
    """ "cpu" or "nvdec" for ``--decoder requested`` and an encoder on ``device`` (``injected``: a GPU decode
    function was given, which needs no check); nvdec where it cannot work raises IndexerError naming why."""
    if requested not in DECODERS:
        raise IndexerError(f"--decoder {requested!r}: expected one of {', '.join(DECODERS)}")
    if requested == "cpu":
        return "cpu"
    reason = None if injected else nvdec_unavailable(device)
    if reason is None:
        log.info("decoder: nvdec (GPU decoding in this process)%s", "" if requested == "nvdec" else ", chosen by auto")
        return "nvdec"
    if requested == "nvdec":
        raise IndexerError(f"--decoder nvdec cannot work here: {reason}")
    log.info("decoder: cpu, chosen by auto: NVDEC is not used because %s", reason)
    return "cpu"


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['no message'])[0]}"[:300]


def _gpu(device: torch.device) -> int:
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
        started = time.perf_counter()
        try:
            stat = os.stat(path)
            probed = Probed(path, "ok", size=stat.st_size, mtime_ns=stat.st_mtime_ns, decoder="nvdec")
            probed.content_hash = sha256_of_file(path)
        except OSError as exc:
            yield Probed(path, "failed", error=f"cannot read the file: {exc.strerror or exc}")
            return
        probed.timings["hash"] = time.perf_counter() - started
        if known_hash is not None and probed.content_hash == known_hash:
            probed.status = "unchanged"
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


def _frames(made: dict[int, torch.Tensor], places: list[int]) -> np.ndarray:
    # decode.DecodedClip says ndarray: this path's frames are tensors on the device (encode_clips takes both)
    frames: Any = torch.stack([made[k] for k in places])
    return frames


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
            raise UseCpu(f"PyNvVideoCodec cannot open it ({_first_line(exc)})") from None
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
        nvc, gpu = self._nvc, _gpu(self.device)
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


def decode_video_nvdec(path: str, known_hash: str | None, spec: DecodeSpec, device: torch.device) -> Iterator[Event]:
    """The GPU pool's decode function: ``decode_on_device`` with PyNvVideoCodec."""
    return decode_on_device(path, known_hash, spec, device, lambda p: NvdecSource(p, device))


class GpuPool(Generic[Owner]):
    """``sessions`` decoding threads on ``device`` behind ``workers.WorkerPool``'s interface; the files they
    give up on go to ``cpu_pool()``, made on first need. At most ``2 * sessions`` events wait to be read."""

    def __init__(
        self,
        sessions: int,
        spec: DecodeSpec,
        device: torch.device,
        cpu_pool: Callable[[], WorkerPool[Owner]],
        decode: GpuDecodeFn = decode_video_nvdec,
    ) -> None:
        self.sessions, self.spec, self.decode, self._make_cpu = sessions, spec, decode, cpu_pool
        self.device = torch.device(device.type, _gpu(device)) if device.type == "cuda" else device  # an index
        self._tasks: queue.Queue[Task[Owner] | None] = queue.Queue()
        self._events: queue.Queue[tuple[str, Task[Owner], Any]] = queue.Queue(maxsize=2 * sessions)
        self._running = 0  # tasks given to the threads whose last word is not read yet
        self._fallback: deque[Task[Owner]] = deque()
        self._cpu: WorkerPool[Owner] | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve, name=f"tvr-nvdec-{i}", daemon=True) for i in range(sessions)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> bool:
        return self._running > 0 or (self._cpu is not None and self._cpu.busy)

    @property
    def has_retries(self) -> bool:
        return bool(self._fallback) or (self._cpu is not None and self._cpu.has_retries)

    def fill(self, next_task: Callable[[], Task[Owner] | None]) -> None:
        if self._fallback or (self._cpu is not None and self._cpu.has_retries):
            self._cpu = self._cpu or self._make_cpu()
            self._cpu.fill(lambda: self._fallback.popleft() if self._fallback else None)
        while self._running < self.sessions and (task := next_task()) is not None:
            self._running += 1
            self._tasks.put(task)

    def poll(self, timeout: float | None) -> list[Message[Owner]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            cpu = self._cpu if self._cpu is not None and self._cpu.busy else None
            messages = self._drain(0.0) + (cpu.poll(0) if cpu else [])
            left = None if deadline is None else deadline - time.monotonic()
            if messages or not self.busy or (left is not None and left <= 0):
                return messages
            if cpu and not self._running:
                return cpu.poll(left)
            messages = self._drain(min(0.05, left or 0.05) if cpu else left)  # both busy: take turns
            if messages:
                return messages

    def _drain(self, wait: float | None) -> list[Message[Owner]]:
        """Messages of the events waiting, waiting ``wait`` seconds for the first (None: until it comes)."""
        messages: list[Message[Owner]] = []
        with contextlib.suppress(queue.Empty):
            item = self._events.get(timeout=wait) if wait != 0 else self._events.get_nowait()
            while True:
                kind, task, value = item
                if kind == "event":
                    messages.append(Message(task.owner, "event", value))
                else:
                    self._running -= 1
                    if kind == "done":
                        messages.append(Message(task.owner, "done"))
                    else:  # given up: to the CPU pool, and void what the GPU sent (value: whether it sent any)
                        self._fallback.append(task)
                        messages += [Message(task.owner, "restart")] if value else []
                item = self._events.get_nowait()
        return messages

    def _serve(self) -> None:
        session: torch.cuda.Stream | None = None  # this thread's CUDA stream: sessions work side by side
        while (task := self._tasks.get()) is not None and not self._stop.is_set():
            sent = False
            try:
                if self.device.type == "cuda" and session is None:
                    torch.cuda.set_device(self.device)
                    session = torch.cuda.Stream(self.device)
                with torch.cuda.stream(session) if session is not None else contextlib.nullcontext():
                    for event in self.decode(task.path, task.known_hash, self.spec, self.device):
                        if not self._put(("event", task, event)):
                            return  # closing
                        sent = True
                self._put(("done", task, None))
            except Exception as exc:  # UseCpu, or anything else: the CPU workers decode this file
                level = logging.DEBUG if isinstance(exc, UseCpu) else logging.WARNING
                log.log(level, "%s: decoding on the CPU instead (%s)", task.path, _first_line(exc))
                self._put(("fallback", task, sent))

    def _put(self, item: tuple[str, Task[Owner], Any]) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._events.put(item, timeout=0.1)
                return True
        return False

    def close(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        if self._cpu is not None:
            self._cpu.close()
