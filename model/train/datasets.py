"""Captioned video datasets: which clip goes with which caption, read from each benchmark's own files.

Nothing here decodes video: a dataset is a list of :class:`Pair` (a :class:`ClipRef` naming a file and an
optional ``[start, end]`` in seconds, plus a caption) for training, or a :class:`RetrievalSet` (unique clips,
every caption, and which clip each caption belongs to) for evaluation.

Layouts, the files each reads under ``root``, and where it finds videos (``videos_dir``, relative to
``root`` or absolute, default ``root/videos``):

``jsonl``, ``csv``
    Generic: ``{split}.jsonl`` (``.csv``), else the single file ``captions.jsonl`` (``captions.csv``);
    ``root`` may also be the file itself, or ``file=`` names it. One clip per row: ``video`` (a path
    relative to the file's folder, or absolute), ``caption``, optional ``start``, ``end`` in seconds; other
    keys (``tvr synth`` writes ``duration``) are ignored; CSV has a header with these column names. The test
    split is ``test.*``, else the single file; the val split is ``val.*``, else held out of the training
    file (``train.*``, else the single file).
``msrvtt``
    train and val: ``MSRVTT_train.9k.csv`` (column ``video_id``) with the captions of those videos in
    ``MSRVTT_data.json`` (``sentences[{video_id, caption}]``), every caption its own pair; val is held out
    of the 9k videos. test: the 1k-A split, ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``,
    1,000 pairs). Videos ``{videos_dir}/{video_id}.mp4``.
``didemo``
    ``train_data.json``, ``val_data.json``, ``test_data.json``: a list of ``{"video", "description",
    "times"}``. All descriptions of a video are joined into one paragraph, ordered by their mean start over
    the annotators' ``times`` (file order among equals); one pair per video, the whole video. The file is
    found as for activitynet, from the ``video`` name and its stem.
``activitynet``
    train and val: ``train.json``; test: ``val_1.json`` (the field evaluates on val_1); each maps a video id
    to ``{"duration", "timestamps", "sentences"}``. Sentences are ordered by start and joined into one
    paragraph per video, the whole video. val is held out of ``train.json``: ``val_2.json`` annotates the
    same videos as ``val_1.json``, so it cannot serve for model selection. The video file is the first that
    exists, searching ``videos_dir`` recursively, among the id and the id with its ``v_`` prefix removed (or
    added), each as is or followed by one of ``VIDEO_EXTENSIONS``.
``lsmdc``
    train: ``LSMDC16_annos_training.csv``; val: ``LSMDC16_annos_val.csv``; test:
    ``LSMDC16_challenge_1000_publictect.csv``. Tab-separated, no header: clip_id, start_aligned,
    end_aligned, start_extracted, end_extracted, sentence (the times are not used: each clip is its own
    file). Video ``{videos_dir}/{movie}/{clip_id}{ext}`` (``ext`` default ``.avi``), where ``movie`` is the
    clip_id without its final ``_HH.MM.SS.mmm-HH.MM.SS.mmm`` (:func:`lsmdc_movie`).
``msvd``
    CLIP4Clip's layout: ``raw-captions.pkl`` (video id -> list of token lists, joined with spaces) and
    ``train_list.txt``, ``val_list.txt``, ``test_list.txt`` (one video id a line). Every caption is its own
    pair and is evaluated (a caption's rank is its own video's). Video ``{videos_dir}/{id}{ext}`` (default
    ``.avi``). The pickle is read by an unpickler that refuses any class, so it cannot run code.

Held-out validation (msrvtt, activitynet, and generic files without a ``val`` file): ``val_fraction``
(default 0.05) of the training *videos*, chosen by ranking video ids by ``sha256(f"{seed}:{id}")``, so the
choice depends only on the ids and the seed, never on file order or Python version. The ``train`` split then
leaves those videos out (``val_fraction=0`` gives the full official training set and no val split); the test
split is never touched. Layouts with an official val split (didemo, lsmdc, msvd) do not take ``val_fraction``.

``skip_missing=True`` (didemo, activitynet) drops videos whose file cannot be found, with a warning,
instead of failing: downloads of these YouTube/Flickr sets are rarely complete.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.files import jsonl_objects

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.05
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")


class DatasetError(ValueError):
    """A dataset file, split or option that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True)
