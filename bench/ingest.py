"""Ingestion speed on a realistic corpus: hours of video indexed per hour, against decoding alone.

    python bench/ingest.py --workdir /data/tvr-bench [--scale 1.0] [--checkpoint demo | --config ViT-B-32]
                           [--repeats 2] [--workers N] [--batch-size 32] [--no-whole] [--no-readers] [--ray]
    python bench/ingest.py --synthetic [--videos 300] [--config demo] ...   # end to end against encoding alone

The corpus is ``bench/corpus.py``'s (720p and 1080p H.264 at 24/30/60 fps, 2 s and x264's default GOP,
30 s to 10 min; HEVC, VP9; a phone's rotated file, 10-bit HEVC, non-square pixels; about 38 minutes at
``--scale 1``), written once into ``--workdir`` and reused. ``--scale 0.1`` makes a 4-minute corpus.

For each file group (and the whole corpus in one run, unless ``--no-whole``), interleaved ``--repeats`` times
(medians reported):

- **ingest**: ``indexer.pipeline.ingest`` with ``IngestOptions`` into a fresh SQLite data directory, in a
  child process timed from its start to its exit, so start-up (interpreter, imports, loading the
  checkpoint, starting the decoding workers) is included as ``tvr ingest`` pays it. The checkpoint is the
  packaged ``demo`` by default, or random weights of ``--config`` (saved once as a checkpoint).
- **decode**: PyAV (``thread_type="AUTO"``) decoding every frame of the same files, demux and decode only
  (no colour conversion), in this process: what the files cost to read at all.
- **--ray** (with ``--ray``): the same ingest with ``IngestOptions.ray`` (``tvr ingest --ray``: decoding
  tasks and an encoder actor on a local Ray instance that the child starts and stops, both in its wall time).
- **readers** (unless ``--no-readers``): ``model.video.VideoReader`` with the decord backend and with the
  PyAV backend reading exactly the frames ingestion samples: the clip windows of the default ``ClipPolicy``
  (``indexer.clips.clip_windows``), ``--frames`` per clip (``model.video.sample_times``) plus each clip's
  middle frame (its thumbnail), asked for in chunks of 16 clips in time order, one reader per file.

Figures: hours of video per hour of wall time; clips per second; the machine-independent ratio
ingest wall time / decode time ("x decode": 1.0 would be ingesting at the speed of decoding alone); where
the time goes (every key of ``IngestSummary.stage_seconds``, in seconds and as a share of the ingest call;
"start-up" is the rest of the child's wall time); peak memory, read from ``/proc`` (psutil is not a
dependency): the ingesting process's own high-water mark (``VmHWM``, exact), the largest high-water mark of
its descendants (the decoding workers and the fork server they come from; sampled every 0.1 s, so a peak
in a worker's last 0.1 s may be missed) and the peak of the sum of resident sets over the whole process
tree (sampled; pages shared between processes count in each). ``ru_maxrss`` is not used: a child keeps
its parent's peak across ``exec``. Prints Markdown tables for docs/BENCHMARKS.md with the command, machine,
date and load.

``--synthetic`` keeps the earlier measurement (``model.train.synth``'s tiny clips: ``tvr ingest`` end to
end against the same clips decoded beforehand and encoded alone, in one process): the corpus figures
cover decoding, not the encoder's share, which that one isolates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

WHOLE = "whole corpus"
SAMPLE_S = 0.1  # memory sampling period


# --- the ingest run, in a child process -------------------------------------------------------------------


def ingest_child(job_path: str) -> None:
    """Run one ingest as ``tvr ingest`` would (called in a fresh interpreter); write its summary as JSON."""
    job = json.loads(Path(job_path).read_text())
    entered = time.perf_counter()
    if job.get("root"):  # another checkout's code (an earlier version, for a baseline)
        sys.path.insert(0, job["root"])
        # the decoding processes' fork server starts a fresh interpreter: it must find that code first too
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [job["root"], os.environ.get("PYTHONPATH")]))
        os.chdir(job["root"])
    import torch

    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        data_dir=Path(job["data_dir"]), database_url=None, checkpoint=job["checkpoint"], device=job["device"]
    )
    options = {"batch_size": job["batch_size"], "workers": job["workers"], "progress": False}
    fields = {f.name for f in dataclasses.fields(IngestOptions)}
    for key, value in job.get("options", {}).items():
        if key not in fields:
            raise SystemExit(f"IngestOptions has no field {key!r} here (fields: {', '.join(sorted(fields))})")
        if key == "decode_steps":
            from model.video_pyav import DecodeSteps

            value = DecodeSteps(**value)
        if key == "ray":
            from indexer.ray_runner import RayOptions

            value = RayOptions(**value)
        options[key] = value
    imported = time.perf_counter()
    summary = ingest(settings, discover(job["files"]), IngestOptions(**options))
    result = {
        "imports_s": imported - entered,
        "seconds": summary.seconds,
        "indexed": summary.indexed,
        "clips": summary.clips,
        "failed": summary.failed,
        "stage_seconds": summary.stage_seconds,
        # VmHWM, not ru_maxrss: that one keeps the peak of the process this one was forked from, across exec
        "hwm_self_mb": _status_kb(os.getpid()).get("VmHWM", 0) / 1024,
    }
    Path(job["out"]).write_text(json.dumps(result))


class TreeMemory:
    """Samples the resident memory of a process and all its descendants from /proc until stopped."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_total_kb = 0  # max over samples of the sum of VmRSS over the tree
        self.hwm_kb: dict[int, int] = {}  # VmHWM per process, last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        total = 0
        for pid in tree:
            status = _status_kb(pid)
            total += status.get("VmRSS", 0)
            if "VmHWM" in status:
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), status["VmHWM"])
        self.peak_total_kb = max(self.peak_total_kb, total)

    def peaks_mb(self) -> tuple[float, float, float]:
        """(the root's VmHWM, the largest descendant VmHWM, the peak sum of VmRSS), in MB."""
        root = self.hwm_kb.get(self.pid, 0)
        others = max((kb for pid, kb in self.hwm_kb.items() if pid != self.pid), default=0)
        return root / 1024, others / 1024, self.peak_total_kb / 1024


