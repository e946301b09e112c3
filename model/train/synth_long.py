"""Long synthetic videos for moment retrieval: one captioned event among distractor scenes.

write_long_set(Path("long"), videos=30, seed=5) writes
    long/videos/long_00000.mp4 ...
    long/moments.jsonl   {"video": "videos/long_00000.mp4", "query": "a red circle moves to the right",
                          "caption": "...", "start": 61.25, "end": 79.5, "duration": 187.0, "scenes": [...], ...}

Each video (2 to 10 minutes by default, at ``synth.FPS``) is a sequence of scenes of ``model.train.synth``:

- the *event*, 10 to 30 s at a random position: one single-motion scene (``then is None``) stretched over
  its whole span, so the shape moves in its direction from its first frame to its last, and every window
  on it shows what its short caption says. Only "quickly" scenes are drawn (the longest path, 0.9 of the
  free travel): a 10-s window on a 30-s event still sees the shape cover 0.3 of it, about what a 2-s
  "slowly" training clip shows; a "slowly" event would move a few pixels per window. Stretched, "quickly"
  names the distance covered rather than the pace, and the query leaves speed out;
- *distractors* filling the rest, 2 to 6 s each (a stretch before or after the event shorter than 2 s is
  one shorter scene), each stretched over its span like the event. **Rule:** a distractor never shows the
  event's colour and shape doing the event's motion: it differs in colour, or in shape, or none of its
  motions (one or two) is the event's. So no frame outside the event matches the query.

The query of a video is the event's short caption (``Scene.describe(size=False, speed=False,
background=False)``, e.g. "a red circle moves to the right"); its record also holds the full caption, the
event's span ``start``/``end`` and every scene's span and caption (``scenes``), times in seconds, on frames.

Videos are drawn independently (video ``k`` of a seed is the same in a set of any size) and written as
``model.train.synth`` writes its clips: temporary names renamed when complete, moments.jsonl (present only
once the set is complete) last, a stamp that lets a rerun with the same parameters keep finished videos,
and other sets' long videos removed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.train.synth import (
    EVENT_SECONDS,
    FPS,
    VIDEO_DIR,
    Scene,
    _prepare_dir,
    _write_atomic,
    encode_mp4,
    render_scene,
    scene_space,
)

log = logging.getLogger(__name__)

LONG_SECONDS = (120.0, 600.0)  # video length range of `tvr synth --long` (2 to 10 minutes)
EVENT_SPAN = (10.0, 30.0)  # seconds of the captioned event
EVENT_SPEED = "quickly"  # the event's path: the longest, so that its motion shows in every window
DISTRACTOR_SPAN = (2.0, 6.0)  # seconds of each distractor scene
LONG_VERSION = 1  # bump when the pictures or the plan change
MOMENTS_FILE = "moments.jsonl"
LONG_STAMP_FILE = ".synth_long.json"
_LONG_NAME = re.compile(r"^long_(\d{5,})\.mp4(\.part)?$")


@dataclass(frozen=True)
class Piece:
    """One scene of a long video, in frames."""

    scene: Scene
    start: int
    frames: int

    @property
    def end(self) -> int:
        return self.start + self.frames


@dataclass(frozen=True)
class LongVideo:
    """The plan of one long video: its scenes in time order, one of them the event."""

    pieces: tuple[Piece, ...]
    event: int  # index of the event in ``pieces``

    @property
    def frames(self) -> int:
        return self.pieces[-1].end

    @property
    def event_piece(self) -> Piece:
        return self.pieces[self.event]


def query_of(scene: Scene) -> str:
    """The short caption a user would type: colour, shape and motion(s)."""
    return scene.describe(size=False, speed=False, background=False)


def shows_event(scene: Scene, event: Scene) -> bool:
    """Whether ``scene`` shows the event's colour and shape doing the event's motion (at any time)."""
    return scene.colour == event.colour and scene.shape == event.shape and event.motion in scene.events


def plan_video(
    rng: np.random.Generator, min_frames: int, max_frames: int, fps: int, space: Sequence[Scene]
) -> LongVideo:
    """Draw a long video of ``min_frames`` to ``max_frames`` frames: an event and distractors around it."""
    total = int(rng.integers(min_frames, max_frames + 1))
    singles = [scene for scene in space if scene.then is None and scene.speed == EVENT_SPEED]
    event = singles[int(rng.integers(len(singles)))]
    event_frames = min(total, int(rng.integers(round(EVENT_SPAN[0] * fps), round(EVENT_SPAN[1] * fps) + 1)))
    start = int(rng.integers(0, total - event_frames + 1))
    others = [scene for scene in space if not shows_event(scene, event)]
    before = _distractors(rng, 0, start, fps, others)
    after = _distractors(rng, start + event_frames, total, fps, others)
    return LongVideo((*before, Piece(event, start, event_frames), *after), len(before))


def _distractors(rng: np.random.Generator, start: int, end: int, fps: int, others: Sequence[Scene]) -> list[Piece]:
    """Distractor scenes filling frames ``start`` to ``end``: each of DISTRACTOR_SPAN, but for a stretch
    shorter than its minimum (one scene)."""
    low, high = round(DISTRACTOR_SPAN[0] * fps), round(DISTRACTOR_SPAN[1] * fps)
    pieces, at = [], start
    while end - at > high:
        frames = min(int(rng.integers(low, high + 1)), end - at - low)  # leave at least `low` for the last
        pieces.append(Piece(others[int(rng.integers(len(others)))], at, frames))
        at += frames
    if end > at:
        pieces.append(Piece(others[int(rng.integers(len(others)))], at, end - at))
    return pieces


def render_stretched(scene: Scene, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 frames (frames, size, size, 3) of ``scene``'s clip played over ``frames`` frames: rendered at a
    frame rate that gives at least that many, then sampled evenly (the first and last frames kept)."""
    rate = max(1, math.ceil(frames / (EVENT_SECONDS * len(scene.events))))
    clip = render_scene(scene, size, rng, fps=rate)
    return clip[np.round(np.linspace(0, len(clip) - 1, frames)).astype(np.int64)]