class ClipRef:
    """A clip of a video file, by reference."""

    video_id: str  # the layout's id of the video ("video7" in MSR-VTT; the path as written in a generic file)
    path: Path  # the video file
    start: float | None = None  # clip start in seconds; None: the start of the file
    end: float | None = None  # clip end in seconds; None: the end of the file


@dataclass(frozen=True)
class Pair:
    """One training example: a clip and one caption of it."""

    clip: ClipRef
    caption: str


@dataclass
class RetrievalSet:
    """An evaluation set: unique clips, all captions; caption ``i`` belongs to ``clips[caption_clip[i]]``."""

    clips: list[ClipRef]
    captions: list[str]
    caption_clip: list[int]

    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair]) -> RetrievalSet:
        """Group pairs by clip; clips keep the order of their first caption, captions keep theirs."""
        index: dict[ClipRef, int] = {}
        captions: list[str] = []
        caption_clip: list[int] = []
        for pair in pairs:
            captions.append(pair.caption)
            caption_clip.append(index.setdefault(pair.clip, len(index)))
        return cls(clips=list(index), captions=captions, caption_clip=caption_clip)


_Loader = Callable[..., list[Pair]]
_LAYOUTS: dict[str, _Loader] = {}


def _layout(name: str) -> Callable[[_Loader], _Loader]:
    def register(loader: _Loader) -> _Loader:
        _LAYOUTS[name] = loader
        return loader

    return register


def layouts() -> list[str]:
    """Names of the dataset layouts ``load_pairs`` reads."""
    return sorted(_LAYOUTS)


def load_pairs(layout: str, root: str | os.PathLike[str], split: str, **opts: Any) -> list[Pair]:
    """The (clip, caption) pairs of one split of a dataset stored in ``layout`` under ``root``."""
    loader = _LAYOUTS.get(layout)
    if loader is None:
        raise DatasetError(f"unknown dataset layout {layout!r}; expected one of {', '.join(layouts())}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist")
    _check_options(layout, loader, opts)
    pairs = loader(root, split, **opts)
    if not pairs:
        raise DatasetError(f"{root}: the {split} split of the {layout} dataset has no captions")
    return pairs


def load_retrieval_set(layout: str, root: str | os.PathLike[str], split: str, **opts: Any) -> RetrievalSet:
    """One split as an evaluation set: unique clips, all their captions."""
    return RetrievalSet.from_pairs(load_pairs(layout, root, split, **opts))


