"""Ingestion speed end to end against encoding alone: videos/s of ``tvr ingest``'s pipeline and of the
encoder on the same clips already decoded, in the same process with the same checkpoint, and their ratio.

    python bench/ingest.py [--videos 300] [--config demo] [--size 64] [--workers N] [--batch-size 32]

The videos are ``model.train.synth``'s (H.264 mp4, 2 or 4 s, ``--size`` px square, 8 fps): each is one
clip. The encoder has random weights of ``--config`` (cost does not depend on their values), saved as a
checkpoint and loaded with ``load_encoder``. End to end = ``indexer.pipeline.ingest`` into a fresh SQLite
catalog (hashing, decoding in ``--workers`` processes, thumbnails, encoding, one commit per video, the
index published at the end), after a warm-up run that starts the decoding processes' fork server.
Encoder-only = the same clips decoded beforehand, stacked into the same batches and encoded. The two are
alternated ``--repeats`` times (medians reported). A ratio of 1 means the encoder never waited for decoding;
"encoder busy" is the share of the end-to-end run the main process spent encoding (the same ratio, measured
within one run, so it does not depend on the machine's load changing between runs). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.decode import DecodeSpec, prepare_video  # noqa: E402
from indexer.encode import encode_clips  # noqa: E402
from indexer.pipeline import IngestOptions, ingest  # noqa: E402
from indexer.settings import Settings  # noqa: E402
from indexer.sources import discover  # noqa: E402
from indexer.workers import default_workers  # noqa: E402
from model import create_model, get_config, load_encoder, save_checkpoint  # noqa: E402


def make_encoder(config_name: str, folder: Path, device: str):  # type: ignore[no-untyped-def]
    config = get_config(config_name)
    config.backbone.pretrained = None  # random weights: the cost does not depend on their values
    torch.manual_seed(0)
    save_checkpoint(create_model(config), folder / "ckpt", full=True)
    return load_encoder(str(folder / "ckpt"), device=device)


def encoder_only(encoder, videos: list[Path], batch_size: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Seconds to encode every clip of ``videos`` decoded beforehand (in the pipeline's batches)."""
    spec = DecodeSpec(num_frames=encoder.num_frames, preprocess=encoder.preprocess, chunk_clips=10_000)
    clips = []
    for path in videos:
        probed = prepare_video(str(path), None, spec)
        assert probed.status == "ok", (path, probed.error)
        clips += probed.first_chunk
    started = time.perf_counter()
    for begin in range(0, len(clips), batch_size):
        encode_clips(encoder, clips[begin : begin + batch_size])  # as the pipeline does
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, len(clips)


def end_to_end(encoder, folder: Path, data_dir: Path, options: IngestOptions):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=data_dir, database_url=None, checkpoint="bench", device=str(encoder.device))
    summary = ingest(settings, discover([folder]), options, encoder=encoder)
    assert not summary.failed, summary.failed[:3]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--config", default="demo", help="encoder config name (model/configs)")
    parser.add_argument("--size", type=int, default=64, help="video frame size in pixels")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of the encoder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the videos here between runs")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each; medians reported")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from model.train.synth import write_synthetic_set

    with tempfile.TemporaryDirectory(prefix="tvr-bench-ingest-") as tmp:
        work = args.workdir or Path(tmp)
        corpus = work / f"synth-{args.videos}-{args.size}"
        write_synthetic_set(corpus, videos=args.videos, seed=0, size=args.size, progress=False)
        videos = sorted((corpus / "videos").glob("*.mp4"))
        encoder = make_encoder(args.config, Path(tmp), args.device)
        options = IngestOptions(batch_size=args.batch_size, workers=args.workers, progress=False)

        warm = Path(tmp) / "warm"
        warm.mkdir()
        for path in videos[:4]:
            os.symlink(path, warm / path.name)
        end_to_end(encoder, warm, Path(tmp) / "warm-data", options)  # fork server up, caches warm

        encode_runs, summaries = [], []
        for repeat in range(args.repeats):  # alternated, so that changes in machine load hit both alike
            encode_s, clips = encoder_only(encoder, videos, args.batch_size)
            encode_runs.append(encode_s)
            summaries.append(end_to_end(encoder, corpus / "videos", Path(tmp) / f"data{repeat}", options))

    encode_s = statistics.median(encode_runs)
    e2e_s = statistics.median(s.seconds for s in summaries)
    summary = min(summaries, key=lambda s: abs(s.seconds - e2e_s))  # stages of the run nearest the median
    e2e_rate = summary.indexed / e2e_s
    enc_rate = len(videos) / encode_s
    busy = summary.stage_seconds["encode"] / summary.seconds
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.stage_seconds.items())
    print(
        f"\n{args.config} encoder ({encoder.image_size} px, {encoder.num_frames} frames, random weights) on "
        f"{args.device}, {args.threads} torch threads; {len(videos)} synthetic videos ({args.size} px, "
        f"{clips} clips); "
        f"{args.workers} decoding workers, batch {args.batch_size}; {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n"
    )
    columns = "config | videos | workers | threads | end-to-end s | end-to-end videos/s | encoder-only s"
    print(f"| {columns} | encoder-only videos/s | ratio | encoder busy in end-to-end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.config} ({encoder.image_size} px) | {len(videos)} | {args.workers} | {args.threads} | "
        f"{e2e_s:.1f} | {e2e_rate:.2f} | {encode_s:.1f} | {enc_rate:.2f} | {e2e_rate / enc_rate:.2f} | "
        f"{busy:.0%} |"
    )
    print(
        f"\nencoder-only runs: {', '.join(f'{t:.1f} s' for t in encode_runs)}; end-to-end runs: "
        f"{', '.join(f'{s.seconds:.1f} s' for s in summaries)}"
    )
    print(f"\nend-to-end stages (main process): {stages}")


if __name__ == "__main__":
    main()
