"""Ingestion end to end on real encoded files, with the embedded SQLite catalog and the tiny encoder."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from indexer_fixtures import (  # noqa: F401 (fixtures)
    LONG_CLIPS,
    LONG_SECONDS,
    colored,
    format_corpus,
    make_settings,
    run_ingest,
    tiny_checkpoint,
    tiny_encoder,
    write_small_corpus,
)
from media import write_video
from PIL import Image
from sqlalchemy import select

from indexer import store, vector_index
from indexer.catalog import Clip, ClipThumbnail, IngestionRun, RunStatus, Video, VideoStatus
from indexer.db import make_sessionmaker, open_catalog
from indexer.errors import CheckpointMismatchError
from indexer.sync import sync_index, verify_index


def catalog(settings):  # type: ignore[no-untyped-def]
    return make_sessionmaker(open_catalog(settings))


def videos_by_name(settings, folder: Path) -> dict[str, Video]:  # type: ignore[no-untyped-def]
    with catalog(settings)() as session:
        rows = session.scalars(select(Video)).all()
        return {str(Path(v.path).relative_to(folder.resolve())): v for v in rows}


def thumbnails_of(settings, clip_ids) -> dict[int, bytes]:  # type: ignore[no-untyped-def]
    """The catalog's JPEG of each of ``clip_ids`` that has one."""
    with catalog(settings)() as session:
        rows = session.execute(
            select(ClipThumbnail.clip_id, ClipThumbnail.jpeg).where(ClipThumbnail.clip_id.in_(clip_ids))
        )
        return {clip_id: jpeg for clip_id, jpeg in rows}


def clips_of(settings, video_id: int) -> list[Clip]:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import undefer

    with catalog(settings)() as session:
        return list(
            session.scalars(
                select(Clip).where(Clip.video_id == video_id).options(undefer(Clip.embedding)).order_by(Clip.position)
            )
        )


