"""A benchmark corpus that decodes like users' videos: 720p and 1080p H.264 at 24, 30 and 60 fps, HEVC,
VP9, a phone's rotated file, a 10-bit file and one with non-square pixels, written once and reused.

    python bench/corpus.py --workdir /data/tvr-bench [--scale 1.0]     # write (or check) the corpus
    from corpus import ensure_corpus                                    # bench/ingest.py uses it

``SPECS`` is the list of files (about 38 minutes of video at ``--scale 1``); ``--scale`` multiplies every
length (a file keeps at least 2 s), so ``--scale 0.1`` is a 4-minute corpus for a quick run. The files go
to ``WORKDIR/corpus-scale<scale>/`` with ``manifest.json``: what each file is (its spec, frames, bytes,
bitrate, the seconds it took to write) and what it was read back as (keyframe positions from the packets,
frame types of its first seconds, pixel format, rotation and sample aspect ratio from ffprobe). A file is
kept when its manifest entry has the same spec and ``CORPUS_VERSION`` and its size matches; anything else
is rewritten, so changing a spec (or the pictures: bump ``CORPUS_VERSION``) rewrites just what changed.

The pictures: a large random texture (octave value noise with hard-edged ellipses and rectangles, like a
cluttered scene) panned and zoomed smoothly, as a camera would, plus solid shapes moving across it and a
little sensor-like noise that changes every frame. There are no cuts, so no scene-cut keyframes: the GOP
each file asked for is what it has (checked on every write: the manifest's ``keyframe_interval``, and a
warning when it differs). Frames are made one at a time (nothing holds a whole file in memory).

Encoding, chosen so that decoding costs what it costs on users' files:

- H.264: x264 preset ``veryfast``, which keeps CABAC and up to 3 B-frames (as cameras, phones and web
  encodes have them; ``ultrafast`` drops both, ``superfast`` inter partitions below 16x16), at a
  fixed bitrate like a camera's (``bitrate``, with ``maxrate`` and ``bufsize`` equal to it): the bits per
  frame decide most of a decoder's entropy-decoding work, so the rates are those of consumer cameras
  (4 Mbit/s at 720p30, 8 at 1080p30, scaled with the frame rate). x264 picks the profile (High).
- HEVC: x265 ``ultrafast`` with SAO on (phones' hardware encoders use it) and 3 B-frames; VP9: libvpx
  ``good`` quality at ``cpu-used`` 6 with alt-ref frames (as YouTube's encodes have). Both are slow to
  write here (5-25 frames/s at 720p), so their files are short.
- GOP: a fixed interval (2 s; 1 s for the phone's and the 10-bit file, 12 frames for HDV), as cameras write
  it (scene-cut keyframes off), or the encoder's default (x264 and x265: ``keyint`` 250 frames, scene-cut
  detection on: x264 may then start a GOP a few frames early, never every second on this content).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.media import write_video  # noqa: E402

CORPUS_VERSION = 1  # bump when the pictures change: every file is rewritten
MANIFEST = "manifest.json"
MIN_SECONDS = 2.0  # no file is shorter than this at any scale

# Groups the benchmark reports (a file belongs to one).
G720_DEFAULT = "720p30, x264 default GOP"
G720 = "720p"
G1080 = "1080p"
GHEVC_VP9 = "HEVC/VP9"
GODD = "odd ones"
GROUPS = (G720_DEFAULT, G720, G1080, GHEVC_VP9, GODD)

X265_PARAMS = "log-level=error:sao=1"
VP9_OPTIONS = {"deadline": "good", "cpu-used": "6", "row-mt": "1"}


@dataclass(frozen=True)
class FileSpec:
    """One file of the corpus, at scale 1."""

    name: str  # file name, suffix included
    group: str
    width: int  # stored pixels
    height: int
    fps: float
    seconds: float
    bitrate: int  # bits per second (maxrate and bufsize the same)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    preset: str | None = "veryfast"
    gop_seconds: float | None = None  # keyframe interval; None: the encoder's default
    encoder_options: dict[str, str] = field(default_factory=dict)
    rotation: float | None = None  # display matrix, degrees counter-clockwise (phones: -90)
    sample_aspect_ratio: tuple[int, int] | None = None

    def frames(self, scale: float) -> int:
        return max(round(MIN_SECONDS * self.fps), round(self.seconds * scale * self.fps))

    def gop(self) -> int | None:
        return None if self.gop_seconds is None else round(self.gop_seconds * self.fps)


def _spec(
    name: str, group: str, size: tuple[int, int], fps: float, seconds: float, gop: float | None, **kw: Any
) -> FileSpec:
    """A file at consumer-camera bitrates: H.264 4 Mbit/s at 720p30 and 8 at 1080p30, in proportion to the frame
    rate; HEVC and VP9 at 60 % of that; ``bitrate`` overrides."""
    width, height = size
    codec = kw.get("codec", "libx264")
    rate = (4_000_000 if height <= 720 else 8_000_000) * fps / 30 * (1.0 if codec == "libx264" else 0.6)
    kw.setdefault("bitrate", int(round(rate, -5)))
    options: dict[str, str] = {}
    if codec == "libx265":
        kw.setdefault("preset", "ultrafast")
        options["x265-params"] = X265_PARAMS + (":scenecut=0" if gop else "")
    elif codec == "libvpx-vp9":
        kw.setdefault("preset", None)
        options.update(VP9_OPTIONS)
        if gop:
            options["keyint_min"] = str(round(gop * fps))  # kf_min_dist = kf_max_dist
    elif gop:
        options["sc_threshold"] = "0"  # x264: no scene-cut keyframes, a fixed GOP
    kw.setdefault("encoder_options", options)
    return FileSpec(name, group, width, height, fps, seconds, gop_seconds=gop, **kw)


HD, FULL_HD = (1280, 720), (1920, 1080)
HEVC, VP9 = {"codec": "libx265"}, {"codec": "libvpx-vp9"}

SPECS: list[FileSpec] = [
    # The group with a goal of its own: 720p30 as most cameras and downloads, x264's default GOP (250 frames).
    _spec("h264-720p30-default-10m.mp4", G720_DEFAULT, HD, 30, 600, None),
    _spec("h264-720p30-default-2m.mp4", G720_DEFAULT, HD, 30, 120, None),
    _spec("h264-720p30-default-30s.mp4", G720_DEFAULT, HD, 30, 30, None),
    _spec("h264-720p24-gop2s-5m.mp4", G720, HD, 24, 300, 2.0),
    _spec("h264-720p30-gop2s-3m.mp4", G720, HD, 30, 180, 2.0),
    _spec("h264-720p60-gop2s-2m.mp4", G720, HD, 60, 120, 2.0),
    _spec("h264-1080p30-gop2s-5m.mp4", G1080, FULL_HD, 30, 300, 2.0),
    _spec("h264-1080p24-default-3m.mp4", G1080, FULL_HD, 24, 180, None),
    _spec("h264-1080p60-gop2s-1m.mp4", G1080, FULL_HD, 60, 60, 2.0),
    _spec("h264-1080p30-default-1m.mp4", G1080, FULL_HD, 30, 60, None),
    _spec("hevc-1080p30-default-1m.mp4", GHEVC_VP9, FULL_HD, 30, 60, None, **HEVC),
    _spec("hevc-720p30-gop2s-1m.mp4", GHEVC_VP9, HD, 30, 60, 2.0, **HEVC),
    _spec("vp9-720p30-gop2s-1m.webm", GHEVC_VP9, HD, 30, 60, 2.0, **VP9),
    _spec("vp9-1080p24-gop2s-30s.webm", GHEVC_VP9, FULL_HD, 24, 30, 2.0, **VP9),
    # A phone held upright: landscape pixels, a display matrix turning them 90 degrees clockwise, a 1 s GOP.
    _spec("phone-h264-1080p30-rot90-1m.mp4", GODD, FULL_HD, 30, 60, 1.0, bitrate=12_000_000, rotation=-90),
    # 10-bit HEVC (Main 10), as phones record HDR video.
    _spec("hevc10-1080p30-30s.mp4", GODD, FULL_HD, 30, 30, 1.0, pix_fmt="yuv420p10le", **HEVC),
    # Non-square pixels: HDV's 1440x1080 with a sample aspect ratio of 4:3, shown 1920x1080; a 12-frame GOP.
    _spec("hdv-h264-1440x1080p25-sar4x3-1m.mp4", GODD, (1440, 1080), 25, 60, 0.48, sample_aspect_ratio=(4, 3)),
]


def corpus_dir(workdir: Path, scale: float) -> Path:
    return Path(workdir) / f"corpus-scale{scale:g}"


# --- the pictures ---------------------------------------------------------------------------------------------


class Scene:
    """A camera moving over a cluttered texture, with shapes crossing the view; ``frames`` yields RGB."""

    NOISE_FIELDS = 8
    NOISE = 3  # sensor-like noise, +- this many levels, a new field every frame

    def __init__(self, width: int, height: int, seed: int):
        from PIL import Image

        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        self.texture = self._texture(int(1.6 * width), int(1.6 * height), rng)
        self.noise = [
            Image.fromarray(rng.integers(0, 2 * self.NOISE + 1, (height, width, 3), dtype=np.uint8))
            for _ in range(self.NOISE_FIELDS)
        ]
        self.pan = [(rng.uniform(25, 60), rng.uniform(0, 2 * math.pi)) for _ in range(2)]  # (period s, phase)
        self.zoom = (rng.uniform(12, 30), rng.uniform(0, 2 * math.pi))
        count = int(rng.integers(3, 7))
        self.shapes = [
            {
                "size": (int(rng.integers(height // 14, height // 5)), int(rng.integers(height // 14, height // 5))),
                "start": (rng.uniform(0, width), rng.uniform(0, height)),
                "velocity": tuple(rng.uniform(0.04, 0.25) * width * rng.choice([-1, 1]) for _ in range(2)),
                "colour": tuple(int(c) for c in rng.integers(0, 256, 3)),
                "ellipse": bool(rng.random() < 0.5),
            }
            for _ in range(count)
        ]

    @staticmethod
    def _texture(width: int, height: int, rng: np.random.Generator) -> Any:
        from PIL import Image, ImageDraw

        total = np.zeros((height, width, 3), np.float32)
        weights = 0.0
        for octave in range(1, 9):  # value noise: detail from 2 px up to the whole picture
            grid = rng.integers(0, 256, (max(2, height >> octave), max(2, width >> octave), 3), dtype=np.uint8)
            weight = (1 << octave) ** 0.8
            total += weight * np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC), np.float32)
            weights += weight
        total = (total / weights - total.mean() / weights) * 2.5 + 128
        image = Image.fromarray(np.clip(total, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(80):  # hard edges, like objects in a scene
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            w = int(rng.integers(height // 60, height // 8))
            h = int(w * rng.uniform(0.5, 2.0))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
        return image

    def frame(self, t: float, index: int) -> np.ndarray:
        from PIL import Image, ImageChops, ImageDraw

        tex_w, tex_h = self.texture.size
        zoom = 0.775 + 0.175 * math.sin(2 * math.pi * t / self.zoom[0] + self.zoom[1])  # 0.6 .. 0.95 of a frame
        crop_w, crop_h = self.width * zoom, self.height * zoom
        reach_x, reach_y = (tex_w - 0.95 * self.width) / 2 * 0.98, (tex_h - 0.95 * self.height) / 2 * 0.98
        cx = tex_w / 2 + reach_x * math.sin(2 * math.pi * t / self.pan[0][0] + self.pan[0][1])
        cy = tex_h / 2 + reach_y * math.sin(2 * math.pi * t / self.pan[1][0] + self.pan[1][1])
        box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
        image = self.texture.resize((self.width, self.height), Image.NEAREST, box=box)  # ~10x faster than bilinear
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            x = _bounce(shape["start"][0] + shape["velocity"][0] * t, self.width - shape["size"][0])
            y = _bounce(shape["start"][1] + shape["velocity"][1] * t, self.height - shape["size"][1])
            box = (x, y, x + shape["size"][0], y + shape["size"][1])
            (draw.ellipse if shape["ellipse"] else draw.rectangle)(box, fill=shape["colour"])
        noise = self.noise[(index * 5) % self.NOISE_FIELDS]
        return np.asarray(ImageChops.add(image, noise, 1.0, -self.NOISE))

    def frames(self, count: int, fps: float, progress: Callable[[int], None] | None = None) -> Iterator[np.ndarray]:
        for index in range(count):
            if progress is not None:
                progress(index)
            yield self.frame(index / fps, index)


def _bounce(position: float, span: float) -> float:
    """``position`` folded into [0, span], as a ball bouncing between two walls."""
    if span <= 0:
        return 0.0
    position %= 2 * span
    return position if position <= span else 2 * span - position


# --- writing and checking -------------------------------------------------------------------------------------


def spec_record(spec: FileSpec, scale: float) -> dict[str, Any]:
    """What decides a file's bytes: kept with it in the manifest, compared before reusing it."""
    return {"version": CORPUS_VERSION, "frames": spec.frames(scale), **asdict(spec)}


