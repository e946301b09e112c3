"""Search by example: an uploaded image or short video encoded by the video tower, off the search path.

``ExampleEncoder`` owns one child process (``spawn``: torch in this process is in use by the query thread
and must never be forked) that loads the service's encoder on first use, with one torch thread, so that
encoding an upload never holds up the text searches of the query thread. The child answers one example at
a time: requests queue in this process (one thread talks to the child), and each may work at most
``TVR_EXAMPLE_TIMEOUT_S`` (counted once the encoder is loaded): past it the child is killed and the next
request starts a fresh one. A child that dies (a decoder crash) fails only the request it was working on.

- An **image** (JPEG, PNG or WebP, as Pillow reads its header, whatever the file is called) is checked for
  its pixel count before it is decoded, turned upright (EXIF orientation), made RGB, resized for the
  encoder as ingestion resizes a decoded RGB frame (``model.video_frames.ArrayFrame.for_encoder``) and
  encoded as a still clip: the frame repeated ``num_frames`` times (``indexer.encode.encode_clips``).
- A **video** is decoded as ingestion decodes it (``indexer.decode.decode_video`` with the pipeline's
  ``DecodeSpec`` and clip windows), refused when it lasts longer than ``TVR_EXAMPLE_MAX_VIDEO_S``; its
  embedding is the mean of its clips' embeddings, normalised.

Every refusal is an ``ExampleRejected`` with the HTTP status to answer and a message naming the problem:
413 too many bytes (``read_upload`` / ``save_upload`` count them while an upload streams), 415 not a
supported image (or not a video), 422 corrupt, undecodable, too many pixels or too long, 503 when the time
limit passed or the child died.

Test hook: when ``TVR_EXAMPLES_TEST_GATE`` names a folder in the child's environment, the child, once it has
loaded the encoder and started an example, creates ``entered`` there and waits until ``open`` exists (tests
use it to hold the child busy or make it overrun its time limit). Only the child reads it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .example_media import EXPECTED_IMAGE, ExampleLimits, ExampleRejected, encode_image_bytes, encode_video_file
from .settings import ServiceSettings

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 300.0  # longest the child may take to load the encoder (not counted in the time limit)
UPLOAD_CHUNK = 1 << 20  # bytes read at a time from an upload
TEST_GATE_ENV = "TVR_EXAMPLES_TEST_GATE"


# --- uploads (the route's side) ---------------------------------------------------------------------------


class AsyncReadable(Protocol):
    """What an upload offers (Starlette's ``UploadFile``)."""

    async def read(self, size: int = -1) -> bytes: ...


def too_large(what: str, limit: int) -> ExampleRejected:
    """The 413 for an upload of more than ``limit`` bytes."""
    return ExampleRejected(413, f"the {what} is larger than the limit of {_megabytes(limit)} ({limit} bytes)")


async def read_upload(upload: AsyncReadable, limit: int, what: str = "image") -> bytes:
    """All the bytes of ``upload``, refused (413) as soon as more than ``limit`` have arrived."""
    parts, received = [], 0
    while chunk := await upload.read(UPLOAD_CHUNK):
        received += len(chunk)
        if received > limit:
            raise too_large(what, limit)
        parts.append(chunk)
    return b"".join(parts)


async def save_upload(upload: AsyncReadable, dest: Path, limit: int, what: str = "video") -> int:
    """Write ``upload`` to the file ``dest``, refused (413) as soon as more than ``limit`` bytes have arrived
    (what was written is left to the caller, who owns ``dest``); the bytes written."""
    received = 0
    with open(dest, "wb") as out:
        while chunk := await upload.read(UPLOAD_CHUNK):
            received += len(chunk)
            if received > limit:
                raise too_large(what, limit)
            await asyncio.to_thread(out.write, chunk)
    return received


def _megabytes(count: float) -> str:
    return f"{count / 1e6:g} MB"


# --- this process's side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChildConfig:
    checkpoint: str
    device: str
    limits: ExampleLimits


@dataclass
class _Child:
    process: BaseProcess
    connection: Connection


# ("ok", vector) | ("rejected", status, detail) | ("error", detail) | ("timeout",) | ("died", exit code)
Reply = tuple[Any, ...]


class ExampleEncoder:
    """Encodes example images and videos in one child process, one at a time, each within the time limit."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.limits = ExampleLimits.from_settings(settings)
        self._config = _ChildConfig(settings.checkpoint, settings.device, self.limits)
        self._child: _Child | None = None
        self._guard = threading.Lock()  # the child's start and kill (the request thread and the event loop)
        self._thread: ThreadPoolExecutor | None = None  # the one thread that talks to the child: the queue
        self._tickets = 0
        self._closed = False

    async def start(self) -> None:
        """Ready to take examples; the child starts with the first one."""
        self._closed = False

    async def close(self) -> None:
        """Kill the child; requests in flight or queued get a 503."""
        self._closed = True
        with self._guard:
            child, self._child = self._child, None
        if child is not None:  # its connection is closed by the request thread, if one is waiting on it
            child.process.kill()
            await asyncio.to_thread(child.process.join, 5)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    @property
    def child_pid(self) -> int | None:
        """The child's process id, None before the first example or after it was stopped."""
        child = self._child
        return child.process.pid if child is not None else None

    async def encode_image(self, data: bytes) -> np.ndarray:
        """float32 (embed_dim,), L2-normalised: ``data`` (a JPEG, PNG or WebP file) as a still clip."""
        if not data:
            raise ExampleRejected(422, f"the image is empty (0 bytes): {EXPECTED_IMAGE}")
        if len(data) > self.limits.image_bytes:
            raise too_large("image", self.limits.image_bytes)
        return await self._ask("image", data)

    async def encode_video(self, path: Path) -> np.ndarray:
        """float32 (embed_dim,), L2-normalised: the mean embedding of the clips of the video file ``path``."""
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ExampleRejected(422, f"cannot read the uploaded video: {exc.strerror or exc}") from None
        if size == 0:
            raise ExampleRejected(422, "the video is empty (0 bytes): expected a video file (MP4, WebM, MKV, ...)")
        if size > self.limits.video_bytes:
            raise too_large("video", self.limits.video_bytes)
        return await self._ask("video", str(path))

    async def _ask(self, kind: str, payload: bytes | str) -> np.ndarray:
        if self._closed:
            raise ExampleRejected(503, "the server is shutting down: examples are no longer encoded")
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="tvr-examples")
        # a caller that gives up (cancellation) leaves its exchange to finish in the thread, unread
        reply = await asyncio.get_running_loop().run_in_executor(self._thread, self._exchange, kind, payload)
        return self._answer(reply)

    def _answer(self, reply: Reply) -> np.ndarray:
        what = reply[0]
        if what == "ok":
            return np.asarray(reply[1], dtype=np.float32)
        if what == "rejected":
            raise ExampleRejected(reply[1], reply[2])
        if what == "timeout":
            raise ExampleRejected(
                503,
                f"encoding the example took longer than the limit of {self.limits.timeout_s:g} s "
                "(TVR_EXAMPLE_TIMEOUT_S): it was stopped and its process is restarted; try a shorter or smaller one",
            )
        if what == "died":
            if self._closed:
                raise ExampleRejected(503, "the server is shutting down: examples are no longer encoded")
            raise ExampleRejected(
                503,
                f"the process encoding examples died (exit code {reply[1]}) while working on this one; "
                "the next request gets a fresh one",
            )
        raise ExampleRejected(503, reply[1])

    # --- the request thread ------------------------------------------------------------------------------

    def _exchange(self, kind: str, payload: bytes | str) -> Reply:
        """Send one example to the child and wait for its answer, within the time limits (blocking)."""
        child = self._running_child()
        if child is None:
            return ("died", None)
        self._tickets += 1
        ticket = self._tickets
        try:
            child.connection.send((ticket, kind, payload))
        except (OSError, ValueError):  # died while idle
            return self._died(child)
        limit, deadline, started = LOAD_TIMEOUT_S, time.monotonic() + LOAD_TIMEOUT_S, False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("example encoder: no answer within %g s; killing its process", limit)
                self._stop(child)
                return ("timeout",) if started else ("error", f"the examples' encoder did not load within {limit:g} s")
            ready = wait([child.connection, child.process.sentinel], remaining)
            if child.connection in ready:
                try:
                    message = child.connection.recv()
                except (EOFError, OSError):
                    return self._died(child)
                if message[0] != ticket:  # the end of an example whose caller gave up
                    continue
                if message[1] == "started":  # the encoder is loaded: the example's time starts now
                    limit, started = self.limits.timeout_s, True
                    deadline = time.monotonic() + limit
                    continue
                return tuple(message[1:])
            if child.process.sentinel in ready:
                return self._died(child)

    def _running_child(self) -> _Child | None:
        with self._guard:
            if self._closed:
                return None
            if self._child is not None and self._child.process.is_alive():
                return self._child
            if self._child is not None:
                self._forget(self._child)
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, self._config), daemon=True, name="tvr-examples")
            process.start()
            theirs.close()
            self._child = _Child(process, ours)
            log.info("example encoder: started its process (pid %s)", process.pid)
            return self._child

    def _died(self, child: _Child) -> Reply:
        child.process.join(timeout=5)
        code = child.process.exitcode
        if not self._closed:
            log.warning("example encoder: its process died (exit code %s); the next example starts another", code)
        with self._guard:
            self._forget(child)
        return ("died", code)

    def _stop(self, child: _Child) -> None:
        with self._guard:
            child.process.kill()
            child.process.join(timeout=5)
            self._forget(child)

    def _forget(self, child: _Child) -> None:
        child.connection.close()
        if self._child is child:
            self._child = None


