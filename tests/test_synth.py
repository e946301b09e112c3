"""Synthetic captioned videos: deterministic, unique captions, every attribute visible, `tvr synth`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import model.train.synth as synth
from model.train.synth import (
    BACKGROUNDS,
    COLOURS,
    FPS,
    MOTIONS,
    SIZE_JITTER,
    SIZES,
    draw_scenes,
    render_scene,
    scene_space,
    write_synthetic_set,
)
from model.video import VideoReader, available_backends, read_clip, sample_times
from tvr_cli import app

SIZE = 64


def read_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]


def shape_mask(frames: np.ndarray, background: str) -> np.ndarray:
    """(T, H, W) pixels that are not the background colour."""
    distance = np.abs(frames.astype(int) - np.array(BACKGROUNDS[background])).sum(-1)
    return distance > 90


def centroids(mask: np.ndarray) -> np.ndarray:
    """(T, 2) centre (x, y) of the shape in each frame."""
    ys, xs = np.mgrid[0 : mask.shape[1], 0 : mask.shape[2]]
    area = mask.sum((1, 2))
    assert area.min() > 0, "the shape is missing from a frame"
    return np.stack([(xs * mask).sum((1, 2)) / area, (ys * mask).sum((1, 2)) / area], 1)


def event_moves(centres: np.ndarray, events: int) -> list[np.ndarray]:
    """(dx, dy) of each event over 12 uniformly sampled frames: 0 -> 11, or 0 -> 5 and 6 -> 11."""
    if events == 1:
        return [centres[11] - centres[0]]
    return [centres[5] - centres[0], centres[11] - centres[6]]


def uniform_12(frames: np.ndarray) -> np.ndarray:
    """The 12 frames read_clip's uniform sampling takes from a clip of these frames at FPS."""
    times = sample_times(0.0, len(frames) / FPS, 12)
    return frames[[int(t * FPS) for t in times]]


def test_caption_space_is_large_and_captions_are_unique() -> None:
    space = scene_space()
    captions = [scene.caption for scene in space]
    assert len(space) > 500 and len(set(captions)) == len(space)
    with pytest.raises(ValueError, match=f"between 1 and {len(space)}"):
        draw_scenes(len(space) + 1, seed=0)
    scenes = draw_scenes(300, seed=5)
    assert len({s.caption for s in scenes}) == 300
    assert draw_scenes(100, seed=5) == scenes[:100]  # a smaller set is a prefix of a larger one
    assert draw_scenes(100, seed=6) != scenes[:100]


def test_captions_use_the_shared_vocabulary() -> None:
    scenes = draw_scenes(400, seed=1)
    for scene in scenes:
        words = scene.caption.replace(",", "").split()
        plain = f"a {scene.colour} {scene.shape} {scene.motion}".split()  # e.g. "a red circle moves to the right"
        it = iter(words)
        assert all(word in it for word in plain), f"{plain} is not a subsequence of {scene.caption!r}"
        assert scene.colour in COLOURS and scene.motion in MOTIONS and scene.background != scene.colour
        if scene.then:
            assert f"{scene.motion}, then {scene.then}," in scene.caption
    used = " ".join(s.caption for s in scenes)
    for word in [*COLOURS, "circle", "square", "triangle", *MOTIONS, "small", "large", "slowly", "quickly", "then"]:
        assert word in used
    example = synth.Scene("red", "circle", "moves to the right", None, "small", "quickly", "black")
    assert example.caption == "a small red circle quickly moves to the right on a black background"


