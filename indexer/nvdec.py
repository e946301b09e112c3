"""GPU decoding (``--decoder nvdec``): choosing it, and the pool of NVDEC sessions in the encoder's process.

``GpuPool`` has ``workers.WorkerPool``'s interface: ``sessions`` threads each decode a file at a time (NVDEC
engines decode several streams at once) into a bounded queue the ingestion loop reads. The events are
``decode.decode_video``'s, but frames are uint8 (T, 3, S, S) tensors on the encoder's device, never in host
memory (JPEG thumbnails are). What this path cannot decode or get right (not 8-bit 4:2:0 of a codec NVDEC
decodes, no timestamps, frames ending before the declared duration: ``nvdec_source``) raises ``UseCpu``: the
CPU workers, started on first need, decode that file ("restart" voids what the GPU sent).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic

import torch

from .decode import DecodeSpec
from .errors import IndexerError
from .nvdec_source import NvdecSource, UseCpu, decode_on_device, first_line, gpu_index
from .workers import Event, Message, Owner, Task, WorkerPool

log = logging.getLogger(__name__)

DECODERS = ("auto", "cpu", "nvdec")
GpuDecodeFn = Callable[[str, "str | None", DecodeSpec, torch.device], Iterator[Event]]


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
        return f"PyNvVideoCodec fails to load: {first_line(exc)}"
    try:
        importlib.import_module("cv2")
    except Exception as exc:
        return f"OpenCV (cv2), which reads display rotation and pixel aspect here, does not import: {first_line(exc)}"
    try:  # an H.264 decoder session: the driver's NVDEC library is there and works
        nvc.CreateDecoder(gpuid=gpu_index(device), codec=nvc.cudaVideoCodec.H264, cudacontext=0, cudastream=0)
    except Exception as exc:
        return f"PyNvVideoCodec cannot start an NVDEC decoder: {first_line(exc)}"
    return None


def choose_decoder(
    requested: str,
    device: str | torch.device,
    *,
    injected: bool = False,
    unavailable: Callable[[], str | None] | None = None,
    where: str = "in this process",
) -> str:
    """ "cpu" or "nvdec" for ``--decoder requested`` and an encoder on ``device`` (``injected``: a GPU decode
    function was given, which needs no check); nvdec where it cannot work raises IndexerError naming why.
    ``unavailable`` asks ``nvdec_unavailable`` where the encoder is (a Ray actor), ``where`` names it in the log."""
    if requested not in DECODERS:
        raise IndexerError(f"--decoder {requested!r}: expected one of {', '.join(DECODERS)}")
    if requested == "cpu":
        return "cpu"
    reason = None if injected else (unavailable or (lambda: nvdec_unavailable(device)))()
    if reason is None:
        log.info("decoder: nvdec (GPU decoding %s)%s", where, "" if requested == "nvdec" else ", chosen by auto")
        return "nvdec"
    if requested == "nvdec":
        raise IndexerError(f"--decoder nvdec cannot work here: {reason}")
    log.info("decoder: cpu, chosen by auto: NVDEC is not used because %s", reason)
    return "cpu"


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
        self.device = torch.device(device.type, gpu_index(device)) if device.type == "cuda" else device  # an index
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
                log.log(level, "%s: decoding on the CPU instead (%s)", task.path, first_line(exc))
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