def test_every_format_and_every_failure(tmp_path, format_corpus, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    settings = make_settings(tmp_path, tiny_checkpoint)
    summary = run_ingest(settings, [format_corpus.folder], tiny_encoder, batch_size=8)

    assert summary.indexed == len(format_corpus.good)
    assert summary.ignored == len(format_corpus.ignored)
    assert sorted(Path(p).name for p, _ in summary.failed) == sorted(Path(n).name for n in format_corpus.bad)
    assert summary.clips == sum(format_corpus.good.values())
    videos = videos_by_name(settings, format_corpus.folder)
    assert set(videos) == set(format_corpus.good) | set(format_corpus.bad)
    for name, expected_clips in format_corpus.good.items():
        video = videos[name]
        assert video.status == VideoStatus.indexed, (name, video.error)
        assert video.checkpoint_id == tiny_encoder.checkpoint_id and len(video.content_hash) == 64
        assert video.decoder == "pyav"  # what decoded it is recorded
        clips = clips_of(settings, video.id)
        assert len(clips) == expected_clips, name
        jpegs = thumbnails_of(settings, [c.id for c in clips])
        for clip in clips:
            vector = clip.vector()
            assert vector.shape == (tiny_encoder.embed_dim,)
            assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
            assert clip.thumbnail is None  # no file: the JPEG is in the catalog
            with Image.open(io.BytesIO(jpegs[clip.id])) as image:
                assert image.format == "JPEG" and image.width <= 160
    for name, words in format_corpus.bad.items():
        video = videos[name]
        assert video.status == VideoStatus.failed and words in video.error, (name, video.error)
        assert clips_of(settings, video.id) == []
    odd = videos["odd_size.MOV"]
    assert (odd.width, odd.height) == (48, 34)  # 47x33 written padded to even sizes
    assert videos["sub/vfr.mp4"].duration > 1.5 and videos["sub/vfr.mp4"].fps > 0

    long_clips = clips_of(settings, videos["sub/long.m4v"].id)
    starts = [c.start for c in long_clips]
    assert starts[:3] == [0.0, 5.0, 10.0] and all(c.end - c.start == pytest.approx(10.0) for c in long_clips)
    assert long_clips[-1].end == pytest.approx(LONG_SECONDS, abs=0.6) and len(long_clips) == LONG_CLIPS
    # clips of one video at different moments differ (the square moves), so results can point at moments
    assert not np.allclose(long_clips[0].vector(), long_clips[-1].vector(), atol=1e-3)

    report = verify_index(catalog(settings), settings.index_dir)
    assert report.ok, report.problems
    assert report.vectors == summary.clips and summary.index.factory == "Flat"
    with catalog(settings)() as session:
        run = session.scalars(select(IngestionRun)).one()
        assert run.status == RunStatus.finished and run.indexed == len(format_corpus.good)
        assert run.failed == len(format_corpus.bad) and run.finished_at is not None


def test_rerun_skips_unchanged_reindexes_changed_and_retries_failed(
    tmp_path,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    folder = tmp_path / "videos"
    files = write_small_corpus(folder, 4)
    broken = folder / "broken.mp4"
    broken.write_bytes(b"garbage")
    settings = make_settings(tmp_path, tiny_checkpoint)
    first = run_ingest(settings, [folder], tiny_encoder)
    assert (first.indexed, len(first.failed)) == (4, 1)
    before = videos_by_name(settings, folder)
    old_clip_ids = {c.id for c in clips_of(settings, before["v0_001.mp4"].id)}
    assert len(thumbnails_of(settings, old_clip_ids)) == len(old_clip_ids)

    again = run_ingest(settings, [folder], tiny_encoder)
    assert (again.indexed, again.skipped, len(again.failed)) == (0, 4, 1)  # failed files are retried
    assert again.index.version == first.index.version  # nothing changed: nothing republished

    write_video(files[1], colored(20, 32, 999), fps=5)  # new content for one file
    write_video(broken, colored(10, 32, 998), fps=5)  # and the broken one repaired
    third = run_ingest(settings, [folder], tiny_encoder)
    assert (third.indexed, third.skipped, third.failed) == (2, 3, [])
    after = videos_by_name(settings, folder)
    assert after["v0_001.mp4"].id == before["v0_001.mp4"].id
    assert after["v0_001.mp4"].content_hash != before["v0_001.mp4"].content_hash
    assert after["broken.mp4"].status == VideoStatus.indexed and after["broken.mp4"].error is None
    new_clips = clips_of(settings, after["v0_001.mp4"].id)
    assert len(new_clips) == 1 and not old_clip_ids & {c.id for c in new_clips}  # old clips removed
    assert thumbnails_of(settings, old_clip_ids) == {}  # the old thumbnails went with their clips
    assert set(thumbnails_of(settings, [c.id for c in new_clips])) == {new_clips[0].id}
    for name in ("v0_000.mp4", "v0_002.mp4"):
        assert after[name].indexed_at == before[name].indexed_at and after[name].attempts == 1
    assert third.index.version == first.index.version + 1
    index, meta = store.open_published_index(settings.data_dir)
    expected = sorted(c.id for v in after.values() for c in clips_of(settings, v.id))
    assert sorted(vector_index.index_ids(index)) == expected

    # touching a file (same bytes, new mtime) is recognised by its hash and skipped
    files[2].touch()
    touched = run_ingest(settings, [folder], tiny_encoder)
    assert (touched.indexed, touched.skipped) == (0, 5)


def test_manifest_titles_metadata_and_relative_paths(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    write_small_corpus(folder, 2)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        '{"path": "videos/v0_000.mp4", "title": "First", "metadata": {"source": "cam1"}, "year": 2024}\n'
        "\n"
        '{"path": "videos/v0_001.mp4"}\n'
    )
    settings = make_settings(tmp_path, tiny_checkpoint)
    summary = run_ingest(settings, [], tiny_encoder, manifest=manifest)
    assert summary.indexed == 2
    videos = videos_by_name(settings, folder)
    assert videos["v0_000.mp4"].title == "First"
    assert videos["v0_000.mp4"].meta == {"source": "cam1", "year": 2024}
    assert videos["v0_001.mp4"].title is None
    # a new title for an unchanged file updates the row without re-encoding it
    csv = tmp_path / "list.csv"
    csv.write_text('path,title,metadata,lang\nvideos/v0_001.mp4,Second,"{""k"": 1}",en\n')
    again = run_ingest(settings, [], tiny_encoder, manifest=csv)
    assert (again.indexed, again.skipped) == (0, 1)
    video = videos_by_name(settings, folder)["v0_001.mp4"]
    assert video.title == "Second" and video.meta == {"k": 1, "lang": "en"}


def test_rebuild_gives_the_same_search_results(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    write_small_corpus(folder, 12)
    settings = make_settings(tmp_path, tiny_checkpoint)
    run_ingest(settings, [folder], tiny_encoder)
    queries = np.concatenate(
        [
            tiny_encoder.encode_text(["a red square moves to the right", "a blue square"]).numpy(),
            np.random.default_rng(0).standard_normal((3, tiny_encoder.embed_dim)).astype(np.float32),
        ]
    )
    before = store.load_published_index(settings.data_dir)
    scores, ids = before.search(queries, 5)
    clip = clips_of(settings, videos_by_name(settings, folder)["v0_003.mp4"].id)[0]
    self_scores, self_ids = before.search(clip.vector(), 1)
    assert self_ids[0, 0] == clip.id and self_scores[0, 0] == pytest.approx(1.0, abs=1e-5)

    rebuilt = sync_index(catalog(settings), settings.index_dir, rebuild=True)
    assert rebuilt.version == before.meta.version + 1
    after = store.load_published_index(settings.data_dir)
    scores2, ids2 = after.search(queries, 5)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-6)

    ivf = sync_index(catalog(settings), settings.index_dir, factory="IVF2,Flat", rebuild=True)
    assert ivf.factory == "IVF2,Flat" and ivf.search_defaults == {"nprobe": 2}
    index = store.load_published_index(settings.data_dir)
    _, ivf_ids = index.search(queries, 5)  # nprobe = nlist: exhaustive, the same as exact search
    np.testing.assert_array_equal(ids, ivf_ids)
    # an explicitly chosen factory stays when later ingests update the index
    write_small_corpus(folder, 1, seed=5)
    meta = run_ingest(settings, [folder], tiny_encoder).index
    assert meta.factory == "IVF2,Flat" and meta.vector_count == 13 and not meta.auto_factory


def test_delete_removes_clips_thumbnails_and_vectors(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    from indexer.records import delete_videos

    folder = tmp_path / "videos"
    write_small_corpus(folder, 3)
    settings = make_settings(tmp_path, tiny_checkpoint)
    run_ingest(settings, [folder], tiny_encoder)
    videos = videos_by_name(settings, folder)
    gone = clips_of(settings, videos["v0_000.mp4"].id)
    removed = delete_videos(
        make_sessionmaker(open_catalog(settings, writer=True)),
        [str(videos["v0_000.mp4"].id), str(folder / "v0_002.mp4")],
    )
    assert sorted(v.path for v in removed) == sorted(str((folder / n).resolve()) for n in ("v0_000.mp4", "v0_002.mp4"))
    meta = sync_index(catalog(settings), settings.index_dir)
    assert meta.vector_count == 1
    assert set(videos_by_name(settings, folder)) == {"v0_001.mp4"}
    assert thumbnails_of(settings, [c.id for c in gone]) == {}
    assert not settings.thumbnails_dir.exists()  # nothing is written outside the catalog
    index, _ = store.open_published_index(settings.data_dir)
    assert gone[0].id not in set(vector_index.index_ids(index))
    assert verify_index(catalog(settings), settings.index_dir).ok


def test_another_checkpoint_is_refused_unless_switching(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    from model import create_model, load_encoder, save_checkpoint

    folder = tmp_path / "videos"
    write_small_corpus(folder, 2)
    settings = make_settings(tmp_path, tiny_checkpoint)
    first = run_ingest(settings, [folder / "v0_000.mp4"], tiny_encoder)
    other_path = tmp_path / "other-ckpt"
    save_checkpoint(create_model("tiny"), other_path)
    other = load_encoder(str(other_path))
    assert other.checkpoint_id != tiny_encoder.checkpoint_id
    with pytest.raises(CheckpointMismatchError, match=first.index.checkpoint_id):
        run_ingest(settings, [folder], other)
    assert store.current_meta(settings.index_dir).version == first.index.version  # untouched
    # switching re-encodes everything, including catalog videos not named in this run
    switched = run_ingest(settings, [folder / "v0_001.mp4"], other, switch_checkpoint=True)
    assert switched.indexed == 2 and switched.index.checkpoint_id == other.checkpoint_id
    assert verify_index(catalog(settings), settings.index_dir).ok


def test_a_catalog_made_with_the_wrong_preprocessing_is_re_encoded_by_the_next_ingest(
    tmp_path,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    """Before preprocessing was part of the checkpoint id, a backbone with its own statistics was normalised
    with CLIP's and its vectors recorded under the id of the weights alone. The next ingest with the same
    weights (whose id now names the right preprocessing) re-encodes them without --switch-checkpoint."""
    from model import create_model, load_encoder, save_checkpoint
    from model.preprocess import FramePreprocess

    model = create_model("tiny")
    model.config.preprocess = FramePreprocess(64, mean=(0.5,) * 3, std=(0.5,) * 3)
    save_checkpoint(model, tmp_path / "half-stats")
    encoder = load_encoder(str(tmp_path / "half-stats"))
    (legacy,) = encoder.legacy_checkpoint_ids
    assert legacy != encoder.checkpoint_id

    class AsBefore:  # the same encoder as the old code saw it: CLIP's preprocessing, the weights' id
        def __init__(self) -> None:
            self.checkpoint_id, self.legacy_checkpoint_ids = legacy, ()
            self.preprocess = FramePreprocess(64)

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(encoder, name)

    folder = tmp_path / "videos"
    write_small_corpus(folder, 2)
    settings = make_settings(tmp_path, str(tmp_path / "half-stats"))
    before = run_ingest(settings, [folder / "v0_000.mp4"], AsBefore())
    assert before.index.checkpoint_id == legacy
    after = run_ingest(settings, [folder / "v0_001.mp4"], encoder)  # names only the new file
    assert after.indexed == 2 and after.index.checkpoint_id == encoder.checkpoint_id
    with catalog(settings)() as session:
        assert {v.checkpoint_id for v in session.scalars(select(Video))} == {encoder.checkpoint_id}
    assert verify_index(catalog(settings), settings.index_dir).ok
    with pytest.raises(CheckpointMismatchError):  # an unrelated checkpoint is still refused
        run_ingest(settings, [folder], tiny_encoder)


@pytest.mark.slow
def test_worker_processes_decode_long_videos_in_chunks(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    folder = tmp_path / "videos"
    write_small_corpus(folder, 5)
    write_video(folder / "long.mp4", colored(LONG_SECONDS * 2, 32, 7), fps=2)
    (folder / "bad.mp4").write_bytes(b"\x00" * 100)
    settings = make_settings(tmp_path, tiny_checkpoint)
    summary = run_ingest(settings, [folder], tiny_encoder, workers=2, batch_size=4, chunk_clips=5)
    assert (summary.indexed, len(summary.failed), summary.clips) == (6, 1, 5 + LONG_CLIPS)
    long_clips = clips_of(settings, videos_by_name(settings, folder)["long.mp4"].id)
    assert [c.position for c in long_clips] == list(range(LONG_CLIPS))
    # chunks decoded in other processes line up with the windows: the same vectors as decoding inline
    inline = make_settings(tmp_path / "inline", tiny_checkpoint)
    run_ingest(inline, [folder / "long.mp4"], tiny_encoder, workers=0, batch_size=7)
    inline_clips = clips_of(inline, videos_by_name(inline, folder)["long.mp4"].id)
    np.testing.assert_allclose(
        np.stack([c.vector() for c in long_clips]), np.stack([c.vector() for c in inline_clips]), atol=1e-5
    )
    assert verify_index(catalog(settings), settings.index_dir).ok


@pytest.mark.parametrize("crash", [False, True], ids=["", "a worker dies mid-segment"])
def test_a_long_file_is_split_into_segments_that_workers_decode_at_once(
    tmp_path,
    monkeypatch,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
    crash,
) -> None:
    import indexer.local_runner

    folder = tmp_path / "videos"
    write_video(folder / "long.mp4", colored(LONG_SECONDS * 2, 32, 7), fps=2)
    write_small_corpus(folder, 2)
    if crash:
        from indexer_fixtures import crashing_once_in_a_segment_decode

        monkeypatch.setattr(indexer.local_runner, "decode_video", crashing_once_in_a_segment_decode)
    settings = make_settings(tmp_path, tiny_checkpoint)
    # 23 clips in segments of 5: five tasks for two workers, each seeking to its own first clip
    summary = run_ingest(settings, [folder], tiny_encoder, workers=2, batch_size=4, chunk_clips=2, segment_clips=5)
    assert (summary.indexed, summary.failed, summary.clips) == (3, [], 2 + LONG_CLIPS)
    assert (folder / "long.mp4.crashed").exists() == crash
    split = clips_of(settings, videos_by_name(settings, folder)["long.mp4"].id)
    assert [c.position for c in split] == list(range(LONG_CLIPS))  # each clip once, none missing

    whole = make_settings(tmp_path / "whole", tiny_checkpoint)
    run_ingest(whole, [folder / "long.mp4"], tiny_encoder, workers=0, segment_clips=0)
    unsplit = clips_of(whole, videos_by_name(whole, folder)["long.mp4"].id)
    assert [(c.start, c.end) for c in split] == [(c.start, c.end) for c in unsplit]
    np.testing.assert_allclose(
        np.stack([c.vector() for c in split]), np.stack([c.vector() for c in unsplit]), atol=1e-5
    )  # a segment's frames, reached by seeking, are the frames of a pass over the whole file
    assert list(thumbnails_of(settings, [c.id for c in split]).values()) == list(
        thumbnails_of(whole, [c.id for c in unsplit]).values()
    )
    assert verify_index(catalog(settings), settings.index_dir).ok


def test_an_ingest_leaves_torchs_thread_count_as_it_found_it(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    """The encoder takes the cores the decoders leave while it runs (``share_cores``); a process that goes on
    (a notebook, a service, these tests) gets its own setting back."""
    folder = tmp_path / "videos"
    write_small_corpus(folder, 3)
    before = torch.get_num_threads()
    torch.set_num_threads(7)
    try:
        run_ingest(make_settings(tmp_path, tiny_checkpoint), [folder], tiny_encoder, workers=2, batch_size=1)
        assert torch.get_num_threads() == 7
    finally:
        torch.set_num_threads(before)


def test_data_dir_copy_is_self_contained(tmp_path, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    """The catalog holds the embeddings: a copy of the data directory without its index rebuilds it."""
    folder = tmp_path / "videos"
    write_small_corpus(folder, 3)
    settings = make_settings(tmp_path, tiny_checkpoint)
    run_ingest(settings, [folder], tiny_encoder)
    shutil.rmtree(settings.index_dir)
    assert not verify_index(catalog(settings), settings.index_dir).ok
    meta = sync_index(catalog(settings), settings.index_dir, rebuild=True)
    assert meta.vector_count == 3 and verify_index(catalog(settings), settings.index_dir).ok


@pytest.mark.slow
def test_a_crashing_decoder_fails_only_its_file(tmp_path, monkeypatch, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    from indexer_fixtures import crashing_decode

    import indexer.local_runner

    folder = tmp_path / "videos"
    write_small_corpus(folder, 4)
    write_video(folder / "crash.mp4", colored(5, 32, 50), fps=5)
    monkeypatch.setattr(indexer.local_runner, "decode_video", crashing_decode)
    settings = make_settings(tmp_path, tiny_checkpoint)
    summary = run_ingest(settings, [folder], tiny_encoder, workers=2)
    assert summary.indexed == 4
    assert [(Path(p).name, reason) for p, reason in summary.failed] == [
        ("crash.mp4", "the decoder crashed (its worker process died) while reading this file")
    ]
    assert verify_index(catalog(settings), settings.index_dir).ok


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_run(tmp_path, monkeypatch, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    from indexer_fixtures import always_crashing_decode

    import indexer.local_runner
    from indexer.errors import IndexerError

    folder = tmp_path / "videos"
    write_small_corpus(folder, 4)
    monkeypatch.setattr(indexer.local_runner, "decode_video", always_crashing_decode)
    settings = make_settings(tmp_path, tiny_checkpoint)
    with pytest.raises(IndexerError, match="die before finishing any file"):
        run_ingest(settings, [folder], tiny_encoder, workers=2)
    with catalog(settings)() as session:  # nothing was marked failed for a fault of the machine
        assert session.scalars(select(Video)).all() == []
        assert session.scalars(select(IngestionRun.status)).all() == [RunStatus.failed]


@pytest.mark.parametrize("preprocessing", ["clip", "a tag's own"])
def test_stored_embeddings_are_the_encoders_embeddings_of_the_clip_frames(
    tmp_path,
    tiny_checkpoint,  # noqa: F811
    tiny_encoder,  # noqa: F811
    preprocessing,
) -> None:
    """Workers send frames resized as the encoder's preprocessing says (uint8, scaled in the decoder) and
    the encoder's process normalises them: the same vectors as encoding the clip's frames directly,
    whatever the backbone's statistics, filter and resize mode."""
    from model import create_model, load_encoder, save_checkpoint
    from model.preprocess import FramePreprocess
    from model.video import VideoReader, sample_times

    encoder, checkpoint = tiny_encoder, tiny_checkpoint
    if preprocessing != "clip":
        model = create_model("tiny")
        model.config.preprocess = FramePreprocess(64, (0.5,) * 3, (0.5,) * 3, "bilinear", "squash")
        checkpoint = str(save_checkpoint(model, tmp_path / "own").parent)
        encoder = load_encoder(checkpoint)
    folder = tmp_path / "videos"
    paths = write_small_corpus(folder, 2, seed=9)
    settings = make_settings(tmp_path, checkpoint)
    run_ingest(settings, [folder], encoder, workers=1)
    for path in paths:
        video = videos_by_name(settings, folder)[path.name]
        for clip in clips_of(settings, video.id):
            times = sample_times(clip.start, clip.end, encoder.num_frames)
            with VideoReader(path) as reader:
                frames = np.stack(reader.sample(times, lambda _, frame: frame.for_encoder(encoder.preprocess)))
            direct = encoder.encode_video(encoder.preprocess.normalize(torch.from_numpy(frames))[None])[0]
            np.testing.assert_allclose(clip.vector(), direct.numpy(), atol=1e-5)
