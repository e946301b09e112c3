"""Encoder cost against frame-by-frame CLIP, in the same process: videos/s, FLOPs, text latency.

    python bench/encoder.py [--config ViT-B-32] [--batches 1 8] [--repeats 5] [--threads N]

The baseline is open_clip's own ``encode_image`` on the same 12 frames as a batch of independent images
(what a per-frame CLIP video search costs). Both use random weights of the same architecture; runs are
interleaved so that machine noise hits both alike. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import open_clip
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import Encoder, create_model, get_config, tokenize


def _median_seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ViT-B-32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = get_config(args.config)
    config.backbone.pretrained = None  # random weights: cost does not depend on their values
    model = create_model(config)
    with torch.no_grad():
        for lora in [*model.visual_lora, *model.text_lora]:
            lora.b.normal_(std=0.01)  # a trained adapter (folded below, as in serving)
    encoder = Encoder(model, "bench")
    arch = config.backbone.arch
    baseline = open_clip.create_model(arch, pretrained=None, force_quick_gelu=True).eval()
    t, s = config.method.num_frames, encoder.image_size

    print(f"# {arch}, {t} frames of {s}px, torch {torch.__version__}, {args.threads} threads, {platform.processor()}")
    print("| batch | tvr videos/s | CLIP frame-by-frame videos/s | time ratio (tvr / CLIP) | FLOPs ratio |")
    print("| --- | --- | --- | --- | --- |")
    for batch in args.batches:
        frames = torch.randn(batch, t, 3, s, s)

        def ours(frames=frames):
            return encoder.encode_video(frames)

        def theirs(frames=frames):
            with torch.inference_mode():
                return baseline.encode_image(frames.flatten(0, 1)).view(frames.shape[0], t, -1).mean(1)

        ours(), theirs()  # warm-up
        ours_times, theirs_times = [], []
        for _ in range(args.repeats):
            ours_times += _median_seconds(ours, 1)
            theirs_times += _median_seconds(theirs, 1)
        ours_s, theirs_s = statistics.median(ours_times), statistics.median(theirs_times)
        # torch's fused MultiheadAttention kernel is invisible to the FLOP counter: count the baseline
        # on the unfused path (same arithmetic), time it on whichever path torch picks.
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.inference_mode():
            flops_ratio = _flops(ours) / _flops(theirs)
        torch.backends.mha.set_fastpath_enabled(True)
        print(
            f"| {batch} | {batch / ours_s:.2f} | {batch / theirs_s:.2f} | {ours_s / theirs_s:.3f} | {flops_ratio:.3f} |"
        )

    query = ["a red circle moves to the right on a black background"]
    encoder.encode_text(query)
    text_times = _median_seconds(lambda: encoder.encode_text(query), 20)
    base_ids = tokenize(query, 77)

    def base_text():
        with torch.inference_mode():
            return baseline.encode_text(base_ids)

    base_text()
    base_times = _median_seconds(base_text, 20)
    print()
    print("| text encoder, batch 1 | ms per query |")
    print("| --- | --- |")
    print(f"| tvr (32 tokens, cut at EOT) | {1000 * statistics.median(text_times):.2f} |")
    print(f"| open_clip encode_text (77 tokens) | {1000 * statistics.median(base_times):.2f} |")


if __name__ == "__main__":
    main()
