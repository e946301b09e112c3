"""Text encoding per query of two or more checkpoints, in the same run (issue 15: a new demo checkpoint may
cost at most 1.5x the previous one's per query).

    python bench/demo_text_cost.py --checkpoint new=demo --checkpoint previous=/path/to/old/demo

Each checkpoint encodes the same 200 demo-vocabulary queries one per call, on one thread; the passes
alternate between checkpoints; prints the median milliseconds per query of 5 passes and the ratio of each
to the first checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model import load_encoder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=SOURCE (repeatable)")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    encoders = {name: load_encoder(source) for name, _, source in (s.partition("=") for s in args.checkpoint)}
    queries = [f"a red circle moves to the right {i}" for i in range(200)]
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.passes):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            for query in queries:
                encoder.encode_text([query])
            times[name].append((time.perf_counter() - start) / len(queries) * 1e3)
    medians = {name: statistics.median(t) for name, t in times.items()}
    first = next(iter(medians.values()))
    print("| checkpoint | ms per query | x first |\n| --- | ---: | ---: |")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.3f} | {ms / first:.2f} |")


if __name__ == "__main__":
    main()
