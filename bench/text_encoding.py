"""What a search query costs the text encoder at each precision, alone and in a batch, and whether its
embedding depends on the batch.

    python bench/text_encoding.py [--work /tmp/tvr-bench-search] [--repeats 5] [--threads 2]

ViT-B-32's text tower with random weights (the cost does not depend on the values; the checkpoint is the
search benchmark's, ``bench/search.py``), synthetic captions of the demo vocabulary. For each precision
(float32, the same-run baseline; bfloat16; int8) it encodes 256 captions one per call and 16 per call,
the repeats interleaved across precisions, and reports the median milliseconds per caption, and the
largest difference between a caption's embedding alone and in its batch. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from search import captions, random_checkpoint  # noqa: E402

from model import load_encoder  # noqa: E402
from model.text_inference import TEXT_PRECISIONS  # noqa: E402

BATCHES = (1, 16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tvr-bench-search"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = str(random_checkpoint(args.work))
    texts = captions()[: args.queries]
    encoders = {p: load_encoder(checkpoint, text_precision=p) for p in TEXT_PRECISIONS}
    for encoder in encoders.values():
        encoder.encode_text(texts[:16])  # warm up (traces, first-call allocations)
    timings: dict[tuple[str, int], list[float]] = {(p, b): [] for p in encoders for b in BATCHES}
    for _ in range(args.repeats):
        for precision, encoder in encoders.items():
            for batch in BATCHES:
                started = time.perf_counter()
                for begin in range(0, len(texts), batch):
                    encoder.encode_text(texts[begin : begin + batch])
                timings[precision, batch].append(1000 * (time.perf_counter() - started) / len(texts))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}"
    )
    print("| precision | ms/query, alone | ms/query, 16 per call | x float32 alone | x float32 batched "
          "| largest difference alone vs batched |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = {b: statistics.median(timings["float32", b]) for b in BATCHES}
    for precision, encoder in encoders.items():
        alone = torch.cat([encoder.encode_text([t]) for t in texts])
        batched = torch.cat([encoder.encode_text(texts[i : i + 16]) for i in range(0, len(texts), 16)])
        drift = float((alone - batched).abs().max())
        one, many = (statistics.median(timings[precision, b]) for b in BATCHES)
        print(f"| {precision} | {one:.2f} | {many:.2f} | {one / base[1]:.2f} | {many / base[16]:.2f} | {drift:.1e} |")


if __name__ == "__main__":
    main()
