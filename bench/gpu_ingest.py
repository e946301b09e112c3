"""Ingestion with ``--decoder nvdec`` on a GPU, against PyNvVideoCodec decoding every frame, in one run.

    python3 bench/gpu_ingest.py --make-data build/gpu_ingest/data    # here (PyAV): files + the CPU path's frames
    bash bench/gpu_ingest.sh                                         # there: wheels, then this script

``--make-data`` writes three 720p30 H.264 files of 20 s (x264's defaults: preset medium, GOP 250, B-frames;
the pictures of bench/corpus.py's ``Scene``), a phone's file (display rotation -90) and one with 4:3 pixels,
and, from the CPU path (``indexer.decode.decode_video``, PyAV and libswscale), each file's probe and clip
frames for a ViT-B/32 encoder (``reference.npz``, ``reference.json``). On the GPU machine, without PyAV:

1. parity: each file through ``nvdec.decode_video_nvdec``: its probe against the CPU path's, its frames
   (mean and largest grey-level difference), and the cosine of the embeddings of both frame sets under one
   ViT-B/32 (random weights) on the GPU: decoding is all that differs;
2. PyNvVideoCodec alone decoding every frame of the corpus (the files copied ``--copies`` times) with 1 and
   with ``--sessions`` threads: frames/s and hours of video per hour;
3. ``ingest(..., decoder="nvdec")`` of that corpus (catalog in SQLite, no FAISS: publish off): hours of
   video per hour, stage seconds, and which decoder each video's row records;
4. the CPU path on the same corpus when PyAV imports there (else said), and the cosine of both runs.

A Markdown table for docs/BENCHMARKS.md comes last, and everything in OUT/gpu_ingest.json. Without CUDA,
PyNvVideoCodec or OpenCV it stops at once, saying which (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("faiss") is None:  # publishing is off: FAISS is imported by the indexer, never used
    sys.modules["faiss"] = types.ModuleType("faiss")

from indexer import nvdec  # noqa: E402
from indexer.decode import DecodedChunk, DecodeSpec, Probed  # noqa: E402
from model.preprocess import FramePreprocess  # noqa: E402

NUM_FRAMES, IMAGE_SIZE = 12, 224  # ViT-B/32's configuration (model/configs/ViT-B-32.json)
FILES = {  # name: (width, height, fps, seconds, write_video options)
    "clip0.mp4": (1280, 720, 30, 20, {}),
    "clip1.mp4": (1280, 720, 30, 20, {}),
    "clip2.mp4": (1280, 720, 30, 20, {}),
    "phone.mp4": (640, 360, 30, 4, {"rotation": -90}),
    "hdv.mp4": (720, 540, 25, 4, {"sample_aspect_ratio": (4, 3)}),
}
CORPUS = ("clip0.mp4", "clip1.mp4", "clip2.mp4")  # copied --copies times for the throughput runs


def make_data(folder: Path) -> None:
    """The files and the CPU path's probes and frames of them (needs PyAV: run it where the tests run)."""
    from fractions import Fraction

    from bench.corpus import Scene
    from indexer.decode import decode_video
    from model.media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    # whole files (no segments), as NVDEC decodes them
    spec = DecodeSpec(num_frames=NUM_FRAMES, preprocess=FramePreprocess(IMAGE_SIZE), segment_clips=0)
    facts, frames = {}, {}
    for seed, (name, (width, height, fps, seconds, options)) in enumerate(FILES.items()):
        if "sample_aspect_ratio" in options:
            options = {**options, "sample_aspect_ratio": Fraction(*options["sample_aspect_ratio"])}
        started = time.perf_counter()
        write_video(folder / name, Scene(width, height, seed).frames(fps * seconds, fps), fps=fps, **options)
        events = list(decode_video(str(folder / name), None, spec))
        probed = events[0]
        assert isinstance(probed, Probed) and probed.status == "ok", probed
        keys = ("duration", "fps", "width", "height", "codec", "windows")
        facts[name] = {key: getattr(probed, key) for key in keys}
        frames[name] = np.stack([c.frames for e in events if isinstance(e, DecodedChunk) for c in e.clips])
        size = (folder / name).stat().st_size / 1e6
        print(f"{name}: {size:.1f} MB, {frames[name].shape[0]} clips, {time.perf_counter() - started:.0f} s")
    np.savez_compressed(folder / "reference.npz", **frames)
    preprocess = spec.preprocess.to_dict()
    (folder / "reference.json").write_text(json.dumps({"preprocess": preprocess, "files": facts}, indent=1))
    total = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"{folder}: {total:.1f} MB")