def _check_options(layout: str, loader: _Loader, opts: dict[str, Any]) -> None:
    accepted = [name for name in inspect.signature(loader).parameters if name not in ("root", "split")]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        hint = " (it has an official val split)" if {"val_fraction", "seed"} & set(unknown) else ""
        raise DatasetError(
            f"unknown option(s) {', '.join(unknown)} for layout {layout!r}{hint}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )


# ---------------------------------------------------------------------------------------------- helpers


def _videos_dir(root: Path, videos_dir: str | os.PathLike[str] | None) -> Path:
    base = root.parent if root.is_file() else root
    return base / (videos_dir if videos_dir is not None else "videos")


def _split_file(root: Path, split: str, names: dict[str, str], layout: str) -> Path:
    name = names.get(split)
    if name is None:
        raise DatasetError(f"the {layout} layout has no {split} split; it has {', '.join(names)}")
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{path}: missing; the {layout} layout reads its {split} split from {name}")
    return path


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text: {e}") from e


def _read_csv(path: Path, required: tuple[str, ...], delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header, with the line each ends on; every ``required`` column must exist."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise DatasetError(
                f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                f"expected {', '.join(required)}, found {', '.join(header) or 'an empty file'}"
            )
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value.strip()


def _seconds(value: Any, where: str, key: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise DatasetError(f"{where}: {key} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _held_out(video_ids: Iterable[str], fraction: float, seed: int, source: Path) -> set[str]:
    """The training videos held out for validation (see the module docstring)."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise DatasetError(f"val_fraction must be a number in [0, 1), got {fraction!r}")
    if fraction == 0:
        return set()
    ids = sorted(set(video_ids))
    if len(ids) < 2:
        raise DatasetError(f"{source}: {len(ids)} training video(s) cannot be split into train and val")
    count = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    ranked = sorted(ids, key=lambda video_id: hashlib.sha256(f"{seed}:{video_id}".encode()).hexdigest())
    return set(ranked[:count])


def _train_or_val(pairs: list[Pair], split: str, val_fraction: float | None, seed: int, source: Path) -> list[Pair]:
    """The train or val part of a training set whose val split is held out by video."""
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    held = _held_out((p.clip.video_id for p in pairs), fraction, seed, source)
    if split == "val":
        if not held:
            raise DatasetError(f"{source}: no val split: none is given and val_fraction=0 holds out no videos")
        return [p for p in pairs if p.clip.video_id in held]
    return [p for p in pairs if p.clip.video_id not in held]


class _VideoFinder:
    """Finds video files under a folder (recursively) by candidate file names, listing the folder once."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: videos folder does not exist (set videos_dir)")
        self.folder = folder
        self.files: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                self.files.setdefault(name, Path(dirpath) / name)

    def find(self, names: list[str]) -> Path | None:
        return next((self.files[name] for name in names if name in self.files), None)


def _file_names(stems: list[str]) -> list[str]:
    """Candidate file names: each stem as is, then with each known video extension."""
    names = list(stems)
    names += [stem + ext for stem in stems for ext in VIDEO_EXTENSIONS]
    return list(dict.fromkeys(names))


def _resolve_videos(
    items: list[tuple[str, list[str], str]], folder: Path, skip_missing: bool, source: Path
) -> dict[str, Path]:
    """Map video id -> file for ``(video_id, candidate names, caption)`` items; fail or skip on missing ones."""
    finder = _VideoFinder(folder)
    found: dict[str, Path] = {}
    missing: list[tuple[str, list[str]]] = []
    for video_id, names, _ in items:
        path = finder.find(names)
        if path is None:
            missing.append((video_id, names))
        else:
            found[video_id] = path
    if missing and not skip_missing:
        video_id, names = missing[0]
        raise DatasetError(
            f"{source}: no file for video {video_id!r} under {folder} (searched recursively); tried "
            f"{', '.join(names)}. {len(missing)} of {len(items)} videos are missing; set videos_dir, "
            "or skip_missing=True to leave them out"
        )
    if missing:
        log.warning("%s: %d of %d videos not found under %s; left out", source, len(missing), len(items), folder)
    return found


# ----------------------------------------------------------------------------------- generic jsonl / csv


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    return jsonl_objects(path.read_text(encoding="utf-8"), path, DatasetError, "video and caption")


def _csv_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for line_no, row in _read_csv(path, required=("video", "caption")):
        yield f"{path}:{line_no}", row


def _generic_pairs(path: Path, records: Iterator[tuple[str, dict[str, Any]]]) -> list[Pair]:
    pairs = []
    for where, record in records:
        for key in ("video", "caption"):
            if key not in record:
                raise DatasetError(f"{where}: missing key {key!r}; expected video, caption, optional start, end")
        video = _text(record["video"], where, "video")
        start = _seconds(record.get("start"), where, "start")
        end = _seconds(record.get("end"), where, "end")
        if start is not None and end is not None and end <= start:
            raise DatasetError(f"{where}: end ({end}) must be after start ({start})")
        clip = ClipRef(video_id=video, path=path.parent / video, start=start, end=end)
        pairs.append(Pair(clip, _text(record["caption"], where, "caption")))
    return pairs


def _generic(
    root: Path,
    split: str,
    ext: str,
    file: str | os.PathLike[str] | None,
    val_fraction: float | None,
    seed: int,
) -> list[Pair]:
    records = _jsonl_records if ext == "jsonl" else _csv_records
    single: Path | None
    if file is not None or root.is_file():
        given = root / file if file is not None else root
        if not given.is_file():
            raise DatasetError(f"{given}: annotation file does not exist")
        single, folder = given, given.parent
        per_split: dict[str, Path] = {}
    else:
        folder = root
        captions = root / f"captions.{ext}"
        single = captions if captions.is_file() else None
        per_split = {s: root / f"{s}.{ext}" for s in SPLITS if (root / f"{s}.{ext}").is_file()}

    if split == "test" or "val" in per_split:
        path = per_split.get(split, single)
        if path is None:
            raise DatasetError(f"{folder}: no {split}.{ext} or captions.{ext} for the {split} split")
        if split != "test" and val_fraction is not None:
            raise DatasetError(f"{per_split['val']}: is the val split; val_fraction does not apply")
        return _generic_pairs(path, records(path))
    path = per_split.get("train", single)
    if path is None:
        raise DatasetError(f"{folder}: no train.{ext} or captions.{ext} for the {split} split")
    return _train_or_val(_generic_pairs(path, records(path)), split, val_fraction, seed, path)


def _generic_loader(ext: str) -> _Loader:
    """The loader of the generic ``jsonl`` or ``csv`` layout (same options, another record reader)."""

    def load(
        root: Path,
        split: str,
        *,
        file: str | os.PathLike[str] | None = None,
        val_fraction: float | None = None,
        seed: int = 0,
    ) -> list[Pair]:
        return _generic(root, split, ext, file, val_fraction, seed)

    return load


_layout("jsonl")(_generic_loader("jsonl"))
_layout("csv")(_generic_loader("csv"))


# ------------------------------------------------------------------------------------------------ MSR-VTT

MSRVTT_TRAIN = "MSRVTT_train.9k.csv"
MSRVTT_DATA = "MSRVTT_data.json"
MSRVTT_TEST = "MSRVTT_JSFUSION_test.csv"


def _msrvtt_captions(path: Path) -> dict[str, list[str]]:
    data = _load_json(path)
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise DatasetError(f"{path}: expected an object with a 'sentences' list of {{video_id, caption}}")
    captions: dict[str, list[str]] = {}
    for i, item in enumerate(sentences):
        where = f"{path}: sentences[{i}]"
        if not isinstance(item, dict) or "video_id" not in item or "caption" not in item:
            raise DatasetError(f"{where}: expected an object with video_id and caption, got {item!r}")
        video_id = _text(item["video_id"], where, "video_id")
        captions.setdefault(video_id, []).append(_text(item["caption"], where, "caption"))
    return captions


@_layout("msrvtt")
def _load_msrvtt(
    root: Path,
    split: str,
    *,
    videos_dir: str | os.PathLike[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
) -> list[Pair]:
    videos = _videos_dir(root, videos_dir)
    if split == "test":
        path = _split_file(root, split, {"test": MSRVTT_TEST}, "msrvtt")
        test_pairs = []
        for line_no, row in _read_csv(path, ("video_id", "sentence")):
            where = f"{path}:{line_no}"
            video_id = _text(row["video_id"], where, "video_id")
            test_pairs.append(
                Pair(ClipRef(video_id, videos / f"{video_id}.mp4"), _text(row["sentence"], where, "sentence"))
            )
        return test_pairs
    train_csv = _split_file(root, split, {"train": MSRVTT_TRAIN, "val": MSRVTT_TRAIN}, "msrvtt")
    captions = _msrvtt_captions(_split_file(root, split, {"train": MSRVTT_DATA, "val": MSRVTT_DATA}, "msrvtt"))
    pairs = []
    seen: set[str] = set()
    for line_no, row in _read_csv(train_csv, ("video_id",)):
        video_id = _text(row["video_id"], f"{train_csv}:{line_no}", "video_id")
        if video_id in seen:
            continue
        seen.add(video_id)
        if video_id not in captions:
            raise DatasetError(f"{train_csv}:{line_no}: video {video_id!r} has no caption in {MSRVTT_DATA}")
        clip = ClipRef(video_id, videos / f"{video_id}.mp4")
        pairs += [Pair(clip, caption) for caption in captions[video_id]]
    return _train_or_val(pairs, split, val_fraction, seed, train_csv)


# ------------------------------------------------------------------------------------------------- DiDeMo

DIDEMO_FILES = {split: f"{split}_data.json" for split in SPLITS}


def _didemo_start(times: Any, where: str) -> float:
    """Mean start (in DiDeMo's 5-second segments) over the annotators' [start, end] pairs; 0 if absent."""
    if times is None:
        return 0.0
    ok = isinstance(times, list) and len(times) > 0
    ok = ok and all(isinstance(t, list) and len(t) == 2 and all(isinstance(x, int | float) for x in t) for t in times)
    if not ok:
        raise DatasetError(f"{where}: times must be a non-empty list of [start, end] segment pairs, got {times!r}")
    return sum(t[0] for t in times) / len(times)


@_layout("didemo")
def _load_didemo(
    root: Path,
    split: str,
    *,
    videos_dir: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> list[Pair]:
    path = _split_file(root, split, DIDEMO_FILES, "didemo")
    data = _load_json(path)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of {{video, description, times}} objects")
    moments: dict[str, list[tuple[float, int, str]]] = {}
    for i, item in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(item, dict) or "video" not in item or "description" not in item:
            raise DatasetError(f"{where}: expected an object with video, description and times, got {item!r}")
        video = _text(item["video"], where, "video")
        start = _didemo_start(item.get("times"), where)
        moments.setdefault(video, []).append((start, i, _text(item["description"], where, "description")))
    paragraphs = {video: " ".join(text for _, _, text in sorted(items)) for video, items in moments.items()}
    items = [(video, _file_names([video, Path(video).stem]), text) for video, text in paragraphs.items()]
    files = _resolve_videos(items, _videos_dir(root, videos_dir), skip_missing, path)
    return [Pair(ClipRef(video, files[video]), text) for video, _, text in items if video in files]


# ------------------------------------------------------------------------------------------- ActivityNet

ACTIVITYNET_FILES = {"train": "train.json", "val": "train.json", "test": "val_1.json"}


def _activitynet_paragraph(entry: Any, where: str) -> str:
    """The sentences of one video in order of their start time, joined; blank sentences are left out."""
    sentences = entry.get("sentences") if isinstance(entry, dict) else None
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise DatasetError(f"{where}: expected an object with duration, timestamps and a list of sentence strings")
    timestamps = entry.get("timestamps")
    if timestamps is None:
        starts: list[float] = [0.0] * len(sentences)
    else:
        ok = isinstance(timestamps, list) and len(timestamps) == len(sentences)
        ok = ok and all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], int | float) for t in timestamps)
        if not ok:
            raise DatasetError(f"{where}.timestamps: expected one [start, end] per sentence, got {timestamps!r}")
        starts = [t[0] for t in timestamps]
    ordered = sorted((start, i, text.strip()) for i, (start, text) in enumerate(zip(starts, sentences, strict=True)))
    paragraph = " ".join(text for _, _, text in ordered if text)
    if not paragraph:
        raise DatasetError(f"{where}.sentences: no non-blank sentence")
    return paragraph


def _activitynet_stems(video_id: str) -> list[str]:
    other = video_id[2:] if video_id.startswith("v_") else f"v_{video_id}"
    return [video_id, other]


@_layout("activitynet")
def _load_activitynet(
    root: Path,
    split: str,
    *,
    videos_dir: str | os.PathLike[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    skip_missing: bool = False,
) -> list[Pair]:
    path = _split_file(root, split, ACTIVITYNET_FILES, "activitynet")
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object mapping video id -> {{duration, timestamps, sentences}}")
    folder = _videos_dir(root, videos_dir)
    pairs = [
        Pair(ClipRef(video_id, folder / video_id), _activitynet_paragraph(entry, f"{path}: {video_id!r}"))
        for video_id, entry in data.items()
    ]
    if split != "test":
        pairs = _train_or_val(pairs, split, val_fraction, seed, path)
    items = [(p.clip.video_id, _file_names(_activitynet_stems(p.clip.video_id)), p.caption) for p in pairs]
    files = _resolve_videos(items, folder, skip_missing, path)
    return [Pair(ClipRef(video_id, files[video_id]), text) for video_id, _, text in items if video_id in files]


# -------------------------------------------------------------------------------------------------- LSMDC

LSMDC_FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
LSMDC_FIELDS = "clip_id, start_aligned, end_aligned, start_extracted, end_extracted, sentence"
_LSMDC_CLIP = re.compile(r"^(?P<movie>.+)_\d+\.\d+\.\d+\.\d+-\d+\.\d+\.\d+\.\d+$")


def lsmdc_movie(clip_id: str) -> str | None:
    """The movie folder of an LSMDC clip: the clip id without its ``_HH.MM.SS.mmm-HH.MM.SS.mmm`` suffix."""
    match = _LSMDC_CLIP.match(clip_id)
    return match["movie"] if match else None


@_layout("lsmdc")
def _load_lsmdc(
    root: Path,
    split: str,
    *,
    videos_dir: str | os.PathLike[str] | None = None,
    ext: str = ".avi",
) -> list[Pair]:
    path = _split_file(root, split, LSMDC_FILES, "lsmdc")
    videos = _videos_dir(root, videos_dir)
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            fields = line.rstrip("\r\n").split("\t", 5)
            if len(fields) < 6:
                raise DatasetError(f"{where}: expected 6 tab-separated fields ({LSMDC_FIELDS}), got {len(fields)}")
            clip_id = _text(fields[0], where, "clip_id")
            movie = lsmdc_movie(clip_id)
            if movie is None:
                raise DatasetError(f"{where}: clip_id {clip_id!r} does not end in _HH.MM.SS.mmm-HH.MM.SS.mmm")
            pairs.append(
                Pair(ClipRef(clip_id, videos / movie / f"{clip_id}{ext}"), _text(fields[5], where, "sentence"))
            )
    return pairs


# --------------------------------------------------------------------------------------------------- MSVD

MSVD_CAPTIONS = "raw-captions.pkl"
MSVD_LISTS = {split: f"{split}_list.txt" for split in SPLITS}


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain containers and strings only: a captions file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only dicts, lists and strings are expected")


def _msvd_captions(path: Path) -> dict[str, list[str]]:
    try:
        with path.open("rb") as f:
            data = _PlainUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetError(f"{path}: not a pickle of video id -> list of token lists: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict of video id -> list of token lists, got {type(data).__name__}")
    captions: dict[str, list[str]] = {}
    for video_id, sentences in data.items():
        where = f"{path}: {video_id!r}"
        if not isinstance(sentences, list | tuple) or not sentences:
            raise DatasetError(f"{where}: expected a non-empty list of token lists, got {sentences!r}")
        texts = []
        for tokens in sentences:
            if isinstance(tokens, str):
                texts.append(_text(tokens, where, "caption"))
            elif isinstance(tokens, list | tuple) and tokens and all(isinstance(t, str) for t in tokens):
                texts.append(" ".join(tokens))
            else:
                raise DatasetError(f"{where}: expected a list of string tokens, got {tokens!r}")
        captions[str(video_id)] = texts
    return captions


@_layout("msvd")
def _load_msvd(
    root: Path,
    split: str,
    *,
    videos_dir: str | os.PathLike[str] | None = None,
    ext: str = ".avi",
) -> list[Pair]:
    list_path = _split_file(root, split, MSVD_LISTS, "msvd")
    captions = _msvd_captions(_split_file(root, split, dict.fromkeys(SPLITS, MSVD_CAPTIONS), "msvd"))
    videos = _videos_dir(root, videos_dir)
    pairs = []
    seen: set[str] = set()
    with list_path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            video_id = line.strip()
            if not video_id or video_id in seen:
                continue
            seen.add(video_id)
            if video_id not in captions:
                raise DatasetError(f"{list_path}:{line_no}: video {video_id!r} has no captions in {MSVD_CAPTIONS}")
            clip = ClipRef(video_id, videos / f"{video_id}{ext}")
            pairs += [Pair(clip, caption) for caption in captions[video_id]]
    return pairs
