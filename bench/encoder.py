"""Encoder cost against frame-by-frame CLIP, in the same process: videos/s, FLOPs, text latency.

    python bench/encoder.py [--config ViT-B-32] [--batches 1 8] [--repeats 5] [--threads N]
    python bench/encoder.py --device cuda --batches 8 32 --precision bf16 --graphs

The baseline is open_clip's own ``encode_image`` on the same 12 frames as a batch of independent images
(what a per-frame CLIP video search costs). Both use random weights of the same architecture; runs are
interleaved (the order alternating) so that machine noise hits both alike. Two time ratios are printed:
of the median times, and the median of the per-pair ratios (each call of ours against the call of CLIP
beside it), which a shared, noisy machine moves less. On CUDA the frames are on the device already, both
are warmed up and the clock is read after ``torch.cuda.synchronize()``; ``bf16`` runs both under
bfloat16 autocast (as ``Encoder.encode_video`` does on CUDA), ``fp32`` runs the model without it.
``--graphs`` runs both as CUDA graphs replayed per batch size (``model.encoder.BatchGraphs``, as
``Encoder(cuda_graphs=True)`` does); on a CPU the same code runs with an eager stand-in for the graph.
Prints the date, the load average and a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model import DualAttentionCLIP, Encoder, create_model, get_config, tokenize
from model.backbone import build_clip
from model.encoder import BatchGraphs, cuda_graph_capture, eager_capture

PRECISIONS = ("fp32", "bf16")


def bench_model(config_name: str = "ViT-B-32", seed: int = 0) -> DualAttentionCLIP:
    """Random weights of ``config_name`` with a non-zero LoRA (a trained adapter, folded later as in serving)."""
    torch.manual_seed(seed)
    config = get_config(config_name)
    config.backbone.pretrained = None  # random weights: cost does not depend on their values
    model = create_model(config)
    with torch.no_grad():
        for lora in [*model.visual_lora, *model.text_lora]:
            lora.b.normal_(std=0.01)
    return model


def baseline_clip(model: DualAttentionCLIP) -> CLIP:
    """A frame-by-frame open_clip CLIP of the same architecture as ``model``, with random weights."""
    return build_clip(dataclasses.replace(model.config.backbone, pretrained=None))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls of ``fn`` (waiting for the device when it is a GPU)."""
    device = device or torch.device("cpu")
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()``, attention counted on torch's unfused path (the CPU's fused kernel is not counted)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def encode_video_fp32(encoder: Encoder, frames: torch.Tensor) -> torch.Tensor:
    """``encoder.encode_video`` without its bfloat16 autocast on CUDA: the model's float32 computation."""
    with torch.inference_mode():
        video, _ = encoder.model.encode_video(frames.to(encoder.device, torch.float32))
    return F.normalize(video.float(), dim=-1)


def video_functions(
    encoder: Encoder, baseline: CLIP, frames: torch.Tensor, precision: str = "fp32", graphs: bool = False
) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """(tvr, frame-by-frame CLIP) encoders of ``frames`` at ``precision`` on the encoder's device.

    With ``graphs`` both replay a captured graph per batch size (CUDA graphs on CUDA, an eager stand-in
    elsewhere), each capturing on its first call.
    """
    cuda = encoder.device.type == "cuda"
    if precision not in PRECISIONS or (precision == "bf16" and not cuda):
        raise ValueError(f"precision must be fp32, or bf16 on CUDA; got {precision!r} on {encoder.device}")
    t = frames.shape[1]

    def ours_of(batch: torch.Tensor) -> torch.Tensor:
        if not cuda or precision == "bf16":
            return encoder.encode_video(batch)  # the Encoder's own path (bf16 autocast on CUDA)
        return encode_video_fp32(encoder, batch)

    def theirs_of(batch: torch.Tensor) -> torch.Tensor:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)
        with torch.inference_mode(), autocast:
            return baseline.encode_image(batch.flatten(0, 1)).view(batch.shape[0], t, -1).mean(1)

    if graphs:
        capture = cuda_graph_capture if cuda else eager_capture
        ours_of, theirs_of = BatchGraphs(ours_of, capture), BatchGraphs(theirs_of, capture)

    def ours() -> torch.Tensor:
        return ours_of(frames)

    def theirs() -> torch.Tensor:
        return theirs_of(frames)

    return ours, theirs


