"""Index build time, size, search speed and recall@10 per FAISS factory, on clustered unit vectors.

    python bench/index_build.py [--vectors 1000000] [--dim 512] [--queries 1000] [--factories ...]

The data stand in for clip embeddings: a Gaussian mixture of ``--clusters`` clusters in a random
``--latent``-dimensional subspace plus a little isotropic noise, L2-normalised (``make_data``); the
queries are drawn the same way, held out. Ground truth is exact inner-product search (``Flat``). Each
factory is built in a child process by the indexer's own code (``indexer.store``: IDMap2, inner product,
IVF trained on ``TRAIN_POINTS_PER_LIST`` vectors per list) so its peak memory is its own. ``auto`` is what
``tvr`` chooses for this many vectors (``vector_index.choose_factory``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_FACTORIES = ["Flat", "auto", "IVF4096,SQ8", "IVF4096,PQ64", "HNSW32,Flat"]
SWEEPS = {"nprobe": [16, 32, 64, 128, 256, 512], "efSearch": [64, 128, 256, 512]}


def make_data(
    folder: Path, n: int, dim: int, queries: int, clusters: int, noise: float, latent: int, seed: int = 0
) -> None:
    """Write base.npy and queries.npy (float32, unit rows) in chunks, so memory stays ~ one copy.

    ``latent`` > 0: clusters live in a random ``latent``-dimensional subspace (centres N(0, I), members
    centre + ``noise`` N(0, I) there), plus isotropic noise of 10 % of the norm in all ``dim`` directions:
    low intrinsic dimension, as real embeddings have. ``latent`` = 0: centres on the sphere of ``dim``
    dimensions with isotropic noise of relative norm ``noise`` (a worst case for IVF).
    """
    rng = np.random.default_rng(seed)
    space = latent or dim
    centres = rng.standard_normal((clusters, space)).astype(np.float32)
    if not latent:
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32) if latent else None
    base = np.lib.format.open_memmap(folder / "base.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for begin in range(0, n + queries, 100_000):
        count = min(100_000, n + queries - begin)
        points = centres[rng.integers(0, clusters, count)]
        if latent:
            points = (points + noise * rng.standard_normal((count, latent)).astype(np.float32)) @ basis
            scale = np.linalg.norm(points, axis=1, keepdims=True)
            points += 0.1 * scale * rng.standard_normal((count, dim)).astype(np.float32) / np.sqrt(dim)
        else:
            points = points + noise * rng.standard_normal((count, dim)).astype(np.float32) / np.sqrt(dim)
        x = points / np.linalg.norm(points, axis=1, keepdims=True)
        if begin + count <= n:
            base[begin : begin + count] = x
        else:
            split = max(0, n - begin)
            base[begin : begin + split] = x[:split]
            np.save(folder / "queries.npy", x[split:])
    base.flush()


def ground_truth(folder: Path, k: int) -> None:
    import faiss

    base = np.load(folder / "base.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    index = faiss.IndexFlatIP(base.shape[1])
    for begin in range(0, len(base), 200_000):
        index.add(np.ascontiguousarray(base[begin : begin + 200_000]))
    started = time.perf_counter()
    _, ids = index.search(queries, k)
    (folder / "exact_ms.txt").write_text(str((time.perf_counter() - started) * 1000 / len(queries)))
    np.save(folder / "truth.npy", ids)


def _peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, inherited over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: an upper bound


def use_vectors(folder: Path, source: Path, queries: int) -> None:
    """Your own embeddings (an .npy of float32 rows, e.g. exported from the catalog): the last ``queries``
    rows become the queries, the rest the base."""
    data = np.load(source, mmap_mode="r")
    base = np.lib.format.open_memmap(
        folder / "base.npy", mode="w+", dtype=np.float32, shape=(len(data) - queries, data.shape[1])
    )
    for begin in range(0, len(base), 100_000):
        x = np.asarray(data[begin : min(begin + 100_000, len(base))], dtype=np.float32)
        base[begin : begin + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = np.asarray(data[len(base) :], dtype=np.float32)
    np.save(folder / "queries.npy", q / np.linalg.norm(q, axis=1, keepdims=True))
    base.flush()


def run_one(folder: Path, factory: str, k: int) -> dict:
    """Build ``factory`` over base.npy, as the indexer does, then measure it (in this child process)."""
    from indexer import builder, store, vector_index

    base = np.load(folder / "base.npy", mmap_mode="r")
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    n, dim = base.shape
    if factory == "auto":
        factory = vector_index.choose_factory(n, dim)

    def fetch(ids: np.ndarray):  # type: ignore[no-untyped-def]  # the base rows of sorted ids, in chunks
        for begin in range(0, len(ids), 65_536):
            chosen = ids[begin : begin + 65_536]
            yield chosen, np.ascontiguousarray(base[chosen])

    started = time.perf_counter()
    index, defaults = builder.build_index(np.arange(n, dtype=np.int64), dim, factory, fetch)
    built = time.perf_counter() - started
    peak_rss = _peak_rss_bytes()
    meta = store.publish(folder / "index", index, checkpoint_id="bench", factory=factory, search_defaults=defaults)
    file_bytes = (meta.path / store.INDEX_FILE).stat().st_size
    del index
    published = store.load_published_index(folder)  # memory-mapped, as the service reads it
    rows = []
    defaults = published.meta.search_defaults
    param = next(iter(defaults), None)
    sweep = sorted({*SWEEPS.get(param, []), *defaults.values()}) if param else [None]
    for value in sweep:
        kwargs = {} if value is None else {"nprobe" if param == "nprobe" else "ef_search": value}
        published.search(queries[:10], k, **kwargs)  # warm the mapping
        started = time.perf_counter()
        _, ids = published.search(queries, k, **kwargs)
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth, strict=True)]))
        rows.append(
            {
                "param": f"{param}={value}" if value else "exact",
                "default": value == defaults.get(param),
                "ms": ms,
                "recall": recall,
            }
        )
    return {
        "n": n,
        "dim": dim,
        "factory": factory,
        "build_s": built,
        "file_mb": file_bytes / 2**20,
        "peak_rss_mb": peak_rss / 2**20,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--noise", type=float, default=1.0, help="within-cluster noise (see make_data)")
    parser.add_argument("--latent", type=int, default=64, help="intrinsic dimension; 0: isotropic noise")
    parser.add_argument("--base", type=Path, default=None, help="an .npy of real embeddings instead of synthetic")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--factories", nargs="+", default=DEFAULT_FACTORIES, help="factory strings, or auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "FACTORY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), args.child[1], args.k)))
        return

    with tempfile.TemporaryDirectory(prefix="tvr-bench-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if args.base is not None and not (folder / "base.npy").exists():
            use_vectors(folder, args.base, args.queries)
        if not (folder / "base.npy").exists():
            make_data(folder, args.vectors, args.dim, args.queries, args.clusters, args.noise, args.latent)
        if not (folder / "truth.npy").exists():
            ground_truth(folder, args.k)
        exact_ms = float((folder / "exact_ms.txt").read_text())
        print(f"data and ground truth ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        results = []
        for factory in args.factories:
            print(f"building {factory} ...", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, __file__, "--k", str(args.k), "--child", str(folder), factory],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["label"] = factory
            results.append(result)
            print(json.dumps(result), file=sys.stderr)

    import faiss

    n, dim = results[0]["n"], results[0]["dim"]
    if args.base:
        data = f"{n:,} vectors of {args.base}, dim {dim}"
    else:
        data = (
            f"{n:,} synthetic vectors, dim {dim}, {args.clusters} clusters (latent {args.latent}, noise {args.noise})"
        )
    print(
        f"\n{data}; {args.queries} queries, recall@{args.k} against exact search ({exact_ms:.2f} ms/query exact, "
        f"batch of {args.queries}); faiss {faiss.__version__}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}\n"
    )
    columns = "factory | build s (train, add, calibrate) | index file MB | peak RSS MB | search params | ms/query"
    print(f"| {columns} | recall@{args.k} |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in results:
        name = r["factory"] + (" (auto)" if r["label"] == "auto" else "")
        for i, row in enumerate(r["rows"]):
            head = (
                f"| {name} | {r['build_s']:.1f} | {r['file_mb']:.0f} | {r['peak_rss_mb']:.0f}" if i == 0 else "| | | | "
            )
            param = row["param"] + (" (default)" if row["default"] else "")
            print(f"{head} | {param} | {row['ms']:.3f} | {row['recall']:.3f} |")


if __name__ == "__main__":
    main()