def write_file(spec: FileSpec, path: Path, scale: float, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``spec`` at ``scale`` to ``path`` (through a temporary name); returns its manifest entry."""
    count = spec.frames(scale)
    scene = Scene(spec.width, spec.height, seed=zlib.crc32(spec.name.encode()))
    started = time.perf_counter()
    last = [started]

    def progress(index: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 15 and index:
            last[0] = now
            rate = index / (now - started)
            say(f"    {index}/{count} frames, {rate:.1f} frames/s, {(count - index) / rate / 60:.1f} min left")

    options = dict(spec.encoder_options)
    rate = str(spec.bitrate)
    options.update({"b": rate, "maxrate": rate, "bufsize": rate})
    part = path.with_name(f".partial-{path.name}")
    write_video(
        part,
        scene.frames(count, spec.fps, progress),
        fps=spec.fps,
        codec=spec.codec,
        pix_fmt=spec.pix_fmt,
        gop=spec.gop(),
        preset=spec.preset,
        encoder_options=options,
        rotation=spec.rotation,
        sample_aspect_ratio=Fraction(*spec.sample_aspect_ratio) if spec.sample_aspect_ratio else None,
    )
    os.replace(part, path)
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    entry = {
        "spec": spec_record(spec, scale),
        "file": path.name,
        "group": spec.group,
        "frames": count,
        "seconds": count / spec.fps,
        "bytes": size,
        "mbit_per_s": round(size * 8 / (count / spec.fps) / 1e6, 2),
        "write_seconds": round(seconds, 1),
        "read_back": read_back(path, spec),
    }
    return entry


def read_back(path: Path, spec: FileSpec) -> dict[str, Any]:
    """What the file is, as readers see it: keyframes from the packets (PyAV), stream facts and the frame types
    of the first 10 s (ffprobe, where installed)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stamps = sorted((p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None)
        codec = stream.codec_context.name
    keys = [i for i, (_, key) in enumerate(stamps) if key]
    intervals = sorted({b - a for a, b in zip(keys, keys[1:], strict=False)})
    facts: dict[str, Any] = {
        "codec": codec,
        "packets": len(stamps),
        "keyframes": len(keys),
        "keyframe_interval": intervals or None,  # distinct distances between keyframes, in frames
    }
    if spec.gop() is not None and len(keys) > 1 and intervals != [spec.gop()]:
        facts["warning"] = f"asked for a keyframe every {spec.gop()} frames, the file has intervals {intervals}"
    elif spec.gop() is None and spec.codec in {"libx264", "libx265"} and len(keys) > 1 and min(intervals) < 240:
        # x264's first GOP is 248 frames with B-frames; a shorter one is a scene cut
        facts["warning"] = f"x264/x265's default GOP is 250 frames, the file has intervals {intervals}"
    facts.update(_ffprobe(path))
    return facts


def _ffprobe(path: Path) -> dict[str, Any]:
    if shutil.which("ffprobe") is None:
        return {}
    show = "stream=codec_name,profile,pix_fmt,width,height,sample_aspect_ratio,has_b_frames:stream_side_data"
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", show, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    frames = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+10", "-show_entries"]
        + ["frame=pict_type", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    facts: dict[str, Any] = {}
    try:
        stream = json.loads(run.stdout)["streams"][0]
    except (ValueError, KeyError, IndexError):
        return {"ffprobe_error": run.stderr.strip()[:300]}
    for key in ("profile", "pix_fmt", "sample_aspect_ratio", "has_b_frames"):
        if key in stream:
            facts[key] = stream[key]
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            facts["rotation"] = side["rotation"]
    types = [line.strip().strip(",") for line in frames.stdout.splitlines() if line.strip()]
    facts["frame_types_first_10s"] = {t: types.count(t) for t in sorted(set(types))}
    return facts


def ensure_corpus(
    workdir: Path, scale: float, only: list[str] | None = None, say: Callable[[str], None] = print
) -> tuple[Path, list[dict[str, Any]]]:
    """The corpus at ``scale`` under ``workdir``, writing what is missing or out of date; its folder and entries."""
    if not 0 < scale <= 4:
        raise ValueError(f"scale must be in (0, 4], got {scale}")
    folder = corpus_dir(workdir, scale)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    try:
        old = {e["file"]: e for e in json.loads(manifest_path.read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        old = {}
    specs = [s for s in SPECS if only is None or s.name in only or s.group in only]
    todo = [s for s in specs if not _still_valid(old.get(s.name), s, folder, scale)]
    total_frames = sum(s.frames(scale) for s in todo)
    say(
        f"corpus {folder}: {len(specs)} files, {sum(s.frames(scale) / s.fps for s in specs) / 60:.1f} min of video; "
        f"{len(specs) - len(todo)} up to date, {len(todo)} to write ({total_frames} frames)"
    )
    entries = {name: e for name, e in old.items() if any(s.name == name for s in SPECS)}
    started = time.perf_counter()
    for number, spec in enumerate(todo, 1):
        say(
            f"[{number}/{len(todo)}] {spec.name}: {spec.width}x{spec.height} {spec.fps:g} fps {spec.codec} "
            f"{spec.pix_fmt}, {spec.frames(scale)} frames ({spec.frames(scale) / spec.fps:.0f} s)"
        )
        entry = write_file(spec, folder / spec.name, scale, say)
        entries[spec.name] = entry
        back = entry["read_back"]
        say(
            f"    written in {entry['write_seconds']:.0f} s ({entry['frames'] / entry['write_seconds']:.1f} frames/s), "
            f"{entry['mbit_per_s']} Mbit/s, keyframe interval {back['keyframe_interval']}, "
            f"frame types {back.get('frame_types_first_10s')}"
            + (f"\n    WARNING: {back['warning']}" if "warning" in back else "")
        )
        _write_manifest(manifest_path, scale, entries)  # after every file: an interrupted run keeps its work
    _write_manifest(manifest_path, scale, entries)
    if todo:
        say(f"corpus written in {(time.perf_counter() - started) / 60:.1f} min")
    return folder, [entries[s.name] for s in specs]


def _still_valid(entry: dict[str, Any] | None, spec: FileSpec, folder: Path, scale: float) -> bool:
    if entry is None or entry.get("spec") != json.loads(json.dumps(spec_record(spec, scale))):
        return False
    path = folder / spec.name
    return path.is_file() and path.stat().st_size == entry.get("bytes")


def _write_manifest(path: Path, scale: float, entries: dict[str, dict[str, Any]]) -> None:
    order = [s.name for s in SPECS if s.name in entries]
    body = {"version": CORPUS_VERSION, "scale": scale, "files": [entries[name] for name in order]}
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(part, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="the corpus is written under it and reused")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every file's length (0.1: ~4 min)")
    parser.add_argument("--only", nargs="*", default=None, help="file names or group names to write")
    parser.add_argument("--list", action="store_true", help="print the files and their sizes at this scale")
    args = parser.parse_args(argv)
    if args.list:
        for s in SPECS:
            print(f"{s.group:26} {s.name:40} {s.frames(args.scale):6d} frames {s.frames(args.scale) / s.fps:6.0f} s")
        return
    folder, entries = ensure_corpus(args.workdir, args.scale, args.only)
    minutes = sum(e["seconds"] for e in entries) / 60
    print(f"{len(entries)} files, {minutes:.1f} min of video in {folder}")


if __name__ == "__main__":
    main()
