"""What a reduced query precision costs in retrieval: R@1 and top-10 agreement with float32 queries.

    python bench/text_precision.py --checkpoint demo --data /tmp/tvr-demo-quality/fresh

Clips are embedded once (float32); captions are embedded at float32, bfloat16 and int8
(``TVR_TEXT_DTYPE``), one caption per call (as a lone query) and in batches of 64 (the same embeddings:
a text's embedding does not depend on its batch). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from model import load_encoder
from model.text_inference import TEXT_PRECISIONS
from model.train.data import ClipFrames
from model.train.datasets import RetrievalSet, load_pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--data", type=Path, required=True, help="a captions.jsonl folder (tvr synth layout)")
    args = parser.parse_args(argv)

    data = RetrievalSet.from_pairs(load_pairs("jsonl", args.data, "test"))
    encoders = {p: load_encoder(args.checkpoint, text_precision=p) for p in TEXT_PRECISIONS}
    exact = encoders["float32"]
    frames = ClipFrames(data.clips, exact.num_frames, exact.preprocess)
    video = torch.cat(
        [
            exact.encode_video(torch.stack([frames[i] for i in range(b, min(b + 16, len(frames)))]))
            for b in range(0, len(frames), 16)
        ]
    )
    gold = np.asarray(data.caption_clip)
    reference = None
    print("| query precision | captions per call | t2v R@1 | R@5 | top-10 agreement with float32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for precision, encoder in encoders.items():
        for batch in (1, 64):
            text = torch.cat(
                [encoder.encode_text(data.captions[i : i + batch]) for i in range(0, len(data.captions), batch)]
            )
            sim = (text @ video.T).numpy()
            rank = (sim > sim[np.arange(len(gold)), gold][:, None]).sum(1)
            top = np.argsort(-sim, axis=1)[:, :10]
            reference = top if reference is None else reference
            agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, reference, strict=True)])
            r1, r5 = 100 * np.mean(rank == 0), 100 * np.mean(rank < 5)
            print(f"| {precision} | {batch} | {r1:.1f} | {r5:.1f} | {agree:.3f} |")


if __name__ == "__main__":
    main()