def test_every_attribute_is_visible_in_12_uniform_frames() -> None:
    """From pixels alone, recover colour, shape, size, background, each motion and its speed."""
    travel = SIZE - 2 * 2 - SIZES["large"] * SIZE * (1 + SIZE_JITTER)
    for index, scene in enumerate(draw_scenes(240, seed=2)):
        frames = uniform_12(render_scene(scene, SIZE, np.random.default_rng([2, index])))
        assert tuple(frames[0, 0, 0]) == BACKGROUNDS[scene.background]
        mask = shape_mask(frames, scene.background)
        colour = frames[mask].astype(int).mean(0)
        assert min(COLOURS, key=lambda c: np.abs(colour - COLOURS[c]).sum()) == scene.colour

        ys, xs = np.nonzero(mask[0])
        box_w, box_h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert ("large" if box_w > 0.22 * SIZE else "small") == scene.size
        fill = mask[0].sum() / (box_w * box_h)  # square ~1, circle ~0.79, triangle ~0.5
        assert ("square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle") == scene.shape, fill

        for phrase, move in zip(scene.events, event_moves(centroids(mask), len(scene.events)), strict=True):
            direction = np.array(MOTIONS[phrase])
            along, across = move @ direction, abs(move @ direction[::-1])
            assert across < 1.0 and along > 0.25 * travel, (scene.caption, move)
            assert ("quickly" if along > 0.55 * travel else "slowly") == scene.speed, (scene.caption, along / travel)


def test_written_set_is_deterministic_and_decodes_with_both_backends(tmp_path: Path) -> None:
    first = write_synthetic_set(tmp_path / "a", videos=8, seed=3, size=SIZE, progress=False)
    second = write_synthetic_set(tmp_path / "b", videos=8, seed=3, size=SIZE, progress=False)
    other = write_synthetic_set(tmp_path / "c", videos=8, seed=4, size=SIZE, progress=False)
    assert first == tmp_path / "a" / "captions.jsonl"
    assert first.read_text() == second.read_text() != other.read_text()
    records = read_records(tmp_path / "a")
    assert len({r["caption"] for r in records}) == 8
    for record in records:
        assert set(record) >= {"video", "caption", "duration"} and not Path(record["video"]).is_absolute()
        path = tmp_path / "a" / record["video"]
        _assert_same_video(path, tmp_path / "b" / record["video"])
        decoded = {}
        for backend in available_backends():
            with VideoReader(path, backend=backend) as reader:
                assert reader.info.codec == "h264" and (reader.info.width, reader.info.height) == (SIZE, SIZE)
                assert reader.info.duration == pytest.approx(record["duration"], abs=1 / FPS)
            decoded[backend] = read_clip(path, 0.0, record["duration"], 12, backend=backend)
        frames = decoded["pyav"]
        if "decord" in decoded:
            assert np.abs(decoded["decord"].astype(int) - frames).mean() < 2
        # the captioned motion is in the decoded file too
        moves = event_moves(centroids(shape_mask(frames, record["background"])), 1 + bool(record["then"]))
        for phrase, move in zip([record["motion"], record["then"]], moves, strict=False):
            assert move @ np.array(MOTIONS[phrase]) > 8, (record["caption"], move)


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def _assert_same_video(a: Path, b: Path) -> None:
    """Same frames, up to encoder noise: x264 was seen to give different bytes under heavy load."""
    frames_a, frames_b = _decoded(a), _decoded(b)
    assert frames_a.shape == frames_b.shape
    assert np.abs(frames_a - frames_b).mean() < 1.0, f"{a} and {b} show different content"


