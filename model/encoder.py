"""The dual-attention CLIP (trainable module) and the inference wrapper every other part uses."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from .backbone import input_size
from .calibration import ScoreCalibration
from .config import ConfigError, EncoderConfig
from .lora import QKVLoRA, lora_at
from .preprocess import FramePreprocess
from .text_inference import TextPrecision, compact_text_tower
from .text_tower import run_text_tower, tokenize
from .video_tower import run_video_tower


class DualAttentionCLIP(nn.Module):
    """A frozen open_clip CLIP plus the method's trainable parts: LoRA in both towers, prompts, temporal table.

    ``forward``-style methods return raw (not normalised) embeddings, as the loss and docs/METHOD.md define them.
    """

    def __init__(self, config: EncoderConfig, clip: CLIP) -> None:
        super().__init__()
        method = config.method
        visual = clip.visual
        num_patches = visual.grid_size[0] * visual.grid_size[1]
        method.validate(num_layers=len(visual.transformer.resblocks), num_patches=num_patches)
        size = input_size(clip)
        if config.preprocess is None:  # a checkpoint from before preprocessing was recorded: CLIP's, as trained
            config.preprocess = FramePreprocess(size)
        elif config.preprocess.image_size != size:
            raise ConfigError(
                f"preprocess image_size {config.preprocess.image_size} does not match the image tower's input "
                f"size {size}: frames must be resized to {size}x{size}"
            )
        self.config = config
        self.clip = clip
        self.clip.requires_grad_(False)
        self.calibration: ScoreCalibration | None = None  # a checkpoint's score calibration (model/calibration.py)
        width = visual.conv1.out_channels
        self.visual_lora: nn.ModuleList | None = None
        self.text_lora: nn.ModuleList | None = None
        self.prompts: nn.Parameter | None = None
        self.temporal: nn.Parameter | None = None
        if not method.zero_shot:
            self.visual_lora = _lora_layers(clip.visual.transformer.resblocks, method.lora_rank)
            self.text_lora = _lora_layers(clip.transformer.resblocks, method.lora_rank)
            if method.num_prompts > 0:
                patch = visual.conv1.kernel_size[0]
                bound = math.sqrt(6.0 / (3 * patch * patch + width))
                self.prompts = nn.Parameter(torch.empty(method.num_prompts, width).uniform_(-bound, bound))
            if method.temporal_embedding:
                self.temporal = nn.Parameter(torch.zeros(method.num_frames, width))
        self.lora_folded = False
        self.set_trainable(method.trainable)

    # --- what is trained -------------------------------------------------------------------------------
    def set_trainable(self, groups: list[str]) -> None:
        """Unfreeze the named groups (``lora``, ``prompts``, ``temporal``, ``all``); freeze the rest."""
        self.requires_grad_(False)
        if "all" in groups:
            self.requires_grad_(True)
            return
        if "lora" in groups:
            for layers in (self.visual_lora, self.text_lora):
                if layers is not None:
                    layers.requires_grad_(True)
        if "prompts" in groups and self.prompts is not None:
            self.prompts.requires_grad_(True)
        if "temporal" in groups and self.temporal is not None:
            self.temporal.requires_grad_(True)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's own tensors (LoRA, prompts, temporal table), without the backbone."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("clip.")}

    # --- inference speed-ups ---------------------------------------------------------------------------
    @torch.no_grad()
    def fold_lora(self) -> None:
        """Add ``B A`` into every frozen in-projection so encoding costs what the frozen CLIP costs."""
        if self.lora_folded:
            return
        for blocks, layers in (
            (self.clip.visual.transformer.resblocks, self.visual_lora),
            (self.clip.transformer.resblocks, self.text_lora),
        ):
            for i, block in enumerate(blocks):
                lora = lora_at(layers, i)
                if lora is not None:
                    block.attn.in_proj_weight += lora.delta().to(block.attn.in_proj_weight.dtype)
        self.visual_lora = self.text_lora = None
        self.lora_folded = True

    # --- encoding (raw embeddings) ---------------------------------------------------------------------
    def encode_video(
        self, frames: torch.Tensor, return_frames: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, E) video embeddings from (B, T, 3, H, W) normalised frames; per-frame (B, T, E) on request."""
        return run_video_tower(
            self.clip.visual,
            self.visual_lora,
            frames,
            self.config.method,
            self.prompts,
            self.temporal,
            return_frames,
        )

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, E) text embeddings from (B, L) token ids."""
        return run_text_tower(self.clip, self.text_lora, ids)

    def forward(self, frames: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_video(frames)[0], self.encode_text(ids)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100.0)

    @property
    def image_size(self) -> int:
        return input_size(self.clip)

    @property
    def preprocess(self) -> FramePreprocess:
        """How frames are resized and normalised for this model (``config.preprocess``, set at construction)."""
        assert self.config.preprocess is not None, "set by __init__"
        return self.config.preprocess

    def weights_digest(self) -> str:
        """A hash of the method config, every tensor and a non-default preprocessing: equal weights with equal
        preprocessing give equal digests, whatever the file. This is the encoder's checkpoint id."""
        return self.checkpoint_ids()[0]

    def checkpoint_ids(self) -> tuple[str, tuple[str, ...]]:
        """The checkpoint id, and the ids the same weights had before preprocessing was part of the id.

        The preprocessing enters the hash only when it is not OpenAI CLIP's, so checkpoints that use CLIP's
        (all of them, before it was recorded) keep their ids; those that do not get a new id, and the old one
        is listed (their earlier index entries were encoded with CLIP's normalisation: re-encode them).
        """
        method = {k: v for k, v in dataclasses.asdict(self.config.method).items() if k != "trainable"}
        digest = hashlib.sha256(json.dumps(method, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        legacy = digest.hexdigest()[:16]
        if self.preprocess.is_default():
            return legacy, ()
        digest.update(b"preprocess:" + json.dumps(self.preprocess.to_dict(), sort_keys=True).encode())
        return digest.hexdigest()[:16], (legacy,)


def _lora_layers(blocks: Iterable[ResidualAttentionBlock], rank: int) -> nn.ModuleList:
    return nn.ModuleList(QKVLoRA(block.attn.embed_dim, rank) for block in blocks)


# --- replaying captured graphs per batch size ----------------------------------------------------------------
BatchFn = Callable[[torch.Tensor], torch.Tensor]
# capture(fn, static_input) -> (replay, static_output): after replay(), static_output holds fn(static_input)
Replayable = tuple[Callable[[], object], torch.Tensor]
Capture = Callable[[BatchFn, torch.Tensor], Replayable]


def cuda_graph_capture(fn: BatchFn, static_input: torch.Tensor, warmup: int = 2) -> Replayable:
    """``fn(static_input)`` captured as one CUDA graph (after ``warmup`` calls on a side stream, as capture needs).

    ``fn`` must not synchronise with the host (no ``.item()``, no data-dependent shapes). Other threads may use
    the GPU meanwhile (``thread_local`` capture; torch's streams do not wait on the legacy default stream)."""
    device = static_input.device
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn(static_input)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_output = fn(static_input)
    return graph.replay, static_output


def eager_capture(fn: BatchFn, static_input: torch.Tensor) -> Replayable:
    """What a captured graph does, run eagerly: a stand-in for ``cuda_graph_capture`` on a CPU and in tests."""
    static_output = fn(static_input).clone()

    def replay() -> None:
        static_output.copy_(fn(static_input))

    return replay, static_output


@dataclasses.dataclass
class _Graph:
    static_input: torch.Tensor
    replay: Callable[[], object]
    static_output: torch.Tensor


class BatchGraphs:
    """``fn`` on batches through captured graphs, one per batch size, each captured the first time it is needed.

    A batch runs in the graph of the smallest captured size that holds it, padded with zero rows, and its rows
    are cut from the output; a batch larger than every captured one gets its own graph (at most
    ``max_graphs``; beyond that ``fn`` runs eagerly). So an indexer's equal batches replay one graph and its
    last, smaller batch replays the same. Padding is sound only when row ``i`` of ``fn``'s output depends on
    input row ``i`` alone, as for the video encoder (every step is per video). Not thread-safe: callers lock.
    """

    def __init__(self, fn: BatchFn, capture: Capture = cuda_graph_capture, max_graphs: int = 4) -> None:
        self.fn = fn
        self.capture = capture
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[int, ...], _Graph] = {}  # by (batch size, *trailing shape)

    @property
    def sizes(self) -> list[int]:
        """The batch sizes captured so far."""
        return sorted(key[0] for key in self._graphs)

    def graph_size(self, batch: torch.Tensor) -> int | None:
        """The captured batch size ``batch`` would run in, or None if it needs a new graph (or eager)."""
        rows, trailing = batch.shape[0], tuple(batch.shape[1:])
        fits = [key[0] for key in self._graphs if key[1:] == trailing and key[0] >= rows]
        return min(fits) if fits else None

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        rows, trailing = batch.shape[0], tuple(batch.shape[1:])
        size = self.graph_size(batch)
        if size is None:
            if len(self._graphs) >= self.max_graphs or rows == 0:
                return self.fn(batch)
            size = rows
            static_input = torch.zeros(batch.shape, dtype=batch.dtype, device=batch.device)
            static_input.copy_(batch)
            replay, static_output = self.capture(self.fn, static_input)
            self._graphs[(size,) + trailing] = _Graph(static_input, replay, static_output)
        captured = self._graphs[(size,) + trailing]
        captured.static_input[:rows].copy_(batch)
        if rows < size:
            captured.static_input[rows:].zero_()  # padding: any finite rows would do; zeros are reproducible
        captured.replay()
        return captured.static_output[:rows].clone()


class Encoder:
    """What the indexer, the service and the checks use: frames or texts in, L2-normalised embeddings out."""

    def __init__(
        self,
        model: DualAttentionCLIP,
        checkpoint_id: str,
        device: str | torch.device = "cpu",
        text_precision: TextPrecision = "float32",
        legacy_checkpoint_ids: tuple[str, ...] = (),
        cuda_graphs: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model.fold_lora()
        self.text_precision = text_precision
        # float32 runs the model's own tower; the others a compact copy (model/text_inference.py)
        self._text_tower = (
            None if text_precision == "float32" else compact_text_tower(model.clip, text_precision, self.device)
        )
        self.checkpoint_id = checkpoint_id
        self.calibration = model.calibration  # cosine -> confidence of text queries; None: not fitted
        # ids these weights had before the preprocessing was part of the id (empty when it is CLIP's): index
        # entries made under one were encoded with CLIP's normalisation and should be re-encoded
        self.legacy_checkpoint_ids = tuple(legacy_checkpoint_ids)
        self.config = model.config
        self.num_frames = model.config.method.num_frames
        self.image_size = model.image_size
        # uint8 frames (T, H, W, 3) -> encode_video's (T, 3, S, S) input; .resize and .normalize are its halves
        self.preprocess: FramePreprocess = model.preprocess
        self.embed_dim = int(model.clip.visual.proj.shape[1])
        self._video_graphs: BatchGraphs | None = None
        self._graph_lock = threading.Lock()
        if cuda_graphs:
            self.use_cuda_graphs()

    def use_cuda_graphs(self, enabled: bool = True, max_graphs: int = 4) -> bool:
        """Encode videos through CUDA graphs, one per batch size (``BatchGraphs``): on CUDA only, where the
        host cannot launch the encoder's kernels as fast as the GPU runs them. Returns whether graphs are on
        (never on a CPU). Each graph keeps its own activation memory (about one eager call's peak)."""
        with self._graph_lock:
            if enabled and self.device.type == "cuda":
                if self._video_graphs is None or self._video_graphs.max_graphs != max_graphs:
                    self._video_graphs = BatchGraphs(self._encode_frames, cuda_graph_capture, max_graphs)
            else:
                self._video_graphs = None
            return self._video_graphs is not None

    def __repr__(self) -> str:
        return (
            f"Encoder({self.config.name!r}, checkpoint_id={self.checkpoint_id!r}, device={self.device}, "
            f"text_precision={self.text_precision!r})"
        )

    @contextlib.contextmanager
    def _video_inference(self) -> Iterator[None]:
        """Videos are encoded in bfloat16 on a GPU (autocast), float32 on the CPU.

        No autocast cache: every weight is used once per call anyway, and a cache must not outlive a graph
        capture."""
        cuda = self.device.type == "cuda"
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda, cache_enabled=False),
        ):
            yield

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames already on the device, float32 -> L2-normalised float32 embeddings (what graphs capture)."""
        with self._video_inference():
            video, _ = self.model.encode_video(frames)
            return F.normalize(video.float(), dim=-1)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) frames normalised by ``preprocess`` -> (B, E) L2-normalised float32 embeddings."""
        self._check_frames(frames)
        frames = frames.to(self.device, torch.float32)
        if self._video_graphs is not None:
            with self._graph_lock:
                return self._video_graphs(frames)
        return self._encode_frames(frames)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (B, E) L2-normalised float32 embeddings (CLIP BPE, [SOT] + tokens + [EOT], max_words)."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        if len(texts) == 0:
            raise ValueError("encode_text needs at least one text")
        ids = tokenize(list(texts), self.config.method.max_words).to(self.device)
        with torch.inference_mode():  # float32 is float32 on a GPU too: bfloat16 is its own precision
            text = self._text_tower(ids) if self._text_tower is not None else self.model.encode_text(ids)
        return F.normalize(text.float(), dim=-1)

    def _check_frames(self, frames: torch.Tensor) -> None:
        t, s = self.num_frames, self.image_size
        if not isinstance(frames, torch.Tensor):
            raise TypeError(
                f"frames must be a torch.Tensor of shape [B, {t}, 3, {s}, {s}], got {type(frames).__name__}"
            )
        if frames.dim() != 5 or tuple(frames.shape[2:]) != (3, s, s):
            raise ValueError(f"frames must have shape [B, {t}, 3, {s}, {s}], got {list(frames.shape)}")
        if frames.shape[1] != t:
            raise ValueError(f"this encoder takes exactly {t} frames per video, got {frames.shape[1]}")
        if not frames.is_floating_point():
            raise ValueError("frames must be float and normalised: pass uint8 frames through preprocess first")
