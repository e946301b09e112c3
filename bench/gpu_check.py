"""CUDA checks and measurements of the encoder and its training, in one run on a lent GPU machine.

    bash bench/gpu_check.sh                                            # on the machine (see that script)
    python3 bench/gpu_check.py --device cpu --quick --out /tmp/gpu-smoke   # smoke test, anywhere

Sections, each timed and reported PASS, FAIL or SKIP with its numbers (all of them in OUT/gpu_check.json,
rewritten after every section): environment; the reference checkpoint's embeddings on the device;
CPU/device agreement of a ViT-B/32 encoder; text precisions on the device; training steps of the trainer's
model, optimizer, schedule, loss and precision on in-memory synthetic clips; video throughput against
frame-by-frame CLIP (bench/encoder.py); query latency; a profile of one call; and (section i) the encoder
against CLIP at batch 8 and 32 in bfloat16 with CUDA graphs for both, beside the eager calls, plus the
Encoder's own graph path (``Encoder(cuda_graphs=True)``, a smaller batch padded) against its eager path.
Needs no video files, PyAV, FAISS, database or service. A section that fails does not stop the others; past
``--time-limit`` the rest are skipped. A Markdown summary comes last. ``--quick`` uses tiny models and few
steps, for a CPU, where graphs run as an eager stand-in (``model.encoder.eager_capture``).

    bash bench/gpu_check.sh --sections a i h      # only the graph comparison (and the profile): about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.encoder import (  # noqa: E402
    baseline_clip,
    bench_model,
    encode_video_fp32,
    measure_video,
    seconds_per_call,
    synchronize,
    video_functions,
)
from model import Encoder, add_config, get_config, load_encoder, preprocess_frames, tokenize  # noqa: E402
from model.encoder import BatchGraphs, DualAttentionCLIP, eager_capture  # noqa: E402
from model.text_inference import compact_text_tower  # noqa: E402
from model.train.partial_captions import clip_keys  # noqa: E402
from model.train.synth import FPS, draw_scenes, render_scene  # noqa: E402
from model.train.trainer import (  # noqa: E402
    TrainConfig,
    _build_model,
    _optimizer,
    _schedule,
    build_parser,
    config_from_args,
    optimizer_step,
    pair_loss,
)
from model.train.twins import add_motion_twins  # noqa: E402
from model.video import sample_times  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "reference-tiny"
# tests/test_encoder_reference.py's bars: minimum cosine and maximum distance of unit embeddings
REFERENCE_MIN_COS, REFERENCE_MAX_ERR = 0.9999, 1e-4
AGREEMENT_MIN_COS = 0.999  # float32 on the device against float32 on the CPU
OVERFIT_RATIO = 0.8  # the last 3 losses of 30 steps on a fixed demo batch, against the first (CPU fp32: 0.67)
RANDOM_B32 = "ViT-B-32-random"  # ViT-B-32 with random backbone weights (nothing to download)

Outcome = tuple[str, str, dict[str, Any]]  # status, one-line summary, numbers


@dataclasses.dataclass
class Check:
    """What every section gets: the device, the size of the run, and the time guard."""

    device: torch.device
    quick: bool
    deadline: float

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def model(self) -> str:
        """The encoder config the encoder sections use."""
        return "tiny" if self.quick else "ViT-B-32"

    def expired(self) -> bool:
        return time.monotonic() > self.deadline


@dataclasses.dataclass
class Result:
    section: str
    status: str
    summary: str
    seconds: float
    numbers: dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------------------
def min_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest row-wise cosine of two (N, E) embedding matrices."""
    return float(F.cosine_similarity(a.detach().float().cpu(), b.detach().float().cpu(), dim=-1).min())


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest row-wise distance of two (N, E) unit-embedding matrices."""
    return float((a.detach().float().cpu() - b.detach().float().cpu()).norm(dim=-1).max())


def encode_text_fp32(encoder: Encoder, texts: list[str]) -> torch.Tensor:
    """``encoder.encode_text`` through the model's own tower without the bfloat16 autocast it has on CUDA."""
    ids = tokenize(texts, encoder.config.method.max_words).to(encoder.device)
    with torch.inference_mode():
        return F.normalize(encoder.model.encode_text(ids).float(), dim=-1)