def render_video(plan: LongVideo, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 frames (plan.frames, size, size, 3) of every scene of ``plan`` in order."""
    return np.concatenate([render_stretched(piece.scene, piece.frames, size, rng) for piece in plan.pieces])


def video_plan(seed: int, index: int, min_frames: int, max_frames: int, fps: int, space: Sequence[Scene]) -> LongVideo:
    """The plan of video ``index`` of a set: it depends on the seed, the index and the length range only."""
    return plan_video(np.random.default_rng([seed, index, 0]), min_frames, max_frames, fps, space)


def check_long_options(videos: int, size: int, fps: int, min_seconds: float, max_seconds: float) -> None:
    """Raise ValueError naming the first option out of range."""
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 32, got {size}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if not EVENT_SPAN[1] < min_seconds <= max_seconds:
        raise ValueError(
            f"the length range must satisfy {EVENT_SPAN[1]:g} s (the longest event) < min <= max, "
            f"got {min_seconds:g} to {max_seconds:g} s"
        )


def write_long_set(
    out: Path,
    videos: int,
    seed: int,
    size: int = 64,
    *,
    fps: int = FPS,
    min_seconds: float = LONG_SECONDS[0],
    max_seconds: float = LONG_SECONDS[1],
    progress: bool = True,
) -> Path:
    """Write ``videos`` long videos, each ``min_seconds`` to ``max_seconds`` long, under ``out``; returns
    ``out/moments.jsonl``. Safe to interrupt and rerun (module docstring)."""
    from tqdm import tqdm

    check_long_options(videos, size, fps, min_seconds, max_seconds)
    out = Path(out)
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    moments = out / MOMENTS_FILE
    moments.unlink(missing_ok=True)  # the set is incomplete until it is written again
    min_frames, max_frames = math.ceil(min_seconds * fps), math.floor(max_seconds * fps)
    stamp = {"seed": seed, "size": size, "fps": fps, "frames": [min_frames, max_frames], "version": LONG_VERSION}
    keep = _prepare_dir(out, stamp, videos, stamp_file=LONG_STAMP_FILE, pattern=_LONG_NAME)

    space = scene_space()
    records, written = [], 0
    for index in tqdm(range(videos), desc="synth --long", unit="video", disable=not progress):
        plan = video_plan(seed, index, min_frames, max_frames, fps, space)
        name = f"{VIDEO_DIR}/long_{index:05d}.mp4"
        if not (keep and (out / name).is_file()):
            part = out / f"{name}.part"
            encode_mp4(part, render_video(plan, size, np.random.default_rng([seed, index, 1])), fps)
            os.replace(part, out / name)
            written += 1
        records.append(long_record(index, name, plan, fps))
    _write_atomic(moments, "".join(json.dumps(r) + "\n" for r in records))
    log.info("long synthetic set in %s: %d videos (%d written, %d kept)", out, videos, written, videos - written)
    return moments


def long_record(index: int, name: str, plan: LongVideo, fps: int) -> dict[str, object]:
    """The line of moments.jsonl for one video: times in seconds."""
    event = plan.event_piece
    return {
        "video": name,
        "query": query_of(event.scene),
        "caption": event.scene.caption,
        "start": event.start / fps,
        "end": event.end / fps,
        "duration": plan.frames / fps,
        "title": f"synthetic long video {index}",
        "event": asdict(event.scene),
        "scenes": [
            {"start": piece.start / fps, "end": piece.end / fps, "caption": piece.scene.caption}
            for piece in plan.pieces
        ],
    }
