"""The search service under load: the real server over generated collections, driven from another process.

    python bench/search.py [--clips 100000 1000000] [--work /tmp/tvr-bench-search] [--nprobe 64 128]

For each collection size the script

1. saves a ViT-B-32 encoder with random weights as a full checkpoint (the real text tower's cost);
2. generates that many clip vectors and catalog rows (SQLite, the indexer's schema; 10 clips a video,
   embeddings not stored) and builds and publishes the index exactly as the indexer does
   (``vector_index.choose_factory``, ``builder.build_index``: training, adding, calibrating the search depth);
3. starts ``tvr serve`` in its own process (query-embedding cache off, so every query is encoded);
4. runs the load generator (``bench/search.py load``) in a third process: distinct queries one at a time
   (p50/p99 latency, client-side, over HTTP), then 16 at a time (throughput);
5. computes recall@10 of the served answers against exhaustive search over the generated vectors, with
   the query embeddings computed here from the same checkpoint at the server's precision (so it measures
   the index), and against exhaustive search with float32 query embeddings (what a reduced query
   precision costs on top); ``--nprobe`` reruns the sequential pass with those per-call ``nprobe`` values;
6. reruns the sequential pass with a filter per ``--selectivity`` (``meta.bucket < N``: each video row has
   ``meta = {"bucket": video_id % 1000}``, so N / 1000 of the clips match) and computes its recall@10
   against exhaustive search among the matching clips, with the same query embeddings.

The index file is read once before each server starts (a long-running server has it in the page cache).

Generated vectors: 256 caption embeddings of the encoder serve as topic centres; each clip vector is a
centre plus isotropic noise (cosine 0.75 to its centre), L2-normalised. Queries are other captions of the
synthetic vocabulary, so they fall where the collection is, as real queries do. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np

CENTRES = 256
SPREAD = 0.88  # noise norm relative to a unit centre: cosine 1 / sqrt(1 + 0.88^2) = 0.75
CLIPS_PER_VIDEO = 10
CHUNK = 100_000
DIM = 512
K = 10
BUCKETS = 1000  # videos' meta.bucket is video_id % BUCKETS: a filter ``meta.bucket < N`` keeps N / BUCKETS


# --- the load generator (a child process) -------------------------------------------------------------------


class _Connection:
    """A bare HTTP/1.1 keep-alive connection: a GET and its JSON answer, and nothing more. The load generator
    shares the server's two cores, so it spends as little CPU per request as it can (httpx took about a
    tenth of the throughput)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> _Connection:
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        return cls(reader, writer, parts.netloc)

    async def get(self, path: str, params: dict[str, object]) -> tuple[int, bytes]:
        target = f"{path}?{urllib.parse.urlencode(params)}"
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _load(
    url: str, queries: list[str], concurrency: int, k: int, nprobe: int | None, filter_text: str | None = None
) -> dict:
    pending = list(enumerate(queries))
    latencies: list[float] = [0.0] * len(queries)
    answers: list[list[int]] = [[] for _ in queries]
    errors: list[str] = []

    async def worker() -> None:
        connection = await _Connection.open(url)
        try:
            while pending:
                i, query = pending.pop(0)
                params: dict[str, object] = {"q": query, "k": k}
                if nprobe is not None:
                    params["nprobe"] = nprobe
                if filter_text is not None:
                    params["filter"] = filter_text
                started = time.perf_counter()
                try:
                    status, body = await connection.get("/search", params)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(repr(exc))
                    connection.close()
                    connection = await _Connection.open(url)
                    continue
                latencies[i] = time.perf_counter() - started
                if status != 200:
                    errors.append(f"{status}: {body[:200]!r}")
                    continue
                answers[i] = [hit["clip_id"] for hit in json.loads(body)["results"]]
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {"latencies": latencies, "answers": answers, "errors": errors, "wall": wall}