def tf32_flags() -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name, read in (
        ("matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32),
        ("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32),
        ("float32_matmul_precision", torch.get_float32_matmul_precision),
    ):
        try:
            flags[name] = read()
        except Exception as exc:  # the flags' API moves between torch releases
            flags[name] = f"unreadable: {exc}"
    return flags


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions on or off, restored afterwards."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def free_memory(device: torch.device) -> None:
    """Collect garbage and start a new peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def queries(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct search queries of about ten words, from the synthetic world's vocabulary."""
    return [f"a {s.colour} {s.shape} {s.motion} on a {s.background} background" for s in draw_scenes(count, seed)]


def synthetic_batch(count: int, num_frames: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """(count, T, 3, S, S) CLIP-normalised frames of distinct synthetic scenes and their captions, in memory.

    Frames are picked at the times ``read_clip`` samples (uniform), from the clip ``tvr synth`` would encode.
    """
    clips, captions = [], []
    for index, scene in enumerate(draw_scenes(count, seed)):
        video = render_scene(scene, image_size, np.random.default_rng([seed, index]))
        picks = [min(len(video) - 1, int(t * FPS)) for t in sample_times(0.0, len(video) / FPS, num_frames)]
        clips.append(preprocess_frames(video[picks], image_size))
        captions.append(scene.caption)
    return torch.stack(clips), captions


def get_image_size(config_name: str) -> int:
    """The input size of an encoder config's backbone, without building it."""
    arch = get_config(config_name).backbone.arch
    if isinstance(arch, dict):
        return int(arch["vision_cfg"]["image_size"])
    import open_clip

    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


# --- training: the trainer's parts around one step -----------------------------------------------------------
def train_config(recipe: str, device: torch.device, *flags: str) -> TrainConfig:
    """A recipe as ``tvr train --recipe RECIPE FLAGS`` would read it."""
    return config_from_args(build_parser().parse_args(["--recipe", recipe, "--device", str(device), *flags]))


def train_step(
    model: DualAttentionCLIP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    frames: torch.Tensor,
    captions: list[str],
    twins: torch.Tensor | None,
) -> float:
    """One optimizer step as ``trainer.train`` takes it on one process (bf16 autocast on CUDA); the loss."""
    device = frames.device
    ids = tokenize(captions, model.config.method.max_words).to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        video, text = model(frames, ids)
        keys = clip_keys(captions)
        loss = pair_loss(video, text, model.logit_scale, keys, keys, twins, cfg)
    loss.backward()
    optimizer_step(model, optimizer, scheduler, cfg.grad_clip)
    return loss.item()


def run_steps(
    cfg: TrainConfig, frames: torch.Tensor, captions: list[str], twins: torch.Tensor | None, steps: int, warmup: int
) -> dict[str, Any]:
    """``steps`` steps of a fresh model of ``cfg`` on one fixed batch: losses, steps/s after ``warmup``, memory."""
    device = frames.device
    free_memory(device)
    model = _build_model(cfg).to(device).train()
    optimizer = _optimizer(model, cfg)
    scheduler = _schedule(optimizer, steps, cfg.warmup)
    losses, times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, scheduler, cfg, frames, captions, twins))  # .item() syncs
        times.append(time.perf_counter() - start)
    timed = times[warmup:] or times
    result = {
        "model": cfg.model,
        "batch": frames.shape[0],
        "frames": list(frames.shape[1:]),
        "trainable": model.config.method.trainable,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "steps": steps,
        "losses": losses,
        "steps_s": len(timed) / sum(timed),
        "pairs_s": frames.shape[0] * len(timed) / sum(timed),
        "peak_gib": peak_gib(device),
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
    }
    del model, optimizer, scheduler
    free_memory(device)
    return result


# --- sections ------------------------------------------------------------------------------------------------
def section_environment(check: Check) -> Outcome:
    import open_clip

    numbers: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "numpy": np.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(),
        **tf32_flags(),
    }
    try:
        import torchvision

        numbers["torchvision"] = torchvision.__version__
    except Exception as exc:
        numbers["torchvision"] = f"missing: {exc}"
    if not check.cuda:
        numbers["device_name"] = platform.processor() or platform.machine()
        torch.zeros(1, device=check.device)
        return "PASS", f"{check.device} ({numbers['device_name']}), torch {torch.__version__}", numbers
    props = torch.cuda.get_device_properties(check.device)
    numbers.update(
        device_name=props.name,
        capability=".".join(map(str, torch.cuda.get_device_capability(check.device))),
        memory_gib=props.total_memory / 2**30,
        multiprocessors=props.multi_processor_count,
        bf16_supported=torch.cuda.is_bf16_supported(),
    )
    torch.ones(1, device=check.device).add_(1)
    synchronize(check.device)
    summary = (
        f"{props.name} sm_{numbers['capability']}, {numbers['memory_gib']:.0f} GiB, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, tf32 matmul={numbers['matmul_allow_tf32']} cudnn={numbers['cudnn_allow_tf32']}"
    )
    return "PASS", summary, numbers


