"""Subtitles and transcripts of a video as timed text, without the catalog (``subtitle_store`` writes it).

Where they come from: ``.srt`` and ``.vtt`` files beside the video (``talk.srt``, ``talk.en.vtt``: the same
stem, an optional language tag, any case of suffix), files a manifest names, and the text subtitle streams
of the video itself (SubRip, ASS/SSA, MP4 ``mov_text``, WebVTT; bitmap streams such as PGS are skipped).

A file's bytes are decoded as UTF-8 (with or without a byte-order mark), UTF-16/32 with a byte-order mark,
UTF-16 without one when its NUL bytes say so, and otherwise as Windows-1252 (Latin-1 with the printable
characters Windows puts in 0x80-0x9f; bytes it leaves undefined fall back to Latin-1). pysubs2 parses the
cues; markup (``<i>``, ``{\\an8}``, WebVTT voice and timestamp tags) is removed, lines are kept, empty cues
dropped and overlapping cues kept apart. A file that cannot be read or holds no cue becomes a failed
``Track`` whose error names the file and what was expected.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import logging
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUBTITLE_SUFFIXES = frozenset({".srt", ".vtt"})
MAX_SUBTITLE_BYTES = 20 * 1024 * 1024  # a film's subtitles are ~100 KB: anything this large is something else
EMBEDDED_PREFIX = "stream:"  # a track's source for the stream of this index inside the video
# text subtitle codecs (FFmpeg's names); bitmap ones (hdmv_pgs_subtitle, dvd_subtitle, dvb_subtitle) are skipped
TEXT_CODECS = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})

# BCP 47-like language tags in file names: "en", "eng", "pt-BR", "zh-Hans", "sr-Latn-RS"
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_BOMS = (  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_ASS_OVERRIDE = re.compile(r"\{[^{}]*\}")  # {\an8}, {\i1}: SubStation override blocks
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<\d{1,2}(?::\d{2}){1,2}\.\d{3}>")  # <i>, <v Bob>, <c.x>, <00:01.500>
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # never stored: the search side marks matches with them
_SPACES = re.compile(r"[ \t\u00a0]+")
_EXPECTED = {
    "srt": "SubRip cues (a line '00:00:01,000 --> 00:00:04,000' followed by the cue's text)",
    "vtt": "WebVTT cues (a 'WEBVTT' header, then lines '00:00:01.000 --> 00:00:04.000' followed by the cue's text)",
}


class SubtitleError(ValueError):
    """A subtitle file that cannot be read as subtitles; the message names the file and what was expected."""


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # plain text, lines joined by newlines


@dataclass
class Track:
    """The cues of one file or embedded stream, or why there are none (``error``)."""

    source: str  # the file's absolute path, or "stream:N"
    language: str | None
    fingerprint: str | None  # sha256 of the file's bytes; the video's content hash for a stream
    cues: list[Cue] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        return "failed" if self.error is not None else "ok"


@dataclass
class SubtitleTally:
    """What a run did to subtitle tracks: written anew (``added``) or again (``updated``), removed with their
    file, left as they were, and every failed one it knows of (``(source, error)``, unchanged ones too)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def merge(self, other: SubtitleTally) -> None:
        self.added += other.added
        self.updated += other.updated
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.failed.extend(other.failed)


# --- which files ------------------------------------------------------------------------------------------


def normalize_language(tag: str) -> str | None:
    """A language tag in its usual case ("PT-br" -> "pt-BR", "zh-hans" -> "zh-Hans"); None for "und" or a
    string that is no tag."""
    if not _LANGUAGE.fullmatch(tag) or tag.lower() == "und" or len(tag) > 32:  # 32: text_tracks.language
        return None
    primary, *subtags = tag.split("-")
    return "-".join([primary.lower(), *(_subtag_case(s) for s in subtags)])


def _subtag_case(subtag: str) -> str:
    if len(subtag) == 4 and subtag.isalpha():
        return subtag.title()  # a script: Hans, Latn
    if len(subtag) == 2 or (len(subtag) == 3 and subtag.isdigit()):
        return subtag.upper()  # a region: BR, 419
    return subtag.lower()


def language_of(path: Path) -> str | None:
    """The language tag before a subtitle file's suffix (``talk.en.vtt`` -> "en"), if there is one."""
    parts = path.name.split(".")
    return normalize_language(parts[-2]) if len(parts) >= 3 else None


