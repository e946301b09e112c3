"""Encoding one example, in the examples' child process (``service.examples``): an image file's bytes as a
still clip, a video file as the mean of the clips ingestion would cut from it; and the refusals, each an
``ExampleRejected`` with the HTTP status to answer and a message naming the problem."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from model.protocols import VideoTextEncoder

    from .settings import ServiceSettings

IMAGE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}  # Pillow's format name -> as messages say it
EXPECTED_IMAGE = "expected a JPEG, PNG or WebP image"
STILL_IMAGE_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "TIFF"}  # refused as videos (a GIF may be a video)
NOT_A_VIDEO = ("not a video file", "no video stream", "unsupported video codec")  # decode_video's 415 causes


class ExampleRejected(Exception):
    """An example that cannot be encoded: the HTTP status to answer and what is wrong, and what was expected."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.status_code, self.detail)


@dataclass(frozen=True)
class ExampleLimits:
    """The limits of ``ServiceSettings.example_*``."""

    image_bytes: int
    image_pixels: int
    video_bytes: int
    video_s: float
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ExampleLimits:
        return cls(
            image_bytes=settings.example_max_image_bytes,
            image_pixels=settings.example_max_image_pixels,
            video_bytes=settings.example_max_video_bytes,
            video_s=settings.example_max_video_s,
            timeout_s=settings.example_timeout_s,
        )


def encode_image_bytes(encoder: VideoTextEncoder, data: bytes, limits: ExampleLimits) -> np.ndarray:
    """float32 (embed_dim,), L2-normalised: an image file's bytes encoded as a still clip (in this process)."""
    from indexer.decode import DecodedClip
    from indexer.encode import encode_clips
    from model.video_frames import ArrayFrame

    rgb = decode_image(data, limits.image_pixels)
    frame = ArrayFrame(rgb, 0.0, None, 0).for_encoder(encoder.preprocess)  # (3, S, S), as ingestion resizes
    clip = DecodedClip(0, 0.0, 0.0, np.repeat(frame[None], encoder.num_frames, axis=0), b"")
    return _unit(encode_clips(encoder, [clip])[0])


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """uint8 (H, W, 3): a JPEG, PNG or WebP upright (EXIF orientation) in RGB, transparency over black;
    ExampleRejected for anything else, or for more than ``max_pixels`` pixels (checked on the header)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    claimed = _claimed_format(data)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own limit, outside the child (which turns it off)
        raise ExampleRejected(422, f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # UnidentifiedImageError, or a header that breaks a plugin
        if claimed is not None:
            why = "" if isinstance(exc, UnidentifiedImageError) else f" ({exc})"
            raise ExampleRejected(422, f"corrupt {claimed} image: its header cannot be read{why}") from None
        raise ExampleRejected(415, f"not an image of a supported format: {EXPECTED_IMAGE}") from None
    with image:
        name = IMAGE_FORMATS.get(image.format or "")
        if name is None:
            raise ExampleRejected(415, f"a {image.format} image is not supported: {EXPECTED_IMAGE}")
        width, height = image.size
        if width * height > max_pixels:
            raise ExampleRejected(
                422,
                f"the {name} image is {width}x{height} pixels ({width * height / 1e6:g} megapixels): "
                f"expected at most {max_pixels / 1e6:g} megapixels",
            )
        try:
            return np.array(_rgb(ImageOps.exif_transpose(image)))
        except Exception as exc:  # truncated or corrupt data, a mode that cannot become RGB
            raise ExampleRejected(422, f"corrupt {name} image: it cannot be decoded ({exc})") from None


def _claimed_format(data: bytes) -> str | None:
    """The format the file's signature claims (to tell a corrupt JPEG from something else)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _rgb(image: Image.Image) -> Image.Image:
    from PIL import Image

    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def encode_video_file(encoder: VideoTextEncoder, path: str, limits: ExampleLimits) -> np.ndarray:
    """float32 (embed_dim,), L2-normalised: the mean of the clip embeddings ingestion gives the video file
    ``path`` (in this process)."""
    from indexer.decode import DecodedChunk, DecodeFailed, DecodeSpec, Probed, decode_video
    from indexer.encode import encode_clips

    _refuse_still_image(path)
    # the pipeline's spec with its default options, on one thread and in one piece
    spec = DecodeSpec(num_frames=encoder.num_frames, preprocess=encoder.preprocess, threads=1, segment_clips=0)
    vectors = []
    events = decode_video(path, None, spec)
    try:
        probed = next(events)
        assert isinstance(probed, Probed)  # decode_video's first event
        if probed.status != "ok" or probed.error:
            raise _undecodable(probed.error or "unreadable")
        if probed.duration > limits.video_s:
            raise ExampleRejected(
                422, f"the video lasts {probed.duration:.1f} s: expected at most {limits.video_s:g} s"
            )
        for event in events:
            if isinstance(event, DecodeFailed):
                raise ExampleRejected(422, f"the video cannot be decoded: {event.error}")
            if isinstance(event, DecodedChunk):
                vectors.append(encode_clips(encoder, event.clips))
    finally:
        close = getattr(events, "close", None)  # a generator: stop its reader now
        if close is not None:
            close()
    if not vectors:
        raise ExampleRejected(422, "the video holds no clip to encode")
    return _unit(np.concatenate(vectors).astype(np.float64).mean(axis=0))


def _refuse_still_image(path: str) -> None:
    """415 for an image file sent as a video (FFmpeg would read it as a one-frame video)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            kind = image.format
    except Exception:
        return  # not an image Pillow knows: the video decoder decides
    if kind in STILL_IMAGE_FORMATS:
        raise ExampleRejected(415, f"a {IMAGE_FORMATS.get(kind, kind)} image, not a video: send it as an image")


def _undecodable(error: str) -> ExampleRejected:
    if error.startswith(NOT_A_VIDEO):
        return ExampleRejected(415, f"not a video that can be decoded ({error}): expected MP4, WebM, MKV, ...")
    return ExampleRejected(422, f"the video cannot be decoded: {error}")


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)