def measure_video(
    encoder: Encoder,
    baseline: CLIP,
    batch: int,
    repeats: int,
    precision: str = "fp32",
    flops: bool = True,
    graphs: bool = False,
) -> dict[str, Any]:
    """Videos/s of the tvr encoder and of frame-by-frame CLIP on one random batch, and their ratios."""
    t, s, device = encoder.num_frames, encoder.image_size, encoder.device
    frames = torch.randn(batch, t, 3, s, s, device=device)
    ours, theirs = video_functions(encoder, baseline, frames, precision, graphs)
    for _ in range(2 if device.type == "cuda" else 1):  # warm-up (kernel selection, allocator, graph capture)
        ours(), theirs()
    ours_times, theirs_times = [], []
    for i in range(repeats):  # interleaved, the order alternating
        pair = [(ours, ours_times), (theirs, theirs_times)]
        for fn, times in pair if i % 2 == 0 else pair[::-1]:
            times += seconds_per_call(fn, 1, device)
    ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
    pair_ratios = [a / b for a, b in zip(ours_times, theirs_times, strict=True)]
    row: dict[str, Any] = {
        "batch": batch,
        "precision": precision,
        "graphs": graphs,
        "tvr_videos_s": batch / ours_s,
        "clip_videos_s": batch / theirs_s,
        "time_ratio": ours_s / theirs_s,
        "pair_ratio": statistics.median(pair_ratios),
        "pair_ratios": pair_ratios,
        "flops_ratio": None,
    }
    if flops:
        ours, theirs = video_functions(encoder, baseline, frames, precision)  # eager: a replay shows no FLOPs
        # torch's fused MultiheadAttention kernel is invisible to the FLOP counter: count the baseline
        # on the unfused path (same arithmetic), time it on whichever path torch picks.
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.inference_mode():
                row["flops_ratio"] = _flops(ours) / _flops(theirs)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    return row


def measure_text(encoder: Encoder, baseline: CLIP, repeats: int = 20) -> tuple[float, float]:
    """Median ms of one query: the encoder's text path (cut at EOT) and open_clip's encode_text (77 tokens)."""
    query = ["a red circle moves to the right on a black background"]
    encoder.encode_text(query)
    text_times = seconds_per_call(lambda: encoder.encode_text(query), repeats, encoder.device)
    base_ids = tokenize(query, 77).to(encoder.device)

    def base_text() -> torch.Tensor:
        with torch.inference_mode():
            return baseline.encode_text(base_ids)

    base_text()
    base_times = seconds_per_call(base_text, repeats, encoder.device)
    return 1000 * statistics.median(text_times), 1000 * statistics.median(base_times)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a" where the system has none."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ViT-B-32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"], help="bf16: CUDA only")
    parser.add_argument("--graphs", action="store_true", help="both as graphs per batch size (CUDA graphs on CUDA)")
    parser.add_argument("--no-text", action="store_true", help="skip the text-encoder latency")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = bench_model(args.config)
    baseline = baseline_clip(model).to(args.device).eval()
    encoder = Encoder(model, "bench", args.device)
    backbone = model.config.backbone
    arch = backbone.arch if isinstance(backbone.arch, str) else f"{model.config.name} (inline architecture)"
    t, s = encoder.num_frames, encoder.image_size
    where = torch.cuda.get_device_name(encoder.device) if encoder.device.type == "cuda" else platform.processor()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {now}, load average {load_average()} (1, 5, 15 min), {os.cpu_count()} CPUs")
    print(f"# {arch}, {t} frames of {s}px, torch {torch.__version__}, {args.threads} threads, {where}")
    if args.graphs:
        print(f"# both replayed as {'CUDA graphs' if encoder.device.type == 'cuda' else 'graphs (eager stand-in)'}")
    precision_column = len(args.precision) > 1 or args.precision != ["fp32"]
    print(
        ("| precision " if precision_column else "")
        + "| batch | tvr videos/s | CLIP frame-by-frame videos/s | time ratio (tvr / CLIP) "
        + "| median pair ratio | FLOPs ratio |"
    )
    print("| --- " * (7 if precision_column else 6) + "|")
    for precision in args.precision:
        for batch in args.batches:
            row = measure_video(encoder, baseline, batch, args.repeats, precision, graphs=args.graphs)
            print(
                (f"| {precision} " if precision_column else "")
                + f"| {batch} | {row['tvr_videos_s']:.2f} | {row['clip_videos_s']:.2f} | {row['time_ratio']:.3f} "
                f"| {row['pair_ratio']:.3f} | {row['flops_ratio']:.3f} |",
                flush=True,
            )

    if not args.no_text:
        ours_ms, base_ms = measure_text(encoder, baseline)
        print()
        print("| text encoder, batch 1 | ms per query |")
        print("| --- | --- |")
        print(f"| tvr (32 tokens, cut at EOT) | {ours_ms:.2f} |")
        print(f"| open_clip encode_text (77 tokens) | {base_ms:.2f} |")
    print(f"# done {datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC, load average {load_average()}")


if __name__ == "__main__":
    main()