class SidecarFinder:
    """Finds the subtitle files beside videos, listing and indexing each folder once per run."""

    def __init__(self) -> None:
        self._folders: dict[Path, _Folder] = {}

    def find(self, video: Path) -> dict[Path, str | None]:
        """``stem.srt|vtt`` and ``stem.LANG.srt|vtt`` beside ``video`` (suffix in any case) -> language.

        A name that is also another video's exact stem (``talk.en.srt`` beside ``talk.en.mp4``) is left to
        that video."""
        folder = self._folders.get(video.parent)
        if folder is None:
            folder = self._folders[video.parent] = _Folder.of(video.parent)
        found: dict[Path, str | None] = {video.parent / name: None for name in folder.exact.get(video.stem, [])}
        for name, tag in folder.tagged.get(video.stem, []):
            language = normalize_language(tag)
            if language is not None and f"{video.stem}.{tag}" not in folder.video_stems:
                found[video.parent / name] = language
        return found


@dataclass
class _Folder:
    """A folder's subtitle files by the video stem they may belong to, and the stems of its videos."""

    exact: dict[str, list[str]] = field(default_factory=dict)  # "talk" -> ["talk.srt"]
    tagged: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # "talk" -> [("talk.en.vtt", "en")]
    video_stems: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, folder: Path) -> _Folder:
        from .sources import VIDEO_SUFFIXES  # here: sources -> collections -> records -> subtitles is a cycle

        index = cls()
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return index
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in VIDEO_SUFFIXES:
                index.video_stems.add(stem)
            elif suffix.lower() in SUBTITLE_SUFFIXES:
                index.exact.setdefault(stem, []).append(name)
                base, dot, tag = stem.rpartition(".")
                if dot:
                    index.tagged.setdefault(base, []).append((name, tag))
        return index


# --- files -------------------------------------------------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """A subtitle file's bytes; ``SubtitleError`` when it cannot be read or is far too large."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SUBTITLE_BYTES + 1)
    except OSError as exc:
        raise SubtitleError(f"{path}: cannot read the subtitle file: {exc.strerror or exc}") from None
    if len(data) > MAX_SUBTITLE_BYTES:
        raise SubtitleError(f"{path}: larger than {MAX_SUBTITLE_BYTES // 2**20} MB: not a subtitle file")
    return data


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_subtitle_file(path: Path, language: str | None = None) -> Track:
    """A subtitle file as a track: its cues, or a failed track saying why (never raises)."""
    try:
        data = read_bytes(path)
    except SubtitleError as exc:
        return Track(str(path), language, None, error=str(exc))
    return track_of_bytes(path, language, data)


def track_of_bytes(path: Path, language: str | None, data: bytes) -> Track:
    """The track of a subtitle file whose bytes are ``data``: its cues, or a failed track saying why."""
    track = Track(str(path), language, fingerprint(data))
    try:
        track.cues = parse_subtitles(decode_text(data, path), path)
    except SubtitleError as exc:
        track.error = str(exc)
    return track


def decode_text(data: bytes, path: Path) -> str:
    """Text of a subtitle file's bytes (encodings: see the module's docstring)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode(data, encoding, path)
    if b"\x00" in data:
        return _decode(data, _utf16_without_bom(data, path), path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined in Windows-1252
        return data.decode("latin-1")


def _decode(data: bytes, encoding: str, path: Path) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SubtitleError(f"{path}: not valid {encoding.upper()} text ({exc.reason} at byte {exc.start})") from None


def _utf16_without_bom(data: bytes, path: Path) -> str:
    """UTF-16 of the byte order its NUL bytes show (ASCII characters' high bytes); else it is no text."""
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd > len(data) // 4 and even < odd // 4:
        return "utf-16-le"
    if even > len(data) // 4 and odd < even // 4:
        return "utf-16-be"
    raise SubtitleError(f"{path}: binary data, not a subtitle file: expected {_EXPECTED[_expected_kind(path, 'srt')]}")


def parse_subtitles(text: str, path: Path) -> list[Cue]:
    """The cues of a SubRip or WebVTT text (told apart by the 'WEBVTT' header, not the suffix), in time
    order; empty cues dropped. ``SubtitleError`` for text without a cue (a WebVTT header alone is an empty
    track, not an error)."""
    import pysubs2

    kind = "vtt" if text.lstrip("\ufeff \t\r\n").startswith("WEBVTT") else "srt"
    if not text.strip():
        raise SubtitleError(f"{path}: the file is empty: expected {_EXPECTED[_expected_kind(path, kind)]}")
    source = _vtt_cues_only(text) if kind == "vtt" else text
    try:
        events = pysubs2.SSAFile.from_string(source, format_=kind)
    except Exception as exc:  # pysubs2 raises assorted errors on text it cannot read: all mean "malformed"
        raise SubtitleError(f"{path}: cannot parse it ({exc}): expected {_EXPECTED[kind]}") from None
    if not events.events and (kind == "srt" or "-->" in source):  # a WebVTT file without cues is valid
        raise SubtitleError(f"{path}: no subtitle cue found: expected {_EXPECTED[_expected_kind(path, kind)]}")
    cues = [Cue(e.start / 1000, max(e.start, e.end) / 1000, clean_text(e.text)) for e in events.events]
    return sorted((c for c in cues if c.text), key=lambda c: (c.start, c.end))


def _expected_kind(path: Path, kind: str) -> str:
    return "vtt" if path.suffix.lower() == ".vtt" else kind


def _vtt_cues_only(text: str) -> str:
    """WebVTT reduced to its cues: the header, NOTE, STYLE and REGION blocks and cue identifiers removed
    (pysubs2 would take them for text of the cue before)."""
    blocks = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept = []
    for block in blocks[1:]:  # the first block is the header
        lines = block.strip("\n").split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is not None and not lines[0].startswith(("NOTE", "STYLE", "REGION")):
            kept.append("\n".join(lines[timing:]))
    return "WEBVTT\n\n" + "\n\n".join(kept) + "\n"


def clean_text(text: str) -> str:
    """A cue's plain text: SubStation override blocks and HTML/WebVTT tags removed, entities decoded, ``\\N``
    line breaks as newlines, spaces collapsed, blank lines and control characters dropped."""
    text = _ASS_OVERRIDE.sub("", text).replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " ")
    text = html.unescape(_TAG.sub("", text))
    text = _CONTROL.sub("", text.replace("\t", " "))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


