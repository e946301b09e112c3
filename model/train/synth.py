"""Synthetic captioned videos: a coloured shape moving on a plain background, as real H.264 files.

write_synthetic_set(Path("synth"), videos=500, seed=0) writes
    synth/videos/synth_00000.mp4 ...
    synth/captions.jsonl   {"video": "videos/synth_00000.mp4", "caption": "...", "duration": 2.0, ...}

A caption names every attribute of its clip, e.g. "a small red circle quickly moves to the right, then
moves up, on a black background", so "a red circle moves to the right" is a subsequence of it. Each
attribute is visible in frames sampled uniformly: the shape moves for the whole clip, each event (one or
two) taking half of it or all of it, and "quickly" covers 2.25 times the distance of "slowly".
Combinations are drawn without replacement, so no two scenes of one set share a caption (``renders`` > 1
writes each scene several times, each time drawn anew).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Vocabulary (others query it): shape colours, shapes and motions as the captions spell them.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS: dict[str, tuple[int, int]] = {  # phrase -> (dx, dy) in image axes (y grows downwards)
    "moves to the left": (-1, 0),
    "moves to the right": (1, 0),
    "moves up": (0, -1),
    "moves down": (0, 1),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (12, 12, 12), "gray": (115, 115, 115), "purple": (85, 30, 100)}
SIZES: dict[str, float] = {"small": 0.15, "large": 0.3}  # shape side, as a fraction of the frame
SPEEDS: dict[str, float] = {"slowly": 0.4, "quickly": 0.9}  # distance per event, fraction of the free travel
SIZE_JITTER = 0.08  # each clip scales its shape by 1 +- this
SPEED_JITTER = 0.1  # and its distance per event by 1 +- this (quickly * 1.1 <= 1: the path fits the frame)
COLOUR_JITTER = 12  # and each channel of its colour by +- this

FPS = 8
EVENT_SECONDS = 2.0  # each event (one motion) lasts this long: clips are 2 s or 4 s
GENERATOR_VERSION = 1  # bump when the pictures change, so reruns do not keep files of the old version
VIDEO_DIR = "videos"
CAPTIONS_FILE = "captions.jsonl"
STAMP_FILE = ".synth.json"
_VIDEO_NAME = re.compile(r"^synth_(\d{5,})\.mp4(\.part)?$")


@dataclass(frozen=True)
class Scene:
    """The attributes of one clip; its caption is a function of them, one to one."""

    colour: str
    shape: str
    motion: str
    then: str | None  # a second motion, or None
    size: str
    speed: str
    background: str

    @property
    def caption(self) -> str:
        return self.describe()

    def describe(self, size: bool = True, speed: bool = True, background: bool = True) -> str:
        """The caption, or a shorter one leaving out the size, speed or background: colour, shape and
        every motion always stay ("a red circle moves to the right, then moves up")."""
        subject = " ".join(word for word in ("a", self.size if size else "", self.colour, self.shape) if word)
        motions = f"{self.speed} {self.motion}" if speed else self.motion
        if self.then:
            motions += f", then {self.then}" + ("," if background else "")
        return f"{subject} {motions}" + (f" on a {self.background} background" if background else "")

    @property
    def events(self) -> list[str]:
        return [self.motion] if self.then is None else [self.motion, self.then]


def scene_space() -> list[Scene]:
    """Every distinct scene (and so caption), in a fixed order."""
    scenes = []
    for colour, shape, motion, size, speed, background in itertools.product(
        COLOURS, SHAPES, MOTIONS, SIZES, SPEEDS, BACKGROUNDS
    ):
        for then in [None, *(m for m in MOTIONS if m != motion)]:
            scenes.append(Scene(colour, shape, motion, then, size, speed, background))
    return scenes


def draw_scenes(videos: int, seed: int) -> list[Scene]:
    """``videos`` distinct scenes for ``seed``; a larger count extends a smaller one (same first scenes)."""
    space = scene_space()
    if not 1 <= videos <= len(space):
        raise ValueError(f"videos must be between 1 and {len(space)} (the number of distinct captions), got {videos}")
    order = np.random.default_rng(seed).permutation(len(space))
    return [space[i] for i in order[:videos]]


def clip_frames(scene: Scene, fps: int = FPS) -> int:
    """Number of frames of the clip of ``scene``."""
    return round(len(scene.events) * EVENT_SECONDS * fps)


def render_scene(scene: Scene, size: int, rng: np.random.Generator, fps: int = FPS) -> np.ndarray:
    """uint8 frames (T, size, size, 3) of ``scene``; ``rng`` jitters position, size, speed and colour."""
    events = scene.events
    num_frames = clip_frames(scene, fps)
    margin = max(1.0, size / 32)
    half = SIZES[scene.size] * size * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER) / 2
    travel = size - 2 * margin - SIZES["large"] * size * (1 + SIZE_JITTER)  # free travel, the same for both sizes
    distance = SPEEDS[scene.speed] * travel * rng.uniform(1 - SPEED_JITTER, 1 + SPEED_JITTER)

    # Waypoints: start, end of each event; pick a start that keeps the whole path inside the frame.
    steps = np.array([MOTIONS[m] for m in events], dtype=np.float64) * distance
    offsets = np.vstack([np.zeros(2), np.cumsum(steps, axis=0)])  # (events + 1, 2) as (x, y)
    low, high = margin + half - offsets.min(axis=0), size - margin - half - offsets.max(axis=0)
    start = rng.uniform(low, np.maximum(low, high))
    progress = np.linspace(0.0, len(events), num_frames)  # event units: 0 .. number of events
    centres = start + np.stack([np.interp(progress, np.arange(len(events) + 1), offsets[:, k]) for k in (0, 1)], 1)

    colour = np.clip(
        np.array(COLOURS[scene.colour]) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255
    ).astype(np.uint8)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    frames[:] = np.array(BACKGROUNDS[scene.background], np.uint8)
    mask = _shape_mask(scene.shape, centres, half, size)  # (T, size, size)
    frames[mask] = colour
    return frames


def _shape_mask(shape: str, centres: np.ndarray, half: float, size: int) -> np.ndarray:
    """Boolean (T, size, size): pixels (by their centres) inside the shape at each frame's centre."""
    grid = np.arange(size) + 0.5
    dx = grid[None, None, :] - centres[:, 0, None, None]  # (T, 1, size)
    dy = grid[None, :, None] - centres[:, 1, None, None]  # (T, size, 1)
    if shape == "circle":
        return dx**2 + dy**2 <= half**2
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up, base at the bottom
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}: expected one of {', '.join(SHAPES)}")


