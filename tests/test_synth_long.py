"""Long synthetic videos (`tvr synth --long`): a captioned event among distractors, seen in the decoded files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import model.train.synth_long as synth_long
from model.train.synth import BACKGROUNDS, COLOURS, FPS, MOTIONS, Scene, scene_space, write_synthetic_set
from model.train.synth_long import (
    DISTRACTOR_SPAN,
    EVENT_SPAN,
    LONG_SECONDS,
    plan_video,
    query_of,
    shows_event,
    write_long_set,
)
from model.video import VideoReader
from tvr_cli import app

SIZE = 64
SHORT = {"min_seconds": 40.0, "max_seconds": 60.0}  # shorter than the CLI's range, to keep the tests fast
BY_CAPTION = {scene.caption: scene for scene in scene_space()}


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "moments.jsonl").read_text().splitlines()]


def decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def shape_masks(frames: np.ndarray, background: str) -> np.ndarray:
    """(T, H, W) pixels that are not the background colour."""
    return np.abs(frames - np.array(BACKGROUNDS[background])).sum(-1) > 90


def colour_of(frame: np.ndarray, mask: np.ndarray) -> str:
    """The vocabulary colour nearest the mean of the shape's pixels."""
    mean = frame[mask].mean(0)
    return min(COLOURS, key=lambda name: np.abs(mean - COLOURS[name]).sum())


def shape_of(masks: np.ndarray) -> str:
    """The shape most frames' fill of their bounding box says (square ~1, circle ~0.79, triangle ~0.5)."""
    votes: Counter[str] = Counter()
    for mask in masks:
        ys, xs = np.nonzero(mask)
        fill = mask.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
        votes["square" if fill > 0.9 else "circle" if fill > 0.68 else "triangle"] += 1
    return votes.most_common(1)[0][0]


def centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def moves(masks: np.ndarray, events: int) -> list[str]:
    """The direction (a MOTIONS phrase) the shape travels during each of ``events`` equal parts."""
    parts = np.array_split(np.arange(len(masks)), events)
    found = []
    for part in parts:
        step = centre(masks[part[-1]]) - centre(masks[part[0]])
        found.append(max(MOTIONS, key=lambda phrase: float(step @ np.array(MOTIONS[phrase]))))
    return found


def test_plans_put_one_event_of_10_to_30_s_among_distractors_that_never_show_it() -> None:
    space = scene_space()
    lengths = []
    for index in range(300):
        plan = plan_video(np.random.default_rng([7, index]), 40 * FPS, 90 * FPS, FPS, space)
        event = plan.event_piece.scene
        assert [p.start for p in plan.pieces] == [0, *(p.end for p in plan.pieces[:-1])]  # contiguous from 0
        assert 40 * FPS <= plan.frames <= 90 * FPS
        assert EVENT_SPAN[0] * FPS <= plan.event_piece.frames <= EVENT_SPAN[1] * FPS
        assert event.then is None and event.speed == "quickly"
        for k, piece in enumerate(plan.pieces):
            if k == plan.event:
                continue
            assert not shows_event(piece.scene, event)
            assert piece.frames <= DISTRACTOR_SPAN[1] * FPS
            lengths.append(piece.frames)
            if piece.frames < DISTRACTOR_SPAN[0] * FPS:  # only as the one scene between an end and the event
                assert (k, plan.event) == (0, 1) or (k, plan.event) == (len(plan.pieces) - 1, k - 1), index
    assert np.mean(np.array(lengths) >= DISTRACTOR_SPAN[0] * FPS) > 0.95

    event = Scene("red", "circle", "moves down", None, "small", "quickly", "gray")
    assert query_of(event) == "a red circle moves down"
    assert shows_event(Scene("red", "circle", "moves up", "moves down", "large", "slowly", "black"), event)
    for colour, shape, motion in [("blue", "circle", "moves down"), ("red", "square", "moves down")]:
        assert not shows_event(Scene(colour, shape, motion, None, "small", "quickly", "gray"), event)
    assert not shows_event(Scene("red", "circle", "moves up", "moves to the left", "small", "quickly", "gray"), event)


def test_long_videos_decode_and_show_the_event_only_in_its_span(tmp_path: Path) -> None:
    moments = write_long_set(tmp_path / "long", videos=2, seed=3, size=SIZE, progress=False, **SHORT)
    assert moments == tmp_path / "long" / "moments.jsonl"
    for record in read_records(tmp_path / "long"):
        path = tmp_path / "long" / record["video"]
        with VideoReader(path) as reader:
            assert reader.info.codec == "h264" and (reader.info.width, reader.info.height) == (SIZE, SIZE)
            assert reader.info.duration == pytest.approx(record["duration"], abs=1 / FPS)
        frames = decoded(path)
        assert len(frames) == round(record["duration"] * FPS)
        assert SHORT["min_seconds"] <= record["duration"] <= SHORT["max_seconds"]
        assert 0 <= record["start"] < record["end"] <= record["duration"]
        assert EVENT_SPAN[0] <= record["end"] - record["start"] <= EVENT_SPAN[1]

        event = BY_CAPTION[record["caption"]]
        assert record["query"] == query_of(event) == f"a {event.colour} {event.shape} {event.motion}"
        spans = [(s["start"], s["end"]) for s in record["scenes"]]
        assert spans[0][0] == 0 and spans[-1][1] == record["duration"]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert sum(1 for s in record["scenes"] if s["caption"] == record["caption"]) >= 1
        assert (record["start"], record["end"]) in spans

        for scene_record in record["scenes"]:
            scene = BY_CAPTION[scene_record["caption"]]
            part = frames[round(scene_record["start"] * FPS) : round(scene_record["end"] * FPS)]
            masks = shape_masks(part, scene.background)
            assert all(colour_of(f, m) == scene.colour for f, m in zip(part, masks, strict=True))
            seen = (scene.colour, shape_of(masks), moves(masks, len(scene.events)) if len(part) >= FPS else None)
            if (scene_record["start"], scene_record["end"]) == (record["start"], record["end"]):
                # the event: its colour in every frame, its shape, its motion across the whole span
                assert seen == (event.colour, event.shape, [event.motion])
                travel = centre(masks[-1]) - centre(masks[0])
                assert travel @ np.array(MOTIONS[event.motion]) > 20, travel
            else:  # a distractor: never the event's colour, shape and motion together
                assert scene.shape == seen[1]
                assert seen[2] is None or seen[2] == scene.events
                assert not (seen[0] == event.colour and seen[1] == event.shape and event.motion in (seen[2] or []))
                assert not shows_event(scene, event)