# --- streams inside the video ----------------------------------------------------------------------------------


def read_embedded_tracks(path: str, content_hash: str | None) -> list[Track]:
    """The text subtitle streams of a video file as tracks (``stream:N``), fingerprinted with the video's
    ``content_hash``. Bitmap streams are skipped; a file without text streams is only opened (its header),
    one with them is demuxed for those streams alone. A file PyAV cannot open has none (its decoding reports
    it); a stream that cannot be decoded is a failed track. Never raises."""
    import av

    try:
        container = av.open(path)
    except Exception as exc:  # not a container PyAV reads: the video's decoder says why
        log.debug("%s: no embedded subtitles read: %s", path, exc)
        return []
    with container:
        streams = [s for s in container.streams.subtitles if _codec_name(s) in TEXT_CODECS]
        if not streams:
            return []
        _discard_others(container, streams)
        tracks = {s.index: Track(f"{EMBEDDED_PREFIX}{s.index}", _stream_language(s), content_hash) for s in streams}
        try:
            for packet in container.demux(*streams):
                track = tracks[packet.stream.index]
                if track.error is None and packet.size:
                    _add_packet_cues(track, packet, path)
        except Exception as exc:  # the file ends or breaks part-way: what was read stays, the rest is lost
            log.debug("%s: demuxing its subtitle streams stopped: %s", path, exc)
    for track in tracks.values():
        track.cues.sort(key=lambda c: (c.start, c.end))
    return list(tracks.values())


def _codec_name(stream: Any) -> str:
    context = stream.codec_context
    if context is None:
        return ""
    return str(getattr(context.codec, "canonical_name", None) or context.name)


def _stream_language(stream: Any) -> str | None:
    tag = stream.metadata.get("language")
    return normalize_language(tag) if isinstance(tag, str) else None


def _discard_others(container: Any, wanted: list[Any]) -> None:
    """Let the demuxer skip the packets of every other stream (where PyAV has ``Stream.discard``; older
    versions read them all, and ``demux`` drops them)."""
    indexes = {s.index for s in wanted}
    for stream in container.streams:
        if stream.index not in indexes and hasattr(stream, "discard"):
            from av.stream import Discard

            stream.discard = Discard.all


def _add_packet_cues(track: Track, packet: Any, path: str) -> None:
    """Decode one subtitle packet into ``track``'s cues (its time from the packet's), or fail the track."""
    time_base = packet.time_base or Fraction(1, 1000)
    pts = packet.pts if packet.pts is not None else packet.dts or 0
    start, end = float(pts * time_base), float((pts + (packet.duration or 0)) * time_base)
    try:
        decoded = packet.decode()
    except Exception as exc:  # FFmpeg's decoders raise av.error.* subclasses
        track.error = f"{path}: subtitle stream {track.source[len(EMBEDDED_PREFIX) :]} cannot be decoded: {exc}"
        track.cues = []
        return
    for rect in _rects(decoded):
        text = clean_text(_dialogue(rect))
        if text:
            track.cues.append(Cue(start, end, text))


def _rects(decoded: list[Any]) -> list[Any]:
    """Subtitle rectangles of a decoded packet: newer PyAV returns them, PyAV 14 and older sets of them."""
    rects: list[Any] = []
    for item in decoded:
        rects.extend(item.rects if hasattr(item, "rects") else [item])
    return rects


def _dialogue(rect: Any) -> str:
    """The text of an ASS rectangle (FFmpeg's "ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text")."""
    raw = getattr(rect, "ass", b"") or b""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    fields = text.split(",", 8)
    return fields[8] if len(fields) == 9 else ""