def section_reference(check: Check) -> Outcome:
    """The reference checkpoint on the device, float32 (TF32 off) against the reference's outputs."""
    meta = json.loads((REFERENCE / "meta.json").read_text())
    inputs, expected = np.load(REFERENCE / "inputs.npz"), np.load(REFERENCE / "expected.npz")
    encoder = load_encoder(str(REFERENCE / "checkpoint.pth"), device=check.device)
    frames = torch.from_numpy(inputs["frames"])
    want_video = F.normalize(torch.from_numpy(expected["video"]), dim=-1)
    want_text = F.normalize(torch.from_numpy(expected["text"]), dim=-1)

    def compare(video: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
        return {
            "video_min_cos": min_cos(video, want_video),
            "text_min_cos": min_cos(text, want_text),
            "video_max_err": max_err(video, want_video),
            "text_max_err": max_err(text, want_text),
        }

    captions = meta["captions"]
    with tf32(False):
        strict = compare(encode_video_fp32(encoder, frames), encode_text_fp32(encoder, captions))
    numbers = {"fp32_tf32_off": strict}
    if check.cuda:
        with tf32(True):
            numbers["fp32_tf32_on"] = compare(encode_video_fp32(encoder, frames), encode_text_fp32(encoder, captions))
    # the Encoder's own path: bfloat16 autocast on CUDA (exact float32 on the CPU)
    numbers["encoder_path"] = compare(encoder.encode_video(frames), encoder.encode_text(captions))
    ok = (
        min(strict["video_min_cos"], strict["text_min_cos"]) >= REFERENCE_MIN_COS
        and max(strict["video_max_err"], strict["text_max_err"]) < REFERENCE_MAX_ERR
    )
    path = numbers["encoder_path"]
    summary = (
        f"fp32 max err video {strict['video_max_err']:.1e} text {strict['text_max_err']:.1e} "
        f"(bar {REFERENCE_MAX_ERR:.0e}); Encoder path{' (bf16 autocast)' if check.cuda else ''} min cos "
        f"video {path['video_min_cos']:.5f} text {path['text_min_cos']:.5f}"
    )
    if "fp32_tf32_on" in numbers:
        on = numbers["fp32_tf32_on"]
        summary += f"; tf32 on: max err {max(on['video_max_err'], on['text_max_err']):.1e}"
    return ("PASS" if ok else "FAIL"), summary, numbers


def section_agreement(check: Check) -> Outcome:
    """A random ViT-B/32 encoder: 2 clips and 4 texts on the CPU and on the device, float32."""
    model = bench_model(check.model)
    cpu = Encoder(model, "bench", "cpu")
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(2, cpu.num_frames, 3, cpu.image_size, cpu.image_size, generator=generator)
    texts = queries(4)
    want_video, want_text = cpu.encode_video(frames), cpu.encode_text(texts)
    device = Encoder(model, "bench", check.device)  # moves the (already folded) model
    numbers: dict[str, Any] = {"model": check.model, **tf32_flags()}

    def cosines(video: torch.Tensor, text: torch.Tensor) -> dict[str, float]:
        return {"video_min_cos": min_cos(video, want_video), "text_min_cos": min_cos(text, want_text)}

    numbers["fp32"] = cosines(encode_video_fp32(device, frames), encode_text_fp32(device, texts))
    if check.cuda:
        with tf32(True):
            numbers["fp32_tf32_on"] = cosines(encode_video_fp32(device, frames), encode_text_fp32(device, texts))
    numbers["encoder_path"] = cosines(device.encode_video(frames), device.encode_text(texts))
    fp32 = numbers["fp32"]
    ok = min(fp32.values()) > AGREEMENT_MIN_COS
    summary = (
        f"{check.model} fp32 min cos video {fp32['video_min_cos']:.6f} text {fp32['text_min_cos']:.6f} "
        f"(tf32 matmul {numbers['matmul_allow_tf32']}); Encoder path min cos "
        f"{min(numbers['encoder_path'].values()):.5f}"
    )
    if "fp32_tf32_on" in numbers:
        summary += f"; tf32 on {min(numbers['fp32_tf32_on'].values()):.5f}"
    if not check.cuda:
        summary = "cpu against cpu (smoke only): " + summary
    return ("PASS" if ok else "FAIL"), summary, numbers


def section_text_precision(check: Check) -> Outcome:
    """compact_text_tower at float32 and bfloat16 on the device against the CPU's float32; int8 refused there."""
    model = bench_model(check.model)
    cpu = Encoder(model, "bench", "cpu")
    texts = queries(16)
    want = cpu.encode_text(texts)
    ids = tokenize(texts, cpu.config.method.max_words).to(check.device)
    numbers: dict[str, Any] = {"model": check.model}
    for precision in ("float32", "bfloat16"):
        tower = compact_text_tower(model.clip, precision, check.device)
        with torch.inference_mode():
            numbers[f"{precision}_min_cos"] = min_cos(F.normalize(tower(ids).float(), dim=-1), want)
    numbers["encoder_float32_min_cos"] = min_cos(Encoder(model, "bench", check.device).encode_text(texts), want)
    ok = numbers["float32_min_cos"] > AGREEMENT_MIN_COS
    if check.cuda:
        try:
            Encoder(model, "bench", check.device, text_precision="int8")
            numbers["int8_on_device"] = "accepted (expected ValueError)"
            ok = False
        except ValueError as exc:
            numbers["int8_on_device"] = f"ValueError: {exc}"
        print(f"int8 on {check.device}: {numbers['int8_on_device']}")
        int8 = "int8 refused" if "ValueError" in numbers["int8_on_device"] else "int8 NOT refused"
    else:
        int8 = "int8 check SKIP on cpu"
    summary = (
        f"min cos float32 {numbers['float32_min_cos']:.6f}, bfloat16 {numbers['bfloat16_min_cos']:.5f}, "
        f"Encoder float32{' (autocast)' if check.cuda else ''} {numbers['encoder_float32_min_cos']:.5f}; {int8}"
    )
    return ("PASS" if ok else "FAIL"), summary, numbers


def section_training(check: Check) -> Outcome:
    """Overfit a fixed batch with the demo recipe; speed of the demo recipe and of ViT-B/32 adapter training."""
    device = check.device
    # (i) the demo recipe: its model, batch (half sampled clips, half motion twins) and optimizer
    demo = train_config("demo", device, *(["--batch-size", "8"] if check.quick else []))
    steps = 6 if check.quick else 30
    method = get_config(demo.model).method
    per_clip = 2 if demo.motion_twins else 1
    frames, captions = synthetic_batch(demo.batch_size // per_clip, method.num_frames, get_image_size(demo.model))
    twins = None
    if demo.motion_twins:
        frames, captions = add_motion_twins(frames, captions, np.random.default_rng(demo.seed))
        half = len(captions) // 2
        twins = torch.tensor([(i, i + half) for i in range(half) if captions[i] != captions[i + half]])
    numbers: dict[str, Any] = {"demo": run_steps(demo, frames.to(device), captions, twins, steps, warmup=3)}
    losses = numbers["demo"]["losses"]
    first, last = losses[0], statistics.mean(losses[-3:])
    bar = 0.95 if check.quick else OVERFIT_RATIO
    ok = last < bar * first
    summary = (
        f"demo loss {first:.3f} -> {last:.3f} in {steps} steps (bar x{bar}), {numbers['demo']['steps_s']:.1f} steps/s "
        f"(batch {numbers['demo']['batch']}), peak {fmt(numbers['demo']['peak_gib'])} GiB"
    )

    # (ii) ViT-B/32 adapter training (the msrvtt recipe's trainable groups and optimizer), random frames
    if check.expired():
        return ("PASS" if ok else "FAIL"), summary + "; ViT-B-32 SKIP (time guard)", numbers
    if check.quick:
        big = train_config("msrvtt", device, "--model", "tiny", "--batch-size", "4")
    else:
        data = get_config("ViT-B-32").to_dict()
        data["backbone"]["pretrained"] = None
        add_config(RANDOM_B32, data)
        big = train_config("msrvtt", device, "--model", RANDOM_B32, "--batch-size", "32")
    big = dataclasses.replace(big, pretrained=None)
    method = get_config(big.model).method
    generator = torch.Generator().manual_seed(0)
    size = get_image_size(big.model)
    frames = torch.randn(big.batch_size, method.num_frames, 3, size, size, generator=generator)
    run = run_steps(big, frames.to(device), [s.caption for s in draw_scenes(big.batch_size, 1)], None, 13, warmup=3)
    numbers["vit_b32" if not check.quick else "tiny_adapter"] = run
    summary += (
        f"; {big.model} adapter batch {run['batch']}x{method.num_frames}x{size}px {run['steps_s']:.2f} steps/s "
        f"({run['pairs_s']:.0f} clips/s), peak {fmt(run['peak_gib'])} GiB, {run['precision']}"
    )
    return ("PASS" if ok else "FAIL"), summary, numbers


def section_throughput(check: Check) -> Outcome:
    """bench/encoder.py's measurement on the device: tvr against frame-by-frame CLIP, fp32 and bf16."""
    model = bench_model(check.model)
    baseline = baseline_clip(model).to(check.device).eval()
    encoder = Encoder(model, "bench", check.device)
    batches = [1, 2] if check.quick else [1, 8, 32]
    precisions = ["fp32", "bf16"] if check.cuda else ["fp32"]
    rows, skipped = [], []
    print("| precision | batch | tvr videos/s | CLIP frame-by-frame videos/s | time ratio | FLOPs ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for precision in precisions:
        for batch in batches:
            if check.expired():
                skipped.append(f"{precision}/{batch}")
                continue
            row = measure_video(
                encoder, baseline, batch, 2 if check.quick else 10, precision, flops=precision == "fp32"
            )
            rows.append(row)
            print(
                f"| {precision} | {batch} | {row['tvr_videos_s']:.1f} | {row['clip_videos_s']:.1f} "
                f"| {row['time_ratio']:.3f} | {fmt(row['flops_ratio'], '.3f')} |",
                flush=True,
            )
    parts = [f"{r['precision']} b{r['batch']} {r['tvr_videos_s']:.0f}/{r['clip_videos_s']:.0f}" for r in rows]
    summary = f"{check.model} videos/s tvr/CLIP: " + ", ".join(parts)
    if skipped:
        summary += f"; SKIP {' '.join(skipped)} (time guard)"
    return "PASS", summary, {"model": check.model, "rows": rows, "skipped": skipped, **tf32_flags()}


def section_latency(check: Check) -> Outcome:
    """Median ms of Encoder.encode_text for 1 and 16 queries at float32 and bfloat16 text precision."""
    model = bench_model(check.model)
    calls = 5 if check.quick else 50
    numbers: dict[str, Any] = {"model": check.model, "calls": calls}
    for precision in ("float32", "bfloat16"):
        encoder = Encoder(model, "bench", check.device, text_precision=precision)
        for count in (1, 16):
            texts = queries(count, seed=2)

            def encode(encoder: Encoder = encoder, texts: list[str] = texts) -> torch.Tensor:
                return encoder.encode_text(texts)

            for _ in range(5):
                encode()
            numbers[f"{precision}_x{count}_ms"] = 1000 * statistics.median(
                seconds_per_call(encode, calls, check.device)
            )
    summary = ", ".join(
        f"{k.removesuffix('_ms').replace('_x', ' x')} {v:.2f} ms" for k, v in numbers.items() if "ms" in k
    )
    if check.cuda:
        summary += " (float32 = model tower under bf16 autocast on CUDA)"
    return "PASS", summary, numbers


def _profile(fn: Callable[[], object], device: torch.device, calls: int) -> dict[str, Any]:
    """Per call of ``fn``: device kernels launched, device-busy ms, wall ms, and the top kernels by time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for _ in range(3):
        fn()
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    events = [e for e in prof.events() if e.device_type == kind]
    busy_us = sum(getattr(e, "self_device_time_total", 0) if cuda else e.self_cpu_time_total for e in events)
    by_name: dict[str, float] = {}
    for e in events:
        by_name[e.name] = by_name.get(e.name, 0.0) + (e.device_time_total if cuda else e.self_cpu_time_total)
    top = sorted(by_name.items(), key=lambda item: -item[1])[:6]
    wall = statistics.median(seconds_per_call(fn, max(calls, 5), device))
    # matrix-product kernels by name, with their launches and ms per call: a float32 one under autocast
    # (e.g. sm80_xmma_gemm_f32f32) is a product that escaped it
    counts: dict[str, int] = {}
    for e in events:
        counts[e.name] = counts.get(e.name, 0) + 1
    products = {
        name[:90]: (counts[name] / calls, round(by_name[name] / calls / 1000, 3))
        for name in by_name
        if any(word in name.lower() for word in ("gemm", "matmul", "addmm", "bmm", "conv", "attention", "fmha"))
    }
    return {
        "kernels_per_call": len(events) / calls,
        "busy_ms_per_call": busy_us / calls / 1000,
        "wall_ms_per_call": 1000 * wall,
        "top": [(name[:60], round(us / calls / 1000, 3)) for name, us in top],
        "products": products,
    }


def _graph_replay(fn: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, calls: int) -> dict[str, Any]:
    """``fn(frames)`` captured as one CUDA graph: ms per replay and its agreement with the eager call."""
    static = frames.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)
    graph.replay()
    eager = fn(frames)
    replay = statistics.median(seconds_per_call(graph.replay, calls, frames.device))
    return {"graph_ms_per_call": 1000 * replay, "graph_min_cos": min_cos(out.float(), eager.float())}


def section_video_profile(check: Check) -> Outcome:
    """Why the encoder is slower than frame-by-frame CLIP on the device: kernels per call and device-busy
    time against wall time (bf16 autocast, batch 8), and what one CUDA graph of the call takes."""
    model = bench_model(check.model)
    baseline = baseline_clip(model).to(check.device).eval()
    encoder = Encoder(model, "bench", check.device)
    batch = 2 if check.quick else 8
    frames = torch.randn(batch, encoder.num_frames, 3, encoder.image_size, encoder.image_size, device=check.device)
    ours, theirs = video_functions(encoder, baseline, frames, "bf16" if check.cuda else "fp32")
    calls = 2 if check.quick else 5
    numbers: dict[str, Any] = {"batch": batch, "tvr": _profile(ours, check.device, calls)}
    numbers["clip"] = _profile(theirs, check.device, calls)
    for name in ("tvr", "clip"):
        print(f"{name}: {json.dumps(numbers[name])}", flush=True)
    if check.cuda:
        try:
            numbers["tvr"].update(_graph_replay(encoder.encode_video, frames, 20))
        except Exception as exc:  # what stops a capture (a host sync, a data-dependent shape) is the finding
            numbers["tvr"]["graph_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    t, c = numbers["tvr"], numbers["clip"]
    summary = (
        f"b{batch}: tvr {t['kernels_per_call']:.0f} kernels, busy {t['busy_ms_per_call']:.2f} of "
        f"{t['wall_ms_per_call']:.2f} ms; CLIP {c['kernels_per_call']:.0f} kernels, busy "
        f"{c['busy_ms_per_call']:.2f} of {c['wall_ms_per_call']:.2f} ms"
    )
    if "graph_ms_per_call" in t:
        summary += f"; tvr as a CUDA graph {t['graph_ms_per_call']:.2f} ms (min cos {t['graph_min_cos']:.5f})"
    elif "graph_error" in t:
        summary += f"; graph capture failed: {t['graph_error'][:120]}"
    return "PASS", summary, numbers


def section_graphs(check: Check) -> Outcome:
    """tvr against frame-by-frame CLIP at batch 8 and 32, bf16 autocast, each eager and as CUDA graphs (both
    sides alike); and the Encoder's own graph path against its eager path, a smaller batch padded."""
    model = bench_model(check.model)
    baseline = baseline_clip(model).to(check.device).eval()
    encoder = Encoder(model, "bench", check.device)
    precision = "bf16" if check.cuda else "fp32"
    batches = [2, 3] if check.quick else [8, 32]
    repeats = 3 if check.quick else 30
    numbers: dict[str, Any] = {"model": check.model, "precision": precision, "repeats": repeats, "rows": []}
    print("| batch | mode | tvr videos/s | CLIP frame-by-frame videos/s | time ratio (tvr / CLIP) | pair ratio |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    skipped: list[str] = []
    failed: list[str] = []
    for batch in batches:
        for graphs in (False, True):
            if check.expired():
                skipped.append(f"b{batch}{' graphs' if graphs else ''}")
                continue
            try:
                row = measure_video(encoder, baseline, batch, repeats, precision, flops=False, graphs=graphs)
            except Exception as exc:  # a capture that fails (a host sync, say) is a finding: keep the other rows
                traceback.print_exc()
                numbers.setdefault("errors", []).append(f"b{batch} graphs={graphs}: {type(exc).__name__}: {exc}")
                failed.append(f"b{batch}{' graphs' if graphs else ''}")
                free_memory(check.device)
                continue
            row["mode"] = ("CUDA graphs" if check.cuda else "graphs (eager stand-in)") if graphs else "eager"
            numbers["rows"].append({k: v for k, v in row.items() if k != "pair_ratios"})
            print(
                f"| {batch} | {row['mode']} | {row['tvr_videos_s']:.1f} | {row['clip_videos_s']:.1f} "
                f"| {row['time_ratio']:.3f} | {row['pair_ratio']:.3f} |",
                flush=True,
            )
            free_memory(check.device)
    # The Encoder's graph path: a full batch captures, a smaller one replays it padded; both against eager.
    size = 8
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(size, encoder.num_frames, 3, encoder.image_size, encoder.image_size, generator=generator)
    eager = encoder.encode_video(frames)
    if check.cuda:
        graphed = Encoder(model, "bench", check.device, cuda_graphs=True)
        run = graphed.encode_video
    else:
        run = BatchGraphs(lambda f: encoder.encode_video(f), eager_capture)
    full, padded = run(frames.to(check.device)), run(frames[: size - 3].to(check.device))
    numbers["encoder_graphs"] = {
        "batch": size,
        "padded_batch": size - 3,
        "full_min_cos": min_cos(full, eager),
        "padded_min_cos": min_cos(padded, eager[: size - 3]),
        "padded_vs_full_max_err": max_err(padded, full[: size - 3]),
    }
    graph = numbers["encoder_graphs"]
    ok = min(graph["full_min_cos"], graph["padded_min_cos"]) > AGREEMENT_MIN_COS and not failed
    parts = [f"b{r['batch']} {r['mode'].split()[0]} {r['time_ratio']:.3f}" for r in numbers["rows"]]
    summary = (
        f"{check.model} {precision} time ratio tvr/CLIP: " + ", ".join(parts) + f"; Encoder graphs vs eager min cos "
        f"{min(graph['full_min_cos'], graph['padded_min_cos']):.5f} (padded {size - 3} in {size})"
    )
    if skipped:
        summary += f"; SKIP {' '.join(skipped)} (time guard)"
    if failed:
        summary += f"; FAILED {' '.join(failed)} (see errors)"
    numbers["skipped"] = skipped
    return ("PASS" if ok else "FAIL"), summary, numbers


SECTIONS: list[tuple[str, Callable[[Check], Outcome]]] = [
    ("a environment", section_environment),
    ("b reference", section_reference),
    ("c cpu vs device", section_agreement),
    ("d text precision", section_text_precision),
    ("e training", section_training),
    ("f video throughput", section_throughput),
    ("g query latency", section_latency),
    ("h video profile", section_video_profile),
    ("i graphs", section_graphs),
]


# --- the run -------------------------------------------------------------------------------------------------
def run(
    check: Check, sections: list[tuple[str, Callable[[Check], Outcome]]], out: Path | None, args: dict[str, Any]
) -> list[Result]:
    results: list[Result] = []
    started = time.monotonic()
    for name, function in sections:
        print(f"\n=== {name}", flush=True)
        if check.expired():
            results.append(Result(name, "SKIP", "time guard: past --time-limit", 0.0, {}))
            print("SKIP (time guard)", flush=True)
            continue
        start = time.monotonic()
        try:
            status, summary, numbers = function(check)
        except Exception as exc:
            traceback.print_exc()
            status, summary, numbers = "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:160], {}
        with contextlib.suppress(Exception):
            free_memory(check.device)
        results.append(Result(name, status, summary, time.monotonic() - start, numbers))
        print(f"{status} ({results[-1].seconds:.1f} s): {summary}", flush=True)
        if out is not None:
            write_json(out, args, results, time.monotonic() - started)
    return results


def write_json(out: Path, args: dict[str, Any], results: list[Result], seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": args, "total_s": seconds, "sections": [dataclasses.asdict(r) for r in results]}
    (out / "gpu_check.json").write_text(json.dumps(record, indent=1, default=str) + "\n")


def print_summary(results: list[Result], seconds: float) -> None:
    print(f"\n## gpu_check summary ({seconds:.0f} s)\n")
    print("| section | result | key numbers | s |")
    print("| --- | --- | --- | ---: |")
    for r in results:
        print(f"| {r.section} | {r.status} | {r.summary.replace('|', '/')} | {r.seconds:.1f} |")
    failed = [r.section for r in results if r.status == "FAIL"]
    print(f"\n{'FAILED: ' + ', '.join(failed) if failed else 'no failures'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (a CPU smoke test)")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json")
    parser.add_argument("--time-limit", type=float, default=360.0, help="seconds after which sections are skipped")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, 1 with --quick)")
    parser.add_argument("--sections", nargs="+", help="run only these sections, by letter (a b ...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or (1 if args.quick else torch.get_num_threads()))
    torch.manual_seed(0)
    start = time.monotonic()
    check = Check(torch.device(args.device), args.quick, start + args.time_limit)
    options = {k: str(v) for k, v in vars(args).items()}
    print(f"# gpu_check: device {args.device}, quick {args.quick}, time limit {args.time_limit:.0f} s", flush=True)
    sections = [(n, f) for n, f in SECTIONS if not args.sections or n.split()[0] in args.sections]
    results = run(check, sections, args.out, options)
    print_summary(results, time.monotonic() - start)
    return 1 if any(r.status == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