def test_rerun_keeps_finished_videos_and_removes_other_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    encode = synth_long.encode_mp4
    calls = 0

    def failing_encode(path: Path, frames: np.ndarray, fps: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            path.write_bytes(b"half a file")
            raise KeyboardInterrupt
        encode(path, frames, fps)

    write_synthetic_set(out, videos=2, seed=0, size=32, progress=False)  # short clips: another kind of set
    write_long_set(out, videos=3, seed=1, size=32, progress=False, **SHORT)  # a long set of another seed
    monkeypatch.setattr(synth_long, "encode_mp4", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        write_long_set(out, videos=2, seed=0, size=32, progress=False, **SHORT)
    assert not (out / "moments.jsonl").exists()  # an interrupted set does not look complete
    names = sorted(p.name for p in (out / "videos").iterdir())
    assert names == ["long_00000.mp4", "long_00001.mp4.part", "synth_00000.mp4", "synth_00001.mp4"]
    kept = (out / "videos" / "long_00000.mp4").stat().st_mtime_ns

    monkeypatch.setattr(synth_long, "encode_mp4", encode)
    write_long_set(out, videos=2, seed=0, size=32, progress=False, **SHORT)
    assert (out / "videos" / "long_00000.mp4").stat().st_mtime_ns == kept  # finished videos are kept
    assert (out / "captions.jsonl").is_file() and len(list((out / "videos").glob("synth_*.mp4"))) == 2
    fresh = write_long_set(tmp_path / "fresh", videos=2, seed=0, size=32, progress=False, **SHORT)
    assert (out / "moments.jsonl").read_text() == fresh.read_text()
    for record in read_records(out):
        same, other = decoded(out / record["video"]), decoded(tmp_path / "fresh" / record["video"])
        assert same.shape == other.shape and np.abs(same - other).mean() < 1.0

    bigger = write_long_set(tmp_path / "bigger", videos=3, seed=0, size=32, progress=False, **SHORT)
    assert read_records(tmp_path / "bigger")[:2] == read_records(out)  # a video does not depend on the count
    write_long_set(out, videos=1, seed=0, size=32, progress=False, **SHORT)  # fewer: extra videos removed
    assert sorted(p.name for p in (out / "videos").glob("long_*")) == ["long_00000.mp4"]
    other = write_long_set(tmp_path / "seed9", videos=1, seed=9, size=32, progress=False, **SHORT)
    assert other.read_text() != bigger.read_text().splitlines(keepends=True)[0]
    with pytest.raises(ValueError, match="30 s .* got 20 to 60 s"):
        write_long_set(out, videos=1, seed=0, min_seconds=20, max_seconds=60)


def test_tvr_synth_long_command(tmp_path: Path) -> None:
    runner = CliRunner()
    argv = ["synth", str(tmp_path / "out"), "--long", "-n", "1", "--seed", "4", "--size", "32", "--minutes", "2", "2"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0 and "wrote 1 long videos" in result.output, result.output
    (record,) = read_records(tmp_path / "out")
    assert record["duration"] == 120.0 and (tmp_path / "out" / record["video"]).is_file()
    assert record == json.loads(
        write_long_set(tmp_path / "api", videos=1, seed=4, size=32, min_seconds=120, max_seconds=120, progress=False)
        .read_text()
        .splitlines()[0]
    )
    assert LONG_SECONDS == (120.0, 600.0)

    for args, hint, words in [
        (["--long", "--minutes", "1", "3"], "--minutes", "within 2 to 10 minutes, got 1 3"),
        (["--long", "--minutes", "4", "3"], "--minutes", "MIN <= MAX"),
        (["--long", "--minutes", "2", "11"], "--minutes", "got 2 11"),
        (["--minutes", "2", "3"], "--minutes", "add --long"),
        (["--long", "--renders", "2"], "--renders", "got 2"),
        (["--long", "--size", "33"], "--size", "got 33"),
    ]:
        result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "-n", "2", *args])
        assert result.exit_code == 2 and hint in result.output and "Traceback" not in result.output, result.output
        assert words in " ".join(result.output.replace("│", " ").split()), result.output
    result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--long", "-n", "0"])
    assert result.exit_code == 2 and "--videos" in result.output and "got 0" in result.output
    assert not (tmp_path / "bad").exists()  # nothing written on a bad option
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, ["synth", str(tmp_path / "file"), "--long", "-n", "1"])
    assert result.exit_code == 1 and "cannot write" in result.output
