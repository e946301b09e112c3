"""Subtitle files and streams read into timed text (``indexer.subtitles``): real SRT, WebVTT, legacy and UTF-16
encodings, malformed and empty files, sidecar discovery, manifest ``subtitles``, and text streams embedded in
MKV and MP4 files (``tests/data/subtitles``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import av
import pytest

from indexer import subtitles
from indexer.errors import ManifestError
from indexer.sources import discover, read_manifest
from indexer.subtitles import (
    Cue,
    SidecarFinder,
    clean_text,
    language_of,
    normalize_language,
    read_embedded_tracks,
    read_subtitle_file,
)

DATA = Path(__file__).parent / "data" / "subtitles"


def cues_of(name: str) -> list[Cue]:
    track = read_subtitle_file(DATA / name)
    assert track.status == "ok", track.error
    return track.cues


# --- files ------------------------------------------------------------------------------------------------------


def test_srt_cues_lose_their_markup_and_keep_their_lines_overlaps_and_times() -> None:
    track = read_subtitle_file(DATA / "talk.srt", "en")
    assert (track.source, track.language, track.error) == (str(DATA / "talk.srt"), "en", None)
    assert len(track.fingerprint or "") == 64
    assert track.cues == [
        Cue(1.0, 3.0, "The runners keep running\nacross the bridge"),  # <i>, <b> removed, both lines kept
        Cue(2.5, 4.0, "Overlapping cue at the top"),  # overlaps the first; {\an8} removed
        # the empty cue at 5 s is dropped
        Cue(7.0, 9.5, "Tom & Jerry say goodbye"),  # <font> removed, &amp; decoded
    ]


def test_webvtt_header_style_notes_identifiers_settings_and_tags_are_not_text() -> None:
    assert cues_of("captions.en.vtt") == [
        Cue(1.0, 3.5, "We are in New York City"),  # voice tag, identifier and cue settings gone
        Cue(2.0, 4.0, "— Overlapping, karaoke style <tags>"),  # class and timestamp tags gone, &lt; decoded
        Cue(7.0, 8.0, "Last cue, line one\nline two"),  # no NOTE text appended to the cue before
    ]


def test_ass_markup_is_removed_from_cue_text() -> None:
    assert clean_text("{\\an8}{\\pos(10,20)}Top {\\i1}line{\\i0}\\Nsecond\\hpart") == "Top line\nsecond part"
    assert clean_text("<v Bob>Hi</v>   <00:00:01.500>there\t \\N\\N") == "Hi there"
    assert clean_text("a < b and c > d") == "a < b and c > d"  # not tags
    assert clean_text("bell\x07 and marks \x02\x03 \x85gone") == "bell and marks gone"  # control characters


def test_legacy_and_utf16_encodings_give_the_right_characters() -> None:
    assert [c.text for c in cues_of("latin1.srt")] == ["Café crème, naïve façade", "¿Qué pasó, señor Müller?"]
    assert [c.text for c in cues_of("utf16.srt")] == ["Ünïcödé in UTF-16 — «quotes»"]


@pytest.mark.parametrize(
    "encoding",
    ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252", "latin-1"],
)
def test_every_supported_encoding_decodes(tmp_path: Path, encoding: str) -> None:
    text = "1\n00:00:01,000 --> 00:00:02,000\nÀ bientôt, naïve “friend”\n"
    if encoding == "latin-1":
        text = text.replace("“", '"').replace("”", '"')  # Latin-1 has no curly quotes
    path = tmp_path / f"{encoding}.srt"
    path.write_bytes(text.encode(encoding))
    track = read_subtitle_file(path)
    assert [c.text for c in track.cues] == [text.splitlines()[2]], track.error


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("malformed.srt", "no subtitle cue found: expected SubRip cues"),
        ("empty.srt", "the file is empty: expected SubRip cues"),
        ("image.srt", "binary data, not a subtitle file: expected SubRip cues"),
    ],
)
def test_a_file_that_is_no_subtitles_is_a_failed_track_naming_it(name: str, words: str) -> None:
    track = read_subtitle_file(DATA / name)
    assert track.status == "failed" and track.cues == []
    assert track.error is not None and track.error.startswith(f"{DATA / name}: ") and words in track.error
    assert track.fingerprint is not None  # read, so a rerun does not parse it again unless it changes


def test_vtt_errors_say_what_webvtt_expects(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vtt"
    bad.write_text("WEBVTT\n\n00:00:xx --> 00:01.000\nno valid time\n")
    track = read_subtitle_file(bad)
    assert track.error == (
        f"{bad}: no subtitle cue found: expected WebVTT cues (a 'WEBVTT' header, then lines "
        "'00:00:01.000 --> 00:00:04.000' followed by the cue's text)"
    )


def test_a_webvtt_file_without_cues_is_an_empty_track(tmp_path: Path) -> None:
    path = tmp_path / "silence.vtt"
    path.write_text("WEBVTT\n\nNOTE nothing was said\n")
    track = read_subtitle_file(path)
    assert (track.status, track.cues) == ("ok", [])


def test_a_missing_or_huge_file_is_a_failed_track(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = read_subtitle_file(tmp_path / "gone.srt")
    assert missing.status == "failed" and missing.fingerprint is None
    assert missing.error == f"{tmp_path / 'gone.srt'}: cannot read the subtitle file: No such file or directory"
    monkeypatch.setattr(subtitles, "MAX_SUBTITLE_BYTES", 100)
    big = read_subtitle_file(DATA / "talk.srt")
    assert big.error is not None and "not a subtitle file" in big.error


def test_cues_come_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "shuffled.srt"
    path.write_text("2\n00:00:05,000 --> 00:00:06,000\nlater\n\n1\n00:00:01,000 --> 00:00:02,000\nearlier\n")
    assert [c.text for c in read_subtitle_file(path).cues] == ["earlier", "later"]


# --- which files ---------------------------------------------------------------------------------------------------


def test_languages_from_names_and_tags() -> None:
    assert [normalize_language(t) for t in ("en", "EN", "pt-br", "zh-hans", "es-419", "eng")] == [
        "en",
        "en",
        "pt-BR",
        "zh-Hans",
        "es-419",
        "eng",
    ]
    assert [normalize_language(t) for t in ("und", "final", "x", "en_US", "")] == [None] * 5
    assert language_of(Path("/x/talk.pt-BR.srt")) == "pt-BR"
    assert language_of(Path("/x/talk.srt")) is None and language_of(Path("/x/en.srt")) is None


def test_sidecars_beside_a_video(tmp_path: Path) -> None:
    names = [
        "talk.mp4",
        "talk.srt",
        "talk.en.VTT",  # suffix in any case
        "talk.pt-BR.srt",
        "talk.zh-Hans.vtt",
        "talk.final.srt",  # no language tag: someone else's file
        "talk.txt",
        "Talk.srt",  # another stem
        "talks.srt",
        "interview.mkv",
        "interview.fr.srt",
        "clip.de.mp4",  # a video whose stem ends like a language tag...
        "clip.mp4",
        "clip.de.srt",  # ...gets its exact-stem subtitles, not clip.mp4
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    finder = SidecarFinder()
    assert finder.find(tmp_path / "talk.mp4") == {
        tmp_path / "talk.srt": None,
        tmp_path / "talk.en.VTT": "en",
        tmp_path / "talk.pt-BR.srt": "pt-BR",
        tmp_path / "talk.zh-Hans.vtt": "zh-Hans",
    }
    assert finder.find(tmp_path / "interview.mkv") == {tmp_path / "interview.fr.srt": "fr"}
    assert finder.find(tmp_path / "clip.de.mp4") == {tmp_path / "clip.de.srt": None}
    assert finder.find(tmp_path / "clip.mp4") == {}
    assert finder.find(tmp_path / "nowhere" / "x.mp4") == {}


def test_manifest_subtitles_csv_and_jsonl(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,subtitles,lang\n"
        "a.mp4,subs/a.en.srt,en\n"
        'b.mp4,"subs/b.srt; /abs/b.fr.vtt",\n'
        'c.mp4,"[""subs/c.srt"", ""subs/c.de.vtt""]",\n'
        "d.mp4,,\n"
    )
    rows = {s.path.name: s for s in read_manifest(csv)}
    assert rows["a.mp4"].subtitles == [tmp_path / "subs" / "a.en.srt"]
    assert rows["a.mp4"].metadata == {"lang": "en"}  # subtitles are not metadata
    assert rows["b.mp4"].subtitles == [tmp_path / "subs" / "b.srt", Path("/abs/b.fr.vtt")]
    assert rows["c.mp4"].subtitles == [tmp_path / "subs" / "c.srt", tmp_path / "subs" / "c.de.vtt"]
    assert rows["d.mp4"].subtitles == []

    jsonl = tmp_path / "list.jsonl"
    lines = [
        {"path": "a.mp4", "subtitles": "subs/a;b.srt"},  # a JSONL string is one path
        {"path": "b.mp4", "subtitles": ["subs/b.srt", "subs/b.en.vtt"]},
        {"path": "c.mp4"},
    ]
    jsonl.write_text("\n".join(json.dumps(line) for line in lines))
    rows = {s.path.name: s for s in read_manifest(jsonl)}
    assert rows["a.mp4"].subtitles == [tmp_path / "subs" / "a;b.srt"]
    assert rows["b.mp4"].subtitles == [tmp_path / "subs" / "b.srt", tmp_path / "subs" / "b.en.vtt"]
    assert rows["c.mp4"].subtitles == []


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"path": "a.mp4", "subtitles": 3}, "'subtitles' must be a path or a list of paths, got 3"),
        ({"path": "a.mp4", "subtitles": ["a.srt", None]}, 'got ["a.srt", null]'),
    ],
)
def test_bad_manifest_subtitles_name_the_line(tmp_path: Path, line: dict[str, Any], words: str) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match=re.escape(f"{manifest}:1: ") + ".*" + re.escape(words)):
        read_manifest(manifest)
    csv = tmp_path / "list.csv"
    csv.write_text('path,subtitles\na.mp4,"[broken"\n')
    with pytest.raises(ManifestError, match=re.escape(f"{csv}:2: 'subtitles' is not a valid JSON list")):
        read_manifest(csv)


def test_a_video_listed_twice_gets_each_named_file_once(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,subtitles\na.mp4,x.srt;y.srt\na.mp4,y.srt;z.srt\n")
    (source,) = discover([tmp_path / "a.mp4"], manifest).sources  # listed, then twice in the manifest
    assert source.subtitles == [tmp_path / "x.srt", tmp_path / "y.srt", tmp_path / "z.srt"]


# --- embedded streams -------------------------------------------------------------------------------------------


class _DemuxSpy:
    """A PyAV container that remembers which streams were demuxed."""

    def __init__(self, container: Any, calls: list[list[int]]) -> None:
        self._container, self._calls = container, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def __enter__(self) -> _DemuxSpy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()

    def demux(self, *streams: Any) -> Any:
        self._calls.append([s.index for s in streams])
        return self._container.demux(*streams)


@pytest.fixture
def demuxed(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    calls: list[list[int]] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: _DemuxSpy(real_open(*args, **kwargs), calls))
    return calls


def test_text_streams_of_an_mkv_are_tracks_and_bitmap_streams_are_skipped(demuxed: list[list[int]]) -> None:
    tracks = read_embedded_tracks(str(DATA / "streams.mkv"), "a" * 64)
    assert [(t.source, t.language, t.fingerprint, t.error) for t in tracks] == [
        ("stream:1", "eng", "a" * 64, None),  # SubRip
        ("stream:2", "fre", "a" * 64, None),  # ASS; stream 3 is PGS (a bitmap): no track
    ]
    assert tracks[0].cues == [
        Cue(0.2, 0.9, "The runners keep running"),
        Cue(0.5, 1.2, "over the bridge"),  # overlapping: kept apart
        Cue(1.3, 1.8, "café au lait"),
    ]
    assert tracks[1].cues == [Cue(0.3, 1.0, "Le pont\nau matin")]  # {\an8}, {\i1} removed, \N a new line
    assert demuxed == [[1, 2]]  # the bitmap stream is not even demuxed


def test_mov_text_of_an_mp4_is_a_track() -> None:
    (track,) = read_embedded_tracks(str(DATA / "mov_text.mp4"), None)
    assert (track.source, track.language, track.status) == ("stream:1", "eng", "ok")
    assert track.cues == [Cue(0.2, 0.9, "Hello world"), Cue(1.0, 1.5, "Dogs are running")]


def test_a_video_without_text_streams_is_only_opened(tmp_path: Path, demuxed: list[list[int]]) -> None:
    from media import moving_square, write_video

    video = write_video(tmp_path / "plain.mp4", moving_square(5, 32), fps=5)
    assert read_embedded_tracks(str(video), "h") == []
    assert demuxed == []  # its packets were never read
    (tmp_path / "junk.mkv").write_bytes(b"not a container at all")
    assert read_embedded_tracks(str(tmp_path / "junk.mkv"), "h") == []  # the video's decoder reports it
    assert read_embedded_tracks(str(tmp_path / "missing.mkv"), "h") == []