# --- the child --------------------------------------------------------------------------------------------


def _serve(connection: Connection, config: _ChildConfig) -> None:
    """The child: load the encoder on the first example, then answer examples one at a time."""
    from PIL import Image

    from indexer.decode import init_worker

    init_worker()  # one OpenMP thread, Ctrl-C left to the parent, exit with it
    Image.MAX_IMAGE_PIXELS = None  # decode_image checks the header's size against our limit instead
    encoder: VideoTextEncoder | None = None
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        ticket, kind, payload = request
        if encoder is None:
            try:
                encoder = _load_encoder(config)
            except Exception as exc:
                connection.send((ticket, "error", f"cannot load the encoder {config.checkpoint}: {exc}"))
                continue
        connection.send((ticket, "started"))
        _test_gate()
        work: Callable[[VideoTextEncoder, Any, ExampleLimits], np.ndarray] = (
            encode_image_bytes if kind == "image" else encode_video_file
        )
        try:
            reply: Reply = ("ok", work(encoder, payload, config.limits))
        except ExampleRejected as exc:
            reply = ("rejected", exc.status_code, exc.detail)
        except Exception as exc:  # not the example's fault: a 503, logged here
            log.exception("example encoder: encoding failed")
            reply = ("error", f"encoding the example failed: {type(exc).__name__}: {exc}")
        connection.send((ticket, *reply))


def _load_encoder(config: _ChildConfig) -> VideoTextEncoder:
    import torch

    from model import load_encoder

    torch.set_num_threads(1)  # the query thread of the service keeps the other cores
    return load_encoder(config.checkpoint, device=config.device)


def _test_gate() -> None:
    """The test hook (module docstring): hold the example until the gate folder has ``open``."""
    folder = os.environ.get(TEST_GATE_ENV)
    if not folder:
        return
    Path(folder, "entered").touch()
    while not Path(folder, "open").exists():
        time.sleep(0.02)