def _status_kb(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def run_ingest(
    files: list[Path],
    args: argparse.Namespace,
    checkpoint: str,
    scratch: Path,
    options: dict[str, Any] | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """One ingest of ``files`` into a fresh data directory in a child process; its summary, wall time, memory.
    ``options`` replace ``--option``'s; ``root``: run another checkout's code."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    job = {
        "root": str(root) if root else None,
        "files": [str(p) for p in files],
        "data_dir": str(run_dir / "data"),
        "checkpoint": checkpoint,
        "device": args.device,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "options": dict(args.option) if options is None else options,
        "out": str(run_dir / "result.json"),
    }
    (run_dir / "job.json").write_text(json.dumps(job))
    started = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--ingest-child", str(run_dir / "job.json")]
    child = subprocess.Popen(command)
    with TreeMemory(child.pid) as memory:
        code = child.wait()
    wall = time.perf_counter() - started
    if code != 0 or not (run_dir / "result.json").exists():
        raise SystemExit(f"the ingest child failed (exit {code}); its job: {run_dir / 'job.json'}")
    result = json.loads((run_dir / "result.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    if result["failed"]:
        raise SystemExit(f"ingestion failed files: {result['failed'][:3]}")
    main_mb, workers_mb, total_mb = memory.peaks_mb()
    main_mb = max(main_mb, result["hwm_self_mb"])  # exact, where the last sample came too early
    return {**result, "wall": wall, "main_mb": main_mb, "workers_mb": workers_mb, "total_mb": total_mb}


# --- decoding alone and the readers ------------------------------------------------------------------------


def decode_all(files: list[Path]) -> tuple[float, int]:
    """Seconds for PyAV to demux and decode every frame of ``files`` (threads: AUTO), and the frame count."""
    import av

    frames = 0
    started = time.perf_counter()
    for path in files:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                frames += 1
    return time.perf_counter() - started, frames


def read_sampled(files: list[Path], backend: str, num_frames: int, chunk_clips: int = 16) -> tuple[float, int]:
    """Seconds for ``VideoReader(backend=...)`` to read the frames ingestion samples from ``files``; frames read."""
    from indexer.clips import ClipPolicy, clip_windows
    from model.video import VideoReader, sample_times

    frames = 0
    started = time.perf_counter()
    for path in files:
        with VideoReader(path, backend=backend) as reader:
            windows = clip_windows(reader.info.duration, ClipPolicy())
            for begin in range(0, len(windows), chunk_clips):
                times: list[float] = []
                for start, end in windows[begin : begin + chunk_clips]:
                    times += sample_times(start, end, num_frames)
                    times.append((start + end) / 2)  # the thumbnail's frame
                frames += len(reader.frames_at(times))
    return time.perf_counter() - started, frames


# --- the corpus benchmark ------------------------------------------------------------------------------------


def random_checkpoint(config_name: str, folder: Path) -> str:
    """A checkpoint of random weights of ``config_name`` (the cost does not depend on their values), saved once."""
    target = folder / f"random-{config_name}"
    if not (target / "model.safetensors").exists():
        import torch

        from model import create_model, get_config, save_checkpoint

        config = get_config(config_name)
        config.backbone.pretrained = None
        torch.manual_seed(0)
        save_checkpoint(create_model(config), target, full=True)
    return str(target)


def corpus_main(args: argparse.Namespace, argv: Sequence[str]) -> None:
    from corpus import GROUPS, ensure_corpus

    load_before = os.getloadavg()
    started_at = datetime.now(timezone.utc)
    folder, entries = ensure_corpus(args.workdir, args.scale, say=lambda text: print(text, flush=True))
    groups: dict[str, list[dict[str, Any]]] = {g: [e for e in entries if e["group"] == g] for g in GROUPS}
    groups = {g: es for g, es in groups.items() if es and (not args.groups or g in args.groups)}
    if not args.no_whole:
        groups[WHOLE] = [e for es in groups.values() for e in es]
    files = {g: [folder / e["file"] for e in es] for g, es in groups.items()}
    checkpoint = random_checkpoint(args.config, args.workdir / "checkpoints") if args.config else args.checkpoint
    scratch = Path(tempfile.mkdtemp(prefix="tvr-bench-ingest-", dir=args.workdir))
    for path in files.get(WHOLE) or [p for ps in files.values() for p in ps]:
        with open(path, "rb") as f:  # into the page cache: no run pays for the disk
            while f.read(1 << 24):
                pass

    backends = [] if args.no_readers else _backends()
    results: dict[str, dict[str, list[Any]]] = {g: {"ingest": [], "decode": [], "ray": []} for g in groups}
    for g in groups:
        for backend in backends:
            results[g][backend] = []
    try:
        for repeat in range(args.repeats):  # interleaved, so that changes in machine load hit every kind alike
            for g in groups:
                print(f"repeat {repeat + 1}/{args.repeats}, {g}: {len(files[g])} files", flush=True)
                if g == WHOLE:  # the same files as the groups: decoding them all is the groups' sum
                    parts = [results[other]["decode"][-1] for other in groups if other != WHOLE]
                    results[g]["decode"].append((sum(t for t, _ in parts), sum(n for _, n in parts)))
                else:
                    results[g]["decode"].append(decode_all(files[g]))
                    for backend in backends:
                        results[g][backend].append(read_sampled(files[g], backend, args.frames))
                results[g]["ingest"].append(run_ingest(files[g], args, checkpoint, scratch))
                if args.ray:  # the same ingest on a local Ray instance the child starts (and stops)
                    on_ray = {**dict(args.option), "ray": {}}
                    results[g]["ray"].append(run_ingest(files[g], args, checkpoint, scratch, options=on_ray))
                    print(f"    --ray {results[g]['ray'][-1]['wall']:.1f} s", flush=True)
                last = results[g]["ingest"][-1]
                print(
                    f"    decode {results[g]['decode'][-1][0]:.1f} s, ingest {last['wall']:.1f} s "
                    f"({last['clips']} clips)"
                    + "".join(f", {b} sampled {results[g][b][-1][0]:.1f} s" for b in backends if results[g][b]),
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, argv, entries, groups, results, backends, checkpoint, started_at, load_before)


def _backends() -> list[str]:
    from model.video import available_backends

    return [b for b in ("decord", "pyav") if b in available_backends()]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = statistics.median(r["wall"] for r in runs)
    return min(runs, key=lambda r: abs(r["wall"] - middle))


def report(
    args: argparse.Namespace,
    argv: Sequence[str],
    entries: list[dict[str, Any]],
    groups: dict[str, list[dict[str, Any]]],
    results: dict[str, dict[str, list[Any]]],
    backends: list[str],
    checkpoint: str,
    started_at: datetime,
    load_before: tuple[float, float, float],
) -> None:
    import av
    import torch

    from indexer.workers import default_workers

    load_after = os.getloadavg()
    print("\n## Ingestion of the benchmark corpus (`bench/ingest.py`)\n")
    print(f"```\npython bench/ingest.py {shlex.join(argv)}    # {started_at:%Y-%m-%d %H:%M} UTC\n```\n")
    print(
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores, {_memory_gb():.0f} GB RAM, no GPU used "
        f"(device {args.device}); Python {platform.python_version()}, torch {torch.__version__}, "
        f"PyAV {av.__version__} (FFmpeg {_ffmpeg_version()}){_decord_version()}. Load average "
        f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1/5/15 min) before, "
        f"{load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after. Checkpoint "
        f"{args.config + ' (random weights)' if args.config else checkpoint}; {args.workers} decoding workers "
        f"(default here {default_workers()}), batch {args.batch_size}, torch threads "
        f"{args.threads or torch.get_num_threads()}; extra options {dict(args.option) or 'none'}. Corpus scale "
        f"{args.scale:g}: {len(entries)} files, {sum(e['seconds'] for e in entries) / 60:.1f} min of video. "
        f"Medians of {args.repeats} interleaved runs.\n"
    )
    _corpus_table(entries)
    written = sum(e["write_seconds"] for e in entries)
    print(f"\nThe corpus took {written / 60:.1f} min to write here (`bench/corpus.py`, once; reused by later runs).")
    print(
        "\n| group | files | video min | ingest wall s (runs) | **hours of video / hour** | clips | clips/s "
        "| PyAV decode s | **ingest / decode** | peak RSS MB: ingest process / largest child / all |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for g, es in groups.items():
        runs = results[g]["ingest"]
        if not runs:
            continue
        wall = statistics.median(r["wall"] for r in runs)
        decode = statistics.median(t for t, _ in results[g]["decode"])
        video_s = sum(e["seconds"] for e in es)
        clips = runs[0]["clips"]
        main_mb = max(r["main_mb"] for r in runs)
        workers_mb = max(r["workers_mb"] for r in runs)
        total_mb = max(r["total_mb"] for r in runs)
        each = ", ".join(f"{r['wall']:.1f}" for r in runs)
        print(
            f"| {g} | {len(es)} | {video_s / 60:.1f} | {wall:.1f} ({each}) | "
            f"**{video_s / wall:.1f}** | {clips} | {clips / wall:.1f} | {decode:.1f} | **{wall / decode:.2f}** | "
            f"{main_mb:.0f} / {workers_mb:.0f} / {total_mb:.0f} |"
        )

    keys: list[str] = []
    for g in groups:
        for run in results[g]["ingest"]:
            keys += [k for k in run["stage_seconds"] if k not in keys]
    print(
        "\nWhere the time goes (the run nearest the median; seconds, and share of the `ingest()` call; start-up is "
        "the rest of the wall time: interpreter, imports, checkpoint. Steps the decoding workers time are summed "
        "over the workers, so with several they can add up to more than the call):\n"
    )
    print(f"| group | wall s | start-up s | ingest() s | {' | '.join(keys)} |")
    print(f"| --- | ---: | ---: | ---: | {' | '.join('---:' for _ in keys)} |")
    for g in groups:
        if not results[g]["ingest"]:
            continue
        run = _median_run(results[g]["ingest"])
        cells = []
        for key in keys:
            value = run["stage_seconds"].get(key)
            cells.append("" if value is None else f"{value:.1f} ({value / run['seconds']:.0%})")
        print(
            f"| {g} | {run['wall']:.1f} | {run['wall'] - run['seconds']:.1f} | {run['seconds']:.1f} | "
            f"{' | '.join(cells)} |"
        )

    if args.ray:
        _ray_table(groups, results)
    if backends:
        print(
            f"\nReading the frames ingestion samples ({args.frames} per clip and the middle one, default clip "
            "policy) with each `VideoReader` backend, against PyAV decoding every frame (seconds, and as a "
            "multiple of the full decode):\n"
        )
        head = " | ".join(f"{b} sampled s (x decode)" for b in backends)
        ratio = " | decord / pyav" if len(backends) == 2 else ""
        print(f"| group | frames read | PyAV full decode s | {head}{ratio} |")
        print(f"| --- | ---: | ---: | {' | '.join('---:' for _ in backends)}{' | ---:' if ratio else ''} |")
        for g in groups:
            if g == WHOLE or not results[g][backends[0]]:
                continue
            decode = statistics.median(t for t, _ in results[g]["decode"])
            times = {b: statistics.median(t for t, _ in results[g][b]) for b in backends}
            cells = " | ".join(f"{times[b]:.1f} ({times[b] / decode:.2f})" for b in backends)
            last = f" | {times['decord'] / times['pyav']:.2f}" if ratio else ""
            print(f"| {g} | {results[g][backends[0]][0][1]} | {decode:.1f} | {cells}{last} |")


def _ray_table(groups: dict[str, list[dict[str, Any]]], results: dict[str, dict[str, list[Any]]]) -> None:
    print(
        "\n`--ray` (a local Ray instance started and stopped by the run, counted in its wall time) against the "
        "local pipeline, same files, interleaved (goal: local / ray >= 0.9):\n"
    )
    print("| group | local ingest s | --ray ingest s (runs) | **local / ray** | --ray hours of video / hour |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for g, es in groups.items():
        if not results[g]["ray"]:
            continue
        local = statistics.median(r["wall"] for r in results[g]["ingest"])
        on_ray = statistics.median(r["wall"] for r in results[g]["ray"])
        each = ", ".join(f"{r['wall']:.1f}" for r in results[g]["ray"])
        video_s = sum(e["seconds"] for e in es)
        print(f"| {g} | {local:.1f} | {on_ray:.1f} ({each}) | **{local / on_ray:.2f}** | {video_s / on_ray:.1f} |")


def _corpus_table(entries: list[dict[str, Any]]) -> None:
    print("| file | group | pixels | fps | codec | keyframe every (frames) | Mbit/s | s |")
    print("| --- | --- | --- | ---: | --- | --- | ---: | ---: |")
    for e in entries:
        spec, back = e["spec"], e["read_back"]
        extra = []
        if back.get("rotation") is not None:
            extra.append(f"rotation {back['rotation']}")
        if back.get("sample_aspect_ratio") not in (None, "1:1", "0:1"):
            extra.append(f"SAR {back['sample_aspect_ratio']}")
        codec = f"{back.get('codec', spec['codec'])} {back.get('profile', '')} {back.get('pix_fmt', spec['pix_fmt'])}"
        codec += "".join(f", {x}" for x in extra)
        interval = back.get("keyframe_interval")
        gop = ", ".join(map(str, interval)) if interval else "one keyframe"
        gop += " (default)" if spec["gop_seconds"] is None else ""
        print(
            f"| {e['file']} | {e['group']} | {spec['width']}x{spec['height']} | {spec['fps']:g} | {codec.strip()} | "
            f"{gop} | {e['mbit_per_s']} | {e['seconds']:.0f} |"
        )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        return int(first.split()[1]) / 1024 / 1024
    except (OSError, IndexError, ValueError):
        return 0.0


def _ffmpeg_version() -> str:
    import av

    info = getattr(av, "ffmpeg_version_info", None)
    return str(info) if info else "?"


def _decord_version() -> str:
    try:
        import decord
    except Exception:
        return ", no decord"
    return f", decord {decord.__version__}"


# --- the earlier measurement: end to end against encoding alone (--synthetic) -------------------------------


def synthetic_main(args: argparse.Namespace) -> None:
    """``tvr ingest`` end to end against the encoder alone on the same (already decoded) synthetic clips."""
    import torch

    from indexer.decode import DecodeSpec
    from indexer.encode import encode_clips
    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover
    from model import load_encoder
    from model.train.synth import write_synthetic_set

    torch.set_num_threads(args.threads or torch.get_num_threads())
    threads = torch.get_num_threads()

    def end_to_end(encoder: Any, folder: Path, data_dir: Path, options: IngestOptions) -> Any:
        settings = Settings(data_dir=data_dir, database_url=None, checkpoint="bench", device=str(encoder.device))
        summary = ingest(settings, discover([folder]), options, encoder=encoder)
        assert not summary.failed, summary.failed[:3]
        return summary

    def encoder_only(encoder: Any, videos: list[Path]) -> tuple[float, int]:
        spec = DecodeSpec(
            num_frames=encoder.num_frames, preprocess=encoder.preprocess, chunk_clips=10_000, segment_clips=0
        )
        clips = _decode_for_encoder(videos, spec)
        started = time.perf_counter()
        for begin in range(0, len(clips), args.batch_size):
            encode_clips(encoder, clips[begin : begin + args.batch_size])  # as the pipeline does
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, len(clips)

    with tempfile.TemporaryDirectory(prefix="tvr-bench-ingest-") as tmp:
        work = args.workdir or Path(tmp)
        corpus = work / f"synth-{args.videos}-{args.size}"
        write_synthetic_set(corpus, videos=args.videos, seed=0, size=args.size, progress=False)
        videos = sorted((corpus / "videos").glob("*.mp4"))
        encoder = load_encoder(random_checkpoint(args.config or "demo", Path(tmp)), device=args.device)
        options = IngestOptions(batch_size=args.batch_size, workers=args.workers, progress=False)

        warm = Path(tmp) / "warm"
        warm.mkdir()
        for path in videos[:4]:
            os.symlink(path, warm / path.name)
        end_to_end(encoder, warm, Path(tmp) / "warm-data", options)  # fork server up, caches warm

        encode_runs, summaries = [], []
        for repeat in range(args.repeats):  # alternated, so that changes in machine load hit both alike
            encode_s, clips = encoder_only(encoder, videos)
            encode_runs.append(encode_s)
            summaries.append(end_to_end(encoder, corpus / "videos", Path(tmp) / f"data{repeat}", options))

    config = args.config or "demo"
    encode_s = statistics.median(encode_runs)
    e2e_s = statistics.median(s.seconds for s in summaries)
    summary = min(summaries, key=lambda s: abs(s.seconds - e2e_s))  # stages of the run nearest the median
    e2e_rate = summary.indexed / e2e_s
    enc_rate = len(videos) / encode_s
    busy = summary.stage_seconds["encode"] / summary.seconds
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.stage_seconds.items())
    print(
        f"\n{config} encoder ({encoder.image_size} px, {encoder.num_frames} frames, random weights) on "
        f"{args.device}, {threads} torch threads; {len(videos)} synthetic videos ({args.size} px, {clips} clips); "
        f"{args.workers} decoding workers, batch {args.batch_size}; {os.cpu_count()} cores, {_cpu_name()}, "
        f"torch {torch.__version__}\n"
    )
    columns = "config | videos | workers | threads | end-to-end s | end-to-end videos/s | encoder-only s"
    print(f"| {columns} | encoder-only videos/s | ratio | encoder busy in end-to-end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {config} ({encoder.image_size} px) | {len(videos)} | {args.workers} | {threads} | "
        f"{e2e_s:.1f} | {e2e_rate:.2f} | {encode_s:.1f} | {enc_rate:.2f} | {e2e_rate / enc_rate:.2f} | {busy:.0%} |"
    )
    print(
        f"\nencoder-only runs: {', '.join(f'{t:.1f} s' for t in encode_runs)}; end-to-end runs: "
        f"{', '.join(f'{s.seconds:.1f} s' for s in summaries)}"
    )
    print(f"\nend-to-end stages (main process): {stages}")


def _decode_for_encoder(videos: list[Path], spec: Any) -> list[Any]:
    """Every clip of ``videos`` decoded as the decoding stage does it, whatever its current interface."""
    import indexer.decode as decode

    clips: list[Any] = []
    for path in videos:
        if hasattr(decode, "prepare_video"):
            probed = decode.prepare_video(str(path), None, spec)
            assert probed.status == "ok", (path, probed.error)
            clips += probed.first_chunk
        else:  # the streaming stage: a Probed, then chunks of clips
            for event in decode.decode_video(str(path), None, spec):
                clips += getattr(event, "clips", [])
    return clips


# --- the command line ------------------------------------------------------------------------------------------


def _option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ingest-child"]:
        ingest_child(argv[1])
        return
    from indexer.workers import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="the corpus is written here once and reused")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every file's length (0.1: ~4 min)")
    parser.add_argument("--checkpoint", default="demo", help="checkpoint of the ingest runs (default: demo)")
    parser.add_argument("--config", default=None, help="random weights of this config instead (e.g. ViT-B-32)")
    parser.add_argument("--workers", type=int, default=default_workers(), help="decoding processes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the encoder (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each; medians reported")
    parser.add_argument("--frames", type=int, default=12, help="frames sampled per clip, for the reader figures")
    parser.add_argument("--groups", nargs="*", default=None, help="only these file groups")
    parser.add_argument("--no-whole", action="store_true", help="no ingest of the whole corpus in one run")
    parser.add_argument("--no-readers", action="store_true", help="skip the decord / PyAV reader comparison")
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an IngestOptions field for the ingest runs, e.g. --option backend=decord (value as JSON or text)",
    )
    parser.add_argument("--ray", action="store_true", help="also ingest with --ray (a local Ray instance) each time")
    parser.add_argument("--synthetic", action="store_true", help="the earlier end to end vs encoding alone figure")
    parser.add_argument("--videos", type=int, default=300, help="--synthetic: number of synthetic videos")
    parser.add_argument("--size", type=int, default=64, help="--synthetic: video frame size in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.synthetic:
        synthetic_main(args)
        return
    if args.workdir is None:
        parser.error("--workdir is required (the corpus is written there once)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus_main(args, argv)


if __name__ == "__main__":
    main()