def test_rerun_resumes_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    encode = synth.encode_mp4
    calls = 0

    def failing_encode(path: Path, frames: np.ndarray, fps: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            path.write_bytes(b"half a file")
            raise KeyboardInterrupt
        encode(path, frames, fps)

    write_synthetic_set(out, videos=5, seed=1, size=32, progress=False)  # a complete set of another seed
    monkeypatch.setattr(synth, "encode_mp4", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_set(out, videos=4, seed=0, size=32, progress=False)
    assert not (out / "captions.jsonl").exists()  # an interrupted set does not look complete
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        "synth_00000.mp4",
        "synth_00001.mp4",
        "synth_00002.mp4.part",
    ]
    kept = (out / "videos" / "synth_00000.mp4").stat().st_mtime_ns
    monkeypatch.setattr(synth, "encode_mp4", encode)
    write_synthetic_set(out, videos=4, seed=0, size=32, progress=False)
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"synth_0000{i}.mp4" for i in range(4)]
    assert (out / "videos" / "synth_00000.mp4").stat().st_mtime_ns == kept  # finished clips are kept
    fresh = write_synthetic_set(tmp_path / "fresh", videos=4, seed=0, size=32, progress=False)
    assert (out / "captions.jsonl").read_text() == fresh.read_text()
    for i in range(4):
        name = f"videos/synth_0000{i}.mp4"
        _assert_same_video(out / name, tmp_path / "fresh" / name)

    write_synthetic_set(out, videos=2, seed=0, size=32, progress=False)  # fewer: extra clips removed
    assert len(read_records(out)) == 2 and len(list((out / "videos").iterdir())) == 2
    write_synthetic_set(out, videos=2, seed=9, size=32, progress=False)  # another seed: rewritten
    assert (out / "captions.jsonl").read_text() == write_synthetic_set(
        tmp_path / "seed9", videos=2, seed=9, size=32, progress=False
    ).read_text()
    _assert_same_video(out / "videos" / "synth_00000.mp4", tmp_path / "seed9" / "videos" / "synth_00000.mp4")


def test_tvr_synth_command(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), "--videos", "3", "--seed", "7", "--size", "32"])
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "out")
    assert len(records) == 3 and all((tmp_path / "out" / r["video"]).is_file() for r in records)
    assert [r["caption"] for r in records] == [s.caption for s in draw_scenes(3, seed=7)]

    for args, hint in [
        (["--videos", "0"], "--videos"),
        (["--videos", "100000"], "--videos"),
        (["--size", "33"], "--size"),
    ]:
        argv = ["synth", str(tmp_path / "bad"), *(["--videos", "2"] if args[0] == "--size" else []), *args]
        result = runner.invoke(app, argv)
        assert result.exit_code == 2 and hint in result.output and "Traceback" not in result.output, result.output
        assert isinstance(result.exception, SystemExit)
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, ["synth", str(tmp_path / "file"), "--videos", "2"])
    assert result.exit_code == 1 and "cannot write" in result.output and isinstance(result.exception, SystemExit)


def test_renders_draw_each_caption_anew_and_keep_the_one_render_set(tmp_path: Path) -> None:
    single = write_synthetic_set(tmp_path / "one", videos=3, seed=5, size=32, progress=False)
    result = CliRunner().invoke(
        app, ["synth", str(tmp_path / "three"), "--videos", "3", "--seed", "5", "--size", "32", "--renders", "3"]
    )
    assert result.exit_code == 0 and "wrote 9 videos" in result.output, result.output
    records, first = read_records(tmp_path / "three"), read_records(tmp_path / "one")
    assert [r["caption"] for r in records] == [r["caption"] for r in first for _ in range(3)]
    for index, record in enumerate(records):
        frames = _decoded(tmp_path / "three" / record["video"])
        if index % 3 == 0:  # a scene's first render is the clip of the one-render set
            _assert_same_video(tmp_path / "three" / record["video"], tmp_path / "one" / first[index // 3]["video"])
        else:  # another render of the same caption: drawn anew (its path starts elsewhere)
            previous = _decoded(tmp_path / "three" / records[index - 1]["video"])
            assert frames.shape == previous.shape and np.abs(frames - previous).mean() > 1.0
    assert json.loads((tmp_path / "one" / ".synth.json").read_text()).keys() == {"seed", "size", "fps", "version"}

    write_synthetic_set(tmp_path / "three", videos=3, seed=5, size=32, progress=False)  # back to one render
    assert (tmp_path / "three" / "captions.jsonl").read_text() == single.read_text()
    assert len(list((tmp_path / "three" / "videos").iterdir())) == 3
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "bad"), "--videos", "2", "--renders", "0"])
    assert result.exit_code == 2 and "--renders" in result.output