def encode_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write uint8 frames (T, H, W, 3), H and W even, as H.264 mp4 (yuv420p) with ``model.media.write_video``.

    The colour conversion is done here rather than by PyAV's implicit one, which was seen to give
    different bytes for the same frames; x264 runs single-threaded. Keep these settings: a change changes
    the files' bytes, and users' cached demo corpora and training runs depend on them.
    """
    from model.media import write_video

    write_video(
        path,
        rgb_to_yuv420p(frames),
        fps=Fraction(fps),
        frame_format="yuv420p",
        codec="libx264",
        crf=18,
        preset="fast",
        threads=1,
        container_format="mp4",
        container_options={"movflags": "+faststart"},
    )


# BT.601, limited range (what decoders assume for video that does not say otherwise), in 8-bit fixed point:
# integer arithmetic gives the same bytes on every machine.
_Y, _U, _V = (66, 129, 25), (-38, -74, 112), (112, -94, -18)


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (T, H, W, 3), H and W even -> PyAV's yuv420p layout (T, H * 3 // 2, W): Y, U, V planes."""
    count, height, width, _ = frames.shape
    rgb = frames.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = ((_Y[0] * r + _Y[1] * g + _Y[2] * b + 128) >> 8) + 16
    sums = rgb[:, 0::2, 0::2] + rgb[:, 0::2, 1::2] + rgb[:, 1::2, 0::2] + rgb[:, 1::2, 1::2]  # 2x2 blocks
    rs, gs, bs = sums[..., 0], sums[..., 1], sums[..., 2]
    u = ((_U[0] * rs + _U[1] * gs + _U[2] * bs + 512) >> 10) + 128
    v = ((_V[0] * rs + _V[1] * gs + _V[2] * bs + 512) >> 10) + 128
    planes = np.concatenate([p.reshape(count, -1) for p in (luma, u, v)], axis=1)
    return np.clip(planes, 0, 255).astype(np.uint8).reshape(count, height * 3 // 2, width)


def write_synthetic_set(
    out: Path,
    videos: int,
    seed: int,
    size: int = 64,
    *,
    fps: int = FPS,
    renders: int = 1,
    progress: bool = True,
) -> Path:
    """Write ``videos`` captioned scenes, each in ``renders`` clips, under ``out``; returns ``out/captions.jsonl``.

    Every render of a scene is drawn anew (position, size, speed and colour jitter), so a training set with
    several renders per caption teaches the attributes rather than one picture of each caption. Clip
    ``k`` shows scene ``k // renders``; the first render of each scene is the clip a one-render set has.

    Safe to interrupt and rerun: files are written under a temporary name and renamed, captions.jsonl
    (present only once the set is complete) last. A rerun with the same seed, size and fps keeps the
    clips already written; clips of another set in ``out/videos`` are removed.
    """
    from tqdm import tqdm

    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 32, got {size}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if renders < 1:
        raise ValueError(f"renders must be >= 1, got {renders}")
    scenes = draw_scenes(videos, seed)
    out = Path(out)
    video_dir = out / VIDEO_DIR
    video_dir.mkdir(parents=True, exist_ok=True)
    captions = out / CAPTIONS_FILE
    captions.unlink(missing_ok=True)  # the set is incomplete until it is written again
    stamp = {"seed": seed, "size": size, "fps": fps, "version": GENERATOR_VERSION}
    if renders > 1:  # one-render sets keep the stamp they always had
        stamp["renders"] = renders
    clips = videos * renders
    keep = _prepare_dir(out, stamp, clips)

    records, written = [], 0
    for index in tqdm(range(clips), desc="synth", unit="video", disable=not progress):
        scene_index, render = divmod(index, renders)
        scene = scenes[scene_index]
        name = f"{VIDEO_DIR}/synth_{index:05d}.mp4"
        if not (keep and (out / name).is_file()):
            rng = np.random.default_rng([seed, scene_index] + ([render] if render else []))
            part = out / f"{name}.part"
            encode_mp4(part, render_scene(scene, size, rng, fps), fps)
            os.replace(part, out / name)
            written += 1
        records.append(_record(index, name, scene, clip_frames(scene, fps) / fps))
    _write_atomic(captions, "".join(json.dumps(r) + "\n" for r in records))
    log.info("synthetic set in %s: %d videos (%d written, %d kept)", out, clips, written, clips - written)
    return captions


def _record(index: int, name: str, scene: Scene, duration: float) -> dict[str, object]:
    return {
        "video": name,
        "caption": scene.caption,
        "duration": duration,
        "title": f"synthetic clip {index}",
        **asdict(scene),
    }


def _prepare_dir(
    out: Path,
    stamp: Mapping[str, object],
    videos: int,
    *,
    stamp_file: str = STAMP_FILE,
    pattern: re.Pattern[str] = _VIDEO_NAME,
) -> bool:
    """Remove partial files and clips that do not belong to this set; True if kept clips are valid.

    ``stamp_file`` holds the set's parameters, ``pattern`` names its files (number, then ``.part`` or not):
    another kind of set in the same folder keeps its own.
    """
    stamp_path = out / stamp_file
    try:
        keep = json.loads(stamp_path.read_text()) == stamp
    except (OSError, ValueError):
        keep = False
    for path in _own_files(out / VIDEO_DIR, pattern):
        match = pattern.match(path.name)
        assert match is not None
        if match.group(2) or not keep or int(match.group(1)) >= videos:
            path.unlink()
    if not keep:
        _write_atomic(stamp_path, json.dumps(stamp) + "\n")
    return keep


def _own_files(video_dir: Path, pattern: re.Pattern[str] = _VIDEO_NAME) -> Iterator[Path]:
    """Files in ``video_dir`` named like the clips this module writes (and their partial files)."""
    for path in video_dir.iterdir():
        if path.is_file() and pattern.match(path.name):
            yield path


def _write_atomic(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)