def random_vit_b32(device: torch.device) -> Any:
    from bench.encoder import bench_model
    from model import Encoder

    return Encoder(bench_model("ViT-B-32"), checkpoint_id="bench-vit-b32-random", device=device)


def embed(encoder: Any, frames: torch.Tensor) -> torch.Tensor:
    return encoder.encode_video(encoder.preprocess.normalize(frames.to(encoder.device))).float()


def parity(data: Path, encoder: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """Each file through the GPU path against the CPU path's probe and frames."""
    spec = DecodeSpec(num_frames=NUM_FRAMES, preprocess=encoder.preprocess, segment_clips=0)
    frames = np.load(data / "reference.npz")
    out: dict[str, Any] = {}
    for name, facts in reference["files"].items():
        try:
            events = list(nvdec.decode_video_nvdec(str(data / name), None, spec, encoder.device))
        except Exception as exc:  # UseCpu: the pool would hand it to the CPU workers
            out[name] = {"gpu_path": f"gave up: {type(exc).__name__}: {exc}"}
            continue
        probed = events[0]
        assert isinstance(probed, Probed)
        ours = torch.stack([c.frames for e in events if isinstance(e, DecodedChunk) for c in e.clips])  # type: ignore[misc]
        theirs = torch.from_numpy(frames[name])
        diff = (ours.cpu().int() - theirs.int()).abs()
        cosine = (embed(encoder, ours) * embed(encoder, theirs)).sum(-1)
        probe = {key: getattr(probed, key) for key in facts}
        probe["windows"] = [list(w) for w in probe["windows"]]
        out[name] = {
            "probe_equal": {
                k: probe[k] == v if k != "duration" else abs(probe[k] - v) < 1e-6 for k, v in facts.items()
            },
            "probe": probe,
            "mean_abs_diff": round(float(diff.float().mean()), 3),
            "max_abs_diff": int(diff.max()),
            "min_cosine": round(float(cosine.min()), 5),
        }
        print(f"  {name}: {out[name]}")
    return out


def decode_every_frame(paths: list[Path], sessions: int, device: torch.device) -> dict[str, Any]:
    """PyNvVideoCodec alone: every frame of ``paths`` decoded (NV12, GPU memory) by ``sessions`` threads."""
    import PyNvVideoCodec as nvc

    todo, lock, counts = list(paths), threading.Lock(), []

    def work() -> None:
        torch.cuda.set_device(device)
        frames = 0
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop()
            demuxer = nvc.CreateDemuxer(filename=str(path))
            decoder = nvc.CreateDecoder(gpuid=device.index or 0, codec=demuxer.GetNvCodecId(), usedevicememory=True)
            for packet in demuxer:
                frames += len(decoder.Decode(packet))
            while decoded := decoder.Decode(nvc.PacketData()):
                frames += len(decoded)
        with lock:
            counts.append(frames)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"sessions": sessions, "frames": sum(counts), "seconds": round(seconds, 2), "fps": sum(counts) / seconds}


