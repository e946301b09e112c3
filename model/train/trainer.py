"""``tvr train``: adapter (or from-scratch) training with symmetric InfoNCE, on one process or many.

    python -m model.train.trainer --recipe demo --data-root DIR       # one process
    torchrun --nproc-per-node 8 -m model.train.trainer --recipe msrvtt --data-root DIR

``main(argv)`` takes the argument list, so tests run a few steps on the CPU. Every option can come from a
recipe file (``model/train/recipes/NAME.json`` or a path); command-line flags override it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.calibration import CalibrationError
from model.checkpoint import create_model, load_model, save_checkpoint, write_calibration
from model.encoder import DualAttentionCLIP
from model.text_tower import tokenize

from .data import CachedFrames, ClipFrames, PairData, ShardedBatches
from .datasets import RetrievalSet, load_pairs
from .evaluate import calibrate, evaluate
from .loss import query_loss, symmetric_infonce, twin_separation
from .partial_captions import clip_keys, shorten_captions, shortened_queries
from .twins import add_motion_twins

log = logging.getLogger(__name__)
RECIPES = Path(__file__).parent / "recipes"
STATE_FILE = "trainer_state.pt"


def _opt(default: Any, help: str) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run depends on; a recipe file sets any subset."""

    model: str = _opt("tiny", "encoder config name or JSON file (model/configs)")
    init: str | None = _opt(None, "start from this checkpoint (any load_encoder source) instead of a fresh model")
    pretrained: str | None = _opt(None, "backbone weights for a fresh model: open_clip tag or local file")
    method: dict = _opt({}, "method options overriding the model config, as JSON (e.g. temporal_embedding)")
    layout: str = _opt("jsonl", "dataset layout (jsonl, csv, msrvtt, didemo, activitynet, lsmdc, msvd)")
    data_root: str = _opt("", "dataset folder (or annotation file for jsonl/csv)")
    data_options: dict = _opt({}, "layout options as JSON (videos_dir, val_fraction, ...)")
    val_split: str | None = _opt("val", "split used to choose the best checkpoint ('none' to skip); never test")
    sampling: str = _opt("uniform", "frame sampling: uniform over the clip, or fps1 (the reference's)")
    trainable: list | None = _opt(None, "groups to train (lora prompts temporal all); default: the config's")
    batch_size: int = _opt(32, "global batch per optimizer step (all processes together)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step (negatives come from each micro-batch)")
    lr: float = _opt(6e-4, "peak learning rate (AdamW)")
    weight_decay: float = _opt(0.2, "AdamW weight decay on matrices (none on vectors)")
    epochs: float = _opt(5.0, "training length in epochs (unless max_steps)")
    max_steps: int | None = _opt(None, "training length in optimizer steps; overrides epochs")
    warmup: float = _opt(0.1, "fraction of the steps with linear warm-up before the cosine decay")
    grad_clip: float = _opt(1.0, "gradient-norm clipping (0 disables)")
    seed: int = _opt(0, "seed of the initialisation and the data order")
    workers: int = _opt(2, "DataLoader decoding processes per training process")
    cache_frames: bool = _opt(False, "decode every clip once and keep it in memory (small datasets)")
    motion_twins: bool = _opt(False, "pair every clip in its batch with a reversed/mirrored twin (tvr synth data)")
    twin_separation: float = _opt(0.0, "weight of a hinge keeping twins apart in each tower (loss.twin_separation)")
    twin_margin: float = _opt(1.0, "distance of unit embeddings below which twins are pushed apart (1: cosine 0.5)")
    partial_captions: float = _opt(0.0, "fraction of tvr synth captions shortened as users type them")
    partial_queries: float = _opt(
        0.0, "shortened tvr synth captions added as text-to-video queries, per caption of a micro-batch"
    )
    temporal_init: float = _opt(0.1, "std of the temporal table of a model trained from scratch ('all')")
    eval_every: int = _opt(0, "steps between validations (0: once per epoch)")
    save_every: int = _opt(0, "steps between numbered checkpoints (0: only last and best)")
    stop_at_step: int | None = _opt(None, "stop (saving 'last') at this step without ending the schedule")
    output: str = _opt("runs/tvr", "run folder: last/, best/, step_N/, metrics.jsonl")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    log_every: int = _opt(10, "steps between log lines")