def load_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/search.py load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queries", type=Path, required=True, help="JSON list of query texts")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--nprobe", type=int)
    parser.add_argument("--filter", help="the filter= parameter of every request")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    queries = json.loads(args.queries.read_text())
    result = asyncio.run(_load(args.url, queries, args.concurrency, args.k, args.nprobe, args.filter))
    args.out.write_text(json.dumps(result))


# --- collection -----------------------------------------------------------------------------------------------


def random_checkpoint(work: Path) -> Path:
    """A ViT-B-32 encoder with random weights, saved whole (no pretrained weights to fetch)."""
    import torch

    from model import create_model, get_config, save_checkpoint

    folder = work / "vit-b-32-random"
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        config = get_config("ViT-B-32")
        config.backbone.pretrained = None
        save_checkpoint(create_model(config), folder, full=True)
    return folder


def captions(seed: int = 0) -> list[str]:
    from model.train.synth import scene_space

    texts = [scene.caption for scene in scene_space()]
    random.Random(seed).shuffle(texts)
    return texts


def query_precision(env: dict[str, str]) -> str:
    """The query precision a server started with ``env`` uses (what its settings make of TVR_TEXT_DTYPE)."""
    from service.settings import ServiceSettings

    fields = {"TVR_TEXT_DTYPE": "text_dtype", "TVR_DEVICE": "device"}
    return ServiceSettings(**{field: env[name] for name, field in fields.items() if name in env}).query_precision


@functools.cache
def encoder_at(checkpoint: Path, precision: str):  # type: ignore[no-untyped-def]
    """The checkpoint's encoder with the query precision a server gets from TVR_TEXT_DTYPE."""
    from model import load_encoder

    return load_encoder(checkpoint, text_precision=precision)


def encode(encoder, texts: list[str], batch: int = 64) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Query embeddings, as the server makes them with the same encoder."""
    chunks = [encoder.encode_text(texts[i : i + batch]).float().numpy() for i in range(0, len(texts), batch)]
    return np.concatenate(chunks)


def warm_page_cache(path: Path) -> None:
    """Read the index file once, as a server that has been up for a while has it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(64 << 20):
            pass