def ingest_corpus(corpus: Path, decoder: str, sessions: int, device: torch.device, encoder: Any) -> dict[str, Any]:
    from sqlalchemy import select

    from indexer.catalog import Clip, Video
    from indexer.db import make_sessionmaker, open_catalog
    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover

    data = Path(tempfile.mkdtemp(prefix=f"tvr-{decoder}-"))
    settings = Settings(data_dir=data, checkpoint="bench-vit-b32-random", device=str(device))
    options = IngestOptions(decoder=decoder, nvdec_sessions=sessions, workers=2, publish=False, progress=False)
    started = time.perf_counter()
    summary = ingest(settings, discover([corpus], None), options, encoder=encoder)
    seconds = time.perf_counter() - started
    with make_sessionmaker(open_catalog(settings))() as session:
        videos = list(session.scalars(select(Video)))
        decoders = sorted({str(v.decoder) for v in videos})
        clips = {Path(v.path).name: [c.vector() for c in session.scalars(select(Clip).where(Clip.video_id == v.id))]
                 for v in videos}  # fmt: skip
        video_seconds = sum(v.duration or 0.0 for v in videos if v.status.value == "indexed")
    return {
        "decoder": decoder, "sessions": sessions, "indexed": summary.indexed, "failed": summary.failed[:3],
        "seconds": round(seconds, 2), "video_hours_per_hour": video_seconds / seconds, "decoders": decoders,
        "stages": {k: round(v, 2) for k, v in summary.stage_seconds.items()}, "_clips": clips,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-data", type=Path, help="write the files and the CPU path's reference here, then stop")
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "gpu_ingest" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-ingest"))
    parser.add_argument("--copies", type=int, default=16, help="copies of each 20 s file in the corpus")
    parser.add_argument("--sessions", type=int, default=4, help="NVDEC sessions (threads), as ingestion's default")
    args = parser.parse_args()
    if args.make_data:
        return make_data(args.make_data)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    reason = nvdec.nvdec_unavailable(device)
    if reason is not None:
        print(f"FAIL: NVDEC cannot run here: {reason}")
        sys.exit(2)
    if not (args.data / "reference.json").exists():
        print(f"FAIL: no {args.data}/reference.json: run --make-data {args.data} where PyAV is, and carry it")
        sys.exit(2)
    import PyNvVideoCodec

    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "pynvvideocodec": getattr(PyNvVideoCodec, "__version__", "?"),
        "pyav": importlib.util.find_spec("av") is not None,
    }
    print(report)
    reference = json.loads((args.data / "reference.json").read_text())
    encoder = random_vit_b32(device)
    if encoder.preprocess != FramePreprocess.from_dict(reference["preprocess"]):
        print(f"WARNING: the reference was made for {reference['preprocess']}, the encoder has {encoder.preprocess}")
    print("## parity with the CPU path's frames")
    report["parity"] = parity(args.data, encoder, reference)

    corpus = args.out.parent / "gpu-ingest-corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    for copy in range(args.copies):
        for name in CORPUS:
            shutil.copy(args.data / name, corpus / f"{copy:03d}-{name}")
    paths = sorted(corpus.iterdir())
    hours = sum(reference["files"][p.name[4:]]["duration"] for p in paths) / 3600
    print(f"## PyNvVideoCodec decoding every frame of {len(paths)} files ({hours * 60:.0f} min of video)")
    report["decode"] = []
    for sessions in sorted({1, args.sessions}):
        run = decode_every_frame(paths, sessions, device)
        run["video_hours_per_hour"] = hours * 3600 / run["seconds"]
        report["decode"].append(run)
        print(f"  {run}")
    print("## ingestion, --decoder nvdec")
    runs = [ingest_corpus(corpus, "nvdec", args.sessions, device, encoder)]
    if report["pyav"]:
        print("## ingestion, --decoder cpu")
        runs.append(ingest_corpus(corpus, "cpu", args.sessions, device, encoder))
        pairs = [
            (a, b) for name, vs in runs[0]["_clips"].items() for a, b in zip(vs, runs[1]["_clips"][name], strict=True)
        ]
        cosines = [float(a @ b) for a, b in pairs]
        report["nvdec_vs_cpu_min_cosine"] = min(cosines)
    else:
        report["nvdec_vs_cpu_min_cosine"] = (
            "not run: PyAV is not installed here (see parity: CPU frames from --make-data)"
        )
    report["ingest"] = [{k: v for k, v in run.items() if k != "_clips"} for run in runs]
    for run in report["ingest"]:
        print(f"  {run}")
    (args.out / "gpu_ingest.json").write_text(json.dumps(report, indent=1, default=str))
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['gpu']}, torch {report['torch']}, PyNvVideoCodec {report['pynvvideocodec']}\n")
    print("| what | sessions | frames/s | hours of video per hour | notes |")
    print("| --- | --- | --- | --- | --- |")
    for run in report["decode"]:
        rate, hours = f"{run['fps']:.0f}", f"{run['video_hours_per_hour']:.0f}"
        print(f"| PyNvVideoCodec, every frame | {run['sessions']} | {rate} | {hours} | |")
    for run in report["ingest"]:
        notes = f"{run['indexed']} videos, decoders {run['decoders']}, stages {run['stages']}"
        what, hours = f"ingest --decoder {run['decoder']}, ViT-B/32", f"{run['video_hours_per_hour']:.0f}"
        print(f"| {what} | {run['sessions']} | | {hours} | {notes} |")
    cosines = {name: p.get("min_cosine", p.get("gpu_path")) for name, p in report["parity"].items()}
    print(f"\nnvdec against CPU frames, min cosine per file: {cosines}")
    print(f"nvdec against CPU ingestion: {report['nvdec_vs_cpu_min_cosine']}")


if __name__ == "__main__":
    main()