@dataclass
class TrainState:
    """Where a run is, for an exact ``--resume``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    best_score: float = -1.0
    losses: list[float] = dataclasses.field(default_factory=list)


# --- configuration ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvr train", description="Train the dual-attention encoder.")
    parser.add_argument("--recipe", help="recipe name (model/train/recipes) or JSON file; flags override it")
    parser.add_argument("--resume", help="a run's last/ (or step_N/) folder to continue exactly")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
        elif f.type == "list | None":
            parser.add_argument(flag, nargs="+", default=None, help=f.metadata["help"])
        else:
            parser.add_argument(flag, default=None, help=f.metadata["help"])
    return parser


def load_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = RECIPES / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES.glob("*.json"))
        raise SystemExit(f"error: unknown recipe {name_or_path!r}; known: {', '.join(known)} or a .json path")
    return json.loads(path.read_text())


def _convert(f: dataclasses.Field, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    kind = str(f.type)
    if kind.startswith("dict"):
        return json.loads(value)
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("float"):
        return float(value)
    if f.name == "val_split" and value.lower() == "none":
        return None
    return value


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    values = dict(base or {})
    if args.recipe:
        values.update(load_recipe(args.recipe))
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = given
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - set(names)
    if unknown:
        raise SystemExit(f"error: unknown training options {sorted(unknown)}")
    return TrainConfig(**{k: _convert(names[k], v) for k, v in values.items()})


# --- distributed -------------------------------------------------------------------------------------------------
def _setup_distributed(device_opt: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device_opt == "auto":
        device_opt = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_opt)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# --- the run -----------------------------------------------------------------------------------------------------
def _build_model(cfg: TrainConfig) -> DualAttentionCLIP:
    torch.manual_seed(cfg.seed)
    if cfg.init:
        model = load_model(cfg.init, **cfg.method)
    else:
        model = create_model(cfg.model, pretrained=cfg.pretrained, **cfg.method)
    if cfg.trainable:
        model.config.method.trainable = list(cfg.trainable)
        model.set_trainable(model.config.method.trainable)
    if not cfg.init and "all" in model.config.method.trainable and model.temporal is not None:
        # From scratch, a zero table is a saddle: a clip and its reversal embed identically, so InfoNCE's
        # gradient between them cancels and the model never learns order. (Adapters on a pretrained backbone
        # keep zero: the model starts as the backbone.)
        with torch.no_grad():
            model.temporal.normal_(0.0, cfg.temporal_init)
    return model


def _optimizer(model: DualAttentionCLIP, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise SystemExit("error: nothing to train: the trainable groups select no parameters")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _schedule(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, round(total * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pair_loss(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    keys: torch.Tensor,
    wants: torch.Tensor,
    twins: torch.Tensor | None,
    cfg: TrainConfig,
    world: int = 1,
    queries: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The training loss of one micro-batch: symmetric InfoNCE where a caption matches every clip with the
    attributes it names (``partial_captions``: clip ``keys``, caption ``wants``), plus the separation of
    motion twins when the batch has them, plus half the text-to-video loss of the extra ``queries``
    (``partial_queries``: their embeddings and wanted keys) when there are some, which trains the text
    tower only."""
    loss = symmetric_infonce(video, text, logit_scale, keys, wants)
    if twins is not None and cfg.twin_separation > 0:  # local: / world undoes the x world of the backward pass
        loss = loss + cfg.twin_separation * twin_separation(video, text, twins, cfg.twin_margin) / world
    if queries is not None:  # the clips are constants here: short queries must not blur what the clips show
        loss = loss + 0.5 * query_loss(video.detach(), queries[0], logit_scale, keys, queries[1])
    return loss


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> None:
    """Clip the trainable parameters' gradient norm (when ``grad_clip`` > 0), step, schedule, clear."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _save(path: Path, model: DualAttentionCLIP, extra: dict[str, Any] | None) -> None:
    """Write a checkpoint folder atomically: a temp folder renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp)
    if extra is not None:
        torch.save(extra, tmp / STATE_FILE)
    old = path.with_name(path.name + ".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def train(cfg: TrainConfig, resume: str | None = None) -> TrainState:
    rank, world, device = _setup_distributed(cfg.device)
    main_process = rank == 0
    out = Path(cfg.output)
    model = load_model(resume) if resume else _build_model(cfg)
    model.calibration = None  # training changes the scores: fitted again at the end
    if resume and cfg.trainable:
        model.set_trainable(list(cfg.trainable))
    model.to(device).train()
    method = model.config.method

    pairs = load_pairs(cfg.layout, cfg.data_root, "train", **cfg.data_options)
    clips = ClipFrames(list(dict.fromkeys(p.clip for p in pairs)), method.num_frames, model.preprocess, cfg.sampling)
    frames = CachedFrames(clips, workers=cfg.workers) if cfg.cache_frames else clips
    dataset = PairData(pairs, frames=frames)
    per_clip = 2 if cfg.motion_twins else 1  # batch rows per sampled pair
    if cfg.batch_size % (cfg.grad_accum * per_clip):
        raise SystemExit(
            f"error: batch size {cfg.batch_size} must be a multiple of grad_accum {cfg.grad_accum}"
            + (" times 2 (motion twins)" if cfg.motion_twins else "")
        )
    sampler = ShardedBatches(len(dataset), cfg.batch_size // cfg.grad_accum // per_clip, rank, world, cfg.seed)
    steps_per_epoch = sampler.batches_per_epoch() // cfg.grad_accum
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    val = None
    if cfg.val_split and main_process:
        val = RetrievalSet.from_pairs(load_pairs(cfg.layout, cfg.data_root, cfg.val_split, **cfg.data_options))

    optimizer = _optimizer(model, cfg)
    scheduler = _schedule(optimizer, total, cfg.warmup)
    state = TrainState()
    if resume:
        saved = torch.load(Path(resume) / STATE_FILE, map_location="cpu", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = TrainState(**saved["state"])
    ddp = DistributedDataParallel(model) if world > 1 else None
    forward = ddp if ddp is not None else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def checkpoint_extra() -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": dataclasses.asdict(state),
            "config": dataclasses.asdict(cfg),
        }

    def validate() -> None:
        if val is None:
            return
        metrics = evaluate(model, val, device, workers=cfg.workers, sampling=cfg.sampling)
        score = metrics["t2v"]["R@1"] + metrics["t2v"]["R@5"] + metrics["t2v"]["R@10"]
        _append_jsonl(out / "metrics.jsonl", {"step": state.step, "val": metrics})
        log.info("step %d val t2v %s", state.step, metrics["t2v"])
        if score > state.best_score:
            state.best_score = score
            _save(out / "best", model, None)

    stop_at = min(total, cfg.stop_at_step or total)
    progress = tqdm(total=total, initial=state.step, disable=not main_process, desc="train", unit="step")
    loss_sum, seen, tick = 0.0, 0, time.perf_counter()
    while state.step < stop_at:
        sampler.set_epoch(state.epoch, skip=state.batch_in_epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=0 if cfg.cache_frames else cfg.workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        for frames_batch, captions in loader:
            if state.batch_in_epoch >= steps_per_epoch * cfg.grad_accum:
                break
            twins = None
            if cfg.motion_twins:  # seeded by position, so --resume draws the same twins
                twin_rng = np.random.default_rng([cfg.seed, state.epoch, state.batch_in_epoch, rank])
                frames_batch, captions = add_motion_twins(frames_batch, captions, twin_rng)
                half = len(captions) // 2
                twins = torch.tensor([(i, i + half) for i in range(half) if captions[i] != captions[i + half]])
            keys = clip_keys(captions)
            wants = keys
            extra: list[str] = []  # shortened copies of full captions, as extra queries
            extra_wants: torch.Tensor | None = None
            count = min(len(captions), round(cfg.partial_queries * len(captions)))
            if count > 0:
                query_rng = np.random.default_rng([cfg.seed, state.epoch, state.batch_in_epoch, rank, 2])
                extra, extra_wants = shortened_queries(captions, keys, count, query_rng)
            if cfg.partial_captions > 0:
                short_rng = np.random.default_rng([cfg.seed, state.epoch, state.batch_in_epoch, rank, 1])
                captions, wants = shorten_captions(captions, keys, cfg.partial_captions, short_rng)
            ids = tokenize(captions + extra, method.max_words).to(device)
            last_micro = (state.batch_in_epoch + 1) % cfg.grad_accum == 0
            sync = ddp.no_sync() if (ddp is not None and not last_micro) else contextlib.nullcontext()
            with sync, autocast:
                video, text = forward(frames_batch.to(device, non_blocking=True), ids)
                rows = len(captions)
                queries = (text[rows:], extra_wants) if extra_wants is not None else None
                loss = pair_loss(video, text[:rows], model.logit_scale, keys, wants, twins, cfg, world, queries)
            # Each rank back-propagates only into its own rows; x world undoes DDP's averaging of gradients.
            (loss * world / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
            seen += frames_batch.shape[0] * world
            state.batch_in_epoch += 1
            if not last_micro:
                continue
            optimizer_step(model, optimizer, scheduler, cfg.grad_clip)
            state.step += 1
            state.losses.append(loss_sum)
            rate = seen / (time.perf_counter() - tick)
            progress.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", pairs_s=f"{rate:.1f}")
            progress.update(1)
            if main_process and (state.step % cfg.log_every == 0 or state.step == 1):
                _append_jsonl(
                    out / "metrics.jsonl", {"step": state.step, "loss": loss_sum, "lr": scheduler.get_last_lr()[0]}
                )
            loss_sum = 0.0
            end_of_epoch = state.batch_in_epoch >= steps_per_epoch * cfg.grad_accum
            if main_process:
                if (cfg.eval_every and state.step % cfg.eval_every == 0) or (not cfg.eval_every and end_of_epoch):
                    validate()
                if cfg.save_every and state.step % cfg.save_every == 0:
                    _save(out / f"step_{state.step}", model, checkpoint_extra())
            if world > 1:
                dist.barrier()
            if state.step >= stop_at:
                break
        if state.batch_in_epoch >= steps_per_epoch * cfg.grad_accum:
            state.epoch += 1
            state.batch_in_epoch = 0
    progress.close()
    if main_process:
        if state.step >= total and val is not None and not (out / "best").exists():
            validate()
        _save(out / "last", model, checkpoint_extra())
        log.info("saved %s at step %d of %d", out / "last", state.step, total)
        if state.step >= total and val is not None:
            _calibrate_outputs(out, val, device, cfg)
    if world > 1:
        dist.barrier()
    return state


def _calibrate_outputs(out: Path, val: RetrievalSet, device: torch.device, cfg: TrainConfig) -> None:
    """Fit the score calibration of the run's best and last checkpoints on its validation split."""
    for folder in (out / "best", out / "last"):
        if not folder.exists():
            continue
        fitted_on = f"{cfg.data_root} ({cfg.layout}, {cfg.val_split})"
        try:
            calibration, _ = calibrate(load_model(folder), val, device, fitted_on, cfg.workers, cfg.sampling)
        except CalibrationError as exc:
            log.warning("%s has no score calibration: %s", folder, exc)
            continue
        write_calibration(folder, calibration)
        log.info("%s: score calibration fitted on %d pairs (%s)", folder, calibration.pairs, fitted_on)


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([frames for frames, _ in items]), [caption for _, caption in items]


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> TrainState:
    args = build_parser().parse_args(argv)
    if args.resume:
        saved = torch.load(Path(args.resume) / STATE_FILE, map_location="cpu", weights_only=False)
        base = {**saved["config"], "stop_at_step": None}  # an interruption is not part of the run's recipe
        cfg = config_from_args(args, base=base)
    else:
        cfg = config_from_args(args)
    if not cfg.data_root:
        raise SystemExit("error: --data-root is required (or data_root in the recipe)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = train(cfg, resume=args.resume)
    if dist.is_initialized():
        dist.destroy_process_group()
    return state


if __name__ == "__main__":
    main()