def vector_chunks(centres: np.ndarray, count: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """(first clip id, float32 vectors) chunks of the collection; deterministic, so they are regenerated
    for exact search instead of being kept."""
    for begin in range(0, count, CHUNK):
        size = min(CHUNK, count - begin)
        rng = np.random.default_rng([seed, begin // CHUNK])
        noise = rng.standard_normal((size, centres.shape[1]), dtype=np.float32)
        noise *= SPREAD / np.linalg.norm(noise, axis=1, keepdims=True)
        vectors = centres[rng.integers(0, len(centres), size)] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        yield begin + 1, vectors


def build_collection(data_dir: Path, count: int, centres: np.ndarray, checkpoint_id: str, titles: list[str]) -> dict:
    """Catalog rows and a published index of ``count`` generated clips; reused when already built."""
    from sqlalchemy import insert

    from indexer import builder, vector_index
    from indexer.catalog import Clip, Video, VideoStatus, utcnow
    from indexer.db import make_sessionmaker, open_catalog
    from indexer.settings import Settings
    from indexer.sync import publish_version

    stamp_path = data_dir / "bench.json"
    stamp = {"count": count, "checkpoint": checkpoint_id, "centres": CENTRES, "spread": SPREAD, "builder": 3}
    stamp["buckets"] = BUCKETS  # meta.bucket on the video rows
    if stamp_path.is_file() and json.loads(stamp_path.read_text()).get("stamp") == stamp:
        return json.loads(stamp_path.read_text())["timings"]
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    settings = Settings(data_dir=data_dir, checkpoint=checkpoint_id, database_url="")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    engine = open_catalog(settings, writer=True)
    now = utcnow()
    videos = (count + CLIPS_PER_VIDEO - 1) // CLIPS_PER_VIDEO
    with engine.begin() as connection:
        for begin in range(0, videos, CHUNK):
            connection.execute(
                insert(Video),
                [
                    {
                        "id": v + 1,
                        "path": f"/bench/videos/{v + 1:08d}.mp4",
                        "title": titles[v % len(titles)],
                        "metadata": {"bucket": (v + 1) % BUCKETS},  # the column of Video.meta
                        "duration": 5.0 * CLIPS_PER_VIDEO + 5,
                        "status": VideoStatus.indexed,
                        "attempts": 1,
                        "checkpoint_id": checkpoint_id,
                        "created_at": now,
                        "updated_at": now,
                        "indexed_at": now,
                    }
                    for v in range(begin, min(videos, begin + CHUNK))
                ],
            )
        for begin in range(0, count, CHUNK):
            connection.execute(
                insert(Clip),
                [
                    {
                        "id": c + 1,
                        "video_id": c // CLIPS_PER_VIDEO + 1,
                        "position": c % CLIPS_PER_VIDEO,
                        "start": 5.0 * (c % CLIPS_PER_VIDEO),
                        "end": 5.0 * (c % CLIPS_PER_VIDEO) + 10.0,
                        "thumbnail": None,
                        "embedding": b"",  # the service never reads embeddings; the index holds the vectors
                    }
                    for c in range(begin, min(count, begin + CHUNK))
                ],
            )
    timings["catalog_s"] = time.perf_counter() - started

    def fetch(ids: np.ndarray):  # type: ignore[no-untyped-def]  # sorted clip ids -> (ids, vectors) batches
        for first, vectors in vector_chunks(centres, count):
            chosen = ids[(ids >= first) & (ids < first + len(vectors))]
            if len(chosen):
                yield chosen, vectors[chosen - first]

    started = time.perf_counter()
    factory = vector_index.choose_factory(count, centres.shape[1])
    index, defaults = builder.build_index(np.arange(1, count + 1, dtype=np.int64), centres.shape[1], factory, fetch)
    timings["build_s"] = time.perf_counter() - started  # train, add, calibrate: as `tvr index rebuild`
    sessions = make_sessionmaker(engine)
    publish_version(
        sessions, settings.index_dir, index, checkpoint_id=checkpoint_id, factory=factory, search_defaults=defaults
    )
    engine.dispose()
    stamp_path.write_text(json.dumps({"stamp": stamp, "timings": timings}))
    return timings


def bucket_of_clips(ids: np.ndarray) -> np.ndarray:
    """meta.bucket of each clip id's video (the rows ``build_collection`` writes)."""
    return ((ids - 1) // CLIPS_PER_VIDEO + 1) % BUCKETS


def exact_tops(
    centres: np.ndarray, count: int, queries: np.ndarray, below: list[int | None], k: int = K
) -> list[np.ndarray]:
    """Per entry of ``below``: clip ids of the exhaustive top-k of each query row among the clips whose video's
    meta.bucket is below it (None: all clips), in one pass over the regenerated vectors."""
    best_ids = [np.zeros((len(queries), 0), np.int64) for _ in below]
    best_scores = [np.zeros((len(queries), 0), np.float32) for _ in below]
    for first, vectors in vector_chunks(centres, count):
        all_scores = queries @ vectors.T
        all_ids = np.arange(first, first + len(vectors), dtype=np.int64)
        for j, limit in enumerate(below):
            chosen = slice(None) if limit is None else bucket_of_clips(all_ids) < limit
            scores, ids = all_scores[:, chosen], all_ids[chosen]
            if ids.size == 0:
                continue
            top = np.argsort(-scores, axis=1)[:, :k] if ids.size <= k else np.argpartition(-scores, k, axis=1)[:, :k]
            merged_scores = np.concatenate([best_scores[j], np.take_along_axis(scores, top, 1)], axis=1)
            merged_ids = np.concatenate([best_ids[j], ids[top]], axis=1)
            keep = np.argsort(-merged_scores, axis=1)[:, :k]
            best_scores[j] = np.take_along_axis(merged_scores, keep, 1)
            best_ids[j] = np.take_along_axis(merged_ids, keep, 1)
    return best_ids


# --- running ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, checkpoint: Path, log: Path, extra: dict[str, str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVR_")}
    env.update(TVR_DATA_DIR=str(data_dir), TVR_CHECKPOINT=str(checkpoint), TVR_CACHE_SIZE="0", **extra)
    root = Path(__file__).resolve().parent.parent
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "tvr_cli", "serve", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server was not ready in 15 minutes; see {log}")


def run_load(
    url: str,
    queries: list[str],
    concurrency: int,
    work: Path,
    nprobe: int | None = None,
    filter_text: str | None = None,
) -> dict:
    """The load generator in its own process."""
    query_file, out = work / "queries.json", work / "load.json"
    query_file.write_text(json.dumps(queries))
    command = [sys.executable, __file__, "load", "--url", url, "--queries", str(query_file)]
    command += ["--concurrency", str(concurrency), "--out", str(out)]
    if nprobe is not None:
        command += ["--nprobe", str(nprobe)]
    if filter_text is not None:
        command += ["--filter", filter_text]
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    if result["errors"]:
        raise RuntimeError(f"{len(result['errors'])} failed requests, e.g. {result['errors'][:3]}")
    return result


STAGES = ("tvr_encode_seconds", "tvr_search_seconds", "tvr_catalog_seconds", "tvr_encode_batch_size")


def stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each server stage histogram, from /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics").text
    found = {}
    for name in STAGES:
        total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        found[name] = (total, count)
    cpu = float(re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    found["cpu"] = (cpu, 0.0)
    return found


def stage_means(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean per call of each stage between two snapshots."""
    means = {}
    for name in STAGES:
        total, count = after[name][0] - before[name][0], after[name][1] - before[name][1]
        means[name] = total / count if count else 0.0
    return means


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def recall(served: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(s) & set(e.tolist())) / K for s, e in zip(served, exact, strict=True)]))


def parse_config(text: str) -> dict[str, str]:
    """``default`` or ``KEY=VALUE,KEY=VALUE``: environment of the server."""
    if text == "default":
        return {}
    return dict(item.split("=", 1) for item in text.split(","))


def filter_strategy(factory: str, total: int, matching: int, nprobe: object) -> str:
    """What ``service.search`` does for a filter matching ``matching`` of ``total`` clips (its module
    docstring): exact scoring of the matching clips, or IVF at a depth raised by 1 / sqrt(selectivity)."""
    from service.search import EXACT_MIN, EXACT_SHARE

    if factory.startswith("Flat"):
        return "Flat, IDSelector"
    if matching <= max(EXACT_MIN, EXACT_SHARE * total):
        return f"exact among {matching:,}"
    if not isinstance(nprobe, int):
        return "IDSelector"
    return f"IDSelector, nprobe {math.ceil(nprobe / math.sqrt(matching / total))}"


def measure(  # type: ignore[no-untyped-def]
    count: int, args: argparse.Namespace, checkpoint: Path, centres, texts, summary: list[str]
) -> list[str]:
    from indexer import store

    work = args.work
    data_dir = work / f"data-{count}"
    print(f"\n## {count:,} clips: catalog and index", flush=True)
    checkpoint_id = encoder_at(checkpoint, "float32").checkpoint_id
    build = build_collection(data_dir, count, centres, checkpoint_id, texts[:CENTRES])
    meta = store.current_meta(data_dir / "index")
    print(f"built: {json.dumps({k: round(v, 1) for k, v in build.items()})}; {meta.factory}, {meta.search_defaults}")

    warmup = texts[CENTRES : CENTRES + args.warmup]
    sequential = texts[CENTRES + args.warmup : CENTRES + args.warmup + args.queries]
    parallel = texts[CENTRES + args.warmup + args.queries :][: args.throughput_queries]
    exact_by_dtype: dict[str, np.ndarray] = {}
    filtered_by_dtype: dict[str, list[np.ndarray]] = {}  # per --selectivity
    limits = [max(1, round(share * BUCKETS)) for share in args.selectivity]  # meta.bucket < limit
    matching = [int(np.count_nonzero(bucket_of_clips(np.arange(1, count + 1)) < limit)) for limit in limits]
    default_nprobe = meta.search_defaults.get("nprobe", "-")
    rows = []
    for config in args.configs:
        env = parse_config(config)
        dtype = query_precision(env)
        for precision in {dtype, "float32"} - set(exact_by_dtype):  # exhaustive search, same query embeddings:
            # one query per call, as the server encodes them at concurrency 1 (int8 scales activations per batch)
            queries = encode(encoder_at(checkpoint, precision), sequential, batch=1)
            found = exact_tops(centres, count, queries, [None, *limits] if precision == dtype else [None])
            exact_by_dtype[precision], filtered_by_dtype[precision] = found[0], found[1:]
        exact = exact_by_dtype[dtype]
        nprobe_label = env.get("TVR_NPROBE", f"{default_nprobe} (default)")
        log = work / f"server-{count}-{re.sub(r'[^A-Za-z0-9]+', '_', config)}.log"
        warm_page_cache(meta.path / store.INDEX_FILE)
        process, url = start_server(data_dir, checkpoint, log, env)
        try:
            run_load(url, warmup, 4, work)
            start = stage_totals(url)
            one = run_load(url, sequential, 1, work)
            middle = stage_totals(url)
            many = run_load(url, parallel, 16, work)
            end = stage_totals(url)
            stages, batched = stage_means(start, middle), stage_means(middle, end)
            cpu_ms = 1000 * (end["cpu"][0] - middle["cpu"][0]) / len(parallel)  # server CPU per query at c=16
            latency = [1000 * s for s in one["latencies"]]
            rows.append(
                f"| {count:,} | {meta.factory} | {nprobe_label} | {config} "
                f"| {percentile(latency, 50):.1f} | {percentile(latency, 99):.1f} "
                f"| {len(parallel) / many['wall']:.1f} | {recall(one['answers'], exact):.3f} "
                f"| {recall(one['answers'], exact_by_dtype['float32']):.3f} "
                f"| {1000 * stages['tvr_encode_seconds']:.1f} / {1000 * stages['tvr_search_seconds']:.2f} / "
                f"{1000 * stages['tvr_catalog_seconds']:.2f} | {batched['tvr_encode_batch_size']:.1f} "
                f"| {cpu_ms:.1f} | {2000 / cpu_ms:.0f} |"
            )
            print(rows[-1], flush=True)
            if config != args.configs[0]:
                continue
            for nprobe in args.nprobe:  # per-call search parameters, same server
                subset = sequential[: args.sweep_queries]
                swept = run_load(url, subset, 1, work, nprobe=nprobe)
                latency = [1000 * s for s in swept["latencies"]]
                found = recall(swept["answers"], exact[: len(subset)])
                rows.append(
                    f"| {count:,} | {meta.factory} | {nprobe} | {config} | {percentile(latency, 50):.1f} "
                    f"| {percentile(latency, 99):.1f} | | {found:.3f} | | | | | |"
                )
                print(rows[-1], flush=True)
            if dtype not in filtered_by_dtype or len(filtered_by_dtype[dtype]) != len(limits):
                queries = encode(encoder_at(checkpoint, dtype), sequential, batch=1)
                filtered_by_dtype[dtype] = exact_tops(centres, count, queries, limits)
            for share, limit, matched, exact_among in zip(
                args.selectivity, limits, matching, filtered_by_dtype[dtype], strict=True
            ):  # the sequential pass with a filter, same server and queries
                text = f"meta.bucket < {limit}"
                run_load(url, warmup[:4], 1, work, filter_text=text)  # the filter's clip ids are cached
                # the unfiltered pass again, just before: the ratio compares passes run under the same
                # conditions (the first pass after the c=16 one ran slower in every stage, filtered or not)
                adjacent = run_load(url, sequential, 1, work)
                base_p50 = percentile([1000 * s for s in adjacent["latencies"]], 50)
                before = stage_totals(url)
                filtered = run_load(url, sequential, 1, work, filter_text=text)
                stages = stage_means(before, stage_totals(url))
                latency = [1000 * s for s in filtered["latencies"]]
                found = recall(filtered["answers"], exact_among)
                p50, p99 = percentile(latency, 50), percentile(latency, 99)
                strategy = filter_strategy(meta.factory, count, matched, default_nprobe)
                rows.append(
                    f"| {count:,} | {meta.factory} | {strategy} | {config}, `{text}` ({100 * share:g} %) "
                    f"| {p50:.1f} | {p99:.1f} | | {found:.3f} | "
                    f"| {1000 * stages['tvr_encode_seconds']:.1f} / {1000 * stages['tvr_search_seconds']:.2f} / "
                    f"{1000 * stages['tvr_catalog_seconds']:.2f} | | | |"
                )
                print(rows[-1], flush=True)
                summary.append(
                    f"| {count:,} | `{text}` | {100 * share:g} % ({matched:,} clips) | {strategy} "
                    f"| {base_p50:.1f} | {p50:.1f} | {p99:.1f} | {p50 / base_p50:.2f} "
                    f"| {1000 * stages['tvr_search_seconds']:.2f} "
                    f"| {found:.3f} | {'met' if p50 <= 1.5 * base_p50 and found >= 0.95 else 'missed'} |"
                )
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        load_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[100_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/tvr-bench-search"))
    parser.add_argument("--queries", type=int, default=300, help="sequential queries (latency, recall)")
    parser.add_argument("--throughput-queries", type=int, default=800, help="queries sent 16 at a time")
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[], help="also measure these per-call nprobe")
    parser.add_argument("--sweep-queries", type=int, default=100)
    parser.add_argument(
        "--selectivity",
        type=float,
        nargs="*",
        default=[0.001, 0.01, 0.1],
        help="also run the sequential pass with a filter keeping this share of the clips (multiples of 1/1000)",
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["default"],
        help="server environments to compare: default, or KEY=VALUE[,KEY=VALUE] (e.g. TVR_TEXT_DTYPE=float32)",
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    checkpoint = random_checkpoint(args.work)
    texts = captions()
    needed = CENTRES + args.warmup + args.queries + args.throughput_queries
    if len(texts) < needed:
        raise SystemExit(f"the synthetic vocabulary has {len(texts)} captions, {needed} are needed")
    centres = encode(encoder_at(checkpoint, "float32"), texts[:CENTRES])
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}, {platform.python_version()}"
    )
    rows = [
        "| clips | index | nprobe | server | p50 ms (c=1) | p99 ms (c=1) | queries/s (c=16) | recall@10 "
        "| recall@10 vs float32 queries | encode / search / catalog ms per query (c=1) | mean batch (c=16) "
        "| server CPU ms/query (c=16) | CPU-bound ceiling q/s, 2 cores |",
        "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    summary = [
        "| clips | filter | matching | strategy | unfiltered p50 ms, just before | p50 ms (c=1) | p99 ms (c=1) "
        "| x unfiltered p50 | search ms per query | recall@10 among matching | goal (<= 1.5x p50, >= 0.95) |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for count in args.clips:
        rows += measure(count, args, checkpoint, centres, texts, summary)
    print("\n" + "\n".join(rows))
    if len(summary) > 2:
        print("\nFiltered search against an unfiltered sequential pass of the same server, run just before it:\n")
        print("\n".join(summary))


if __name__ == "__main__":
    main()
