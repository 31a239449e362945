"""Remote-store round trip: clips written/s and read/s against an S3 server (moto, started here on
localhost) next to the same store on local disk, measured in one run.

    python bench/bench_remote.py [--videos 8] [--endpoint http://host:9000 --bucket B]

Tracks are the synthetic set's oracle tracks (16 x 16 grid, T = 12, the paper's clip). Without
``--endpoint`` a moto server is started in this process: moto keeps objects in memory and answers
over HTTP on localhost, so the figures measure the client side (s3fs + zarr, one request per chunk
file, HTTP round trips) rather than a real network or object store.
Reads: a fresh reader over every clip in random order; "cold" decodes each chunk once (the chunk
cache on, as training uses it), "no cache" fetches a chunk for every clip (cache_mb=0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--endpoint", default=None, help="an S3 endpoint to use instead of moto")
    ap.add_argument("--bucket", default="mosic-bench")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = ap.parse_args()

    server = None
    if a.endpoint is None:
        server, a.endpoint = start_moto()
        for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ[k] = v
    os.environ["AWS_ENDPOINT_URL"] = a.endpoint

    from mosic.config import load_pipeline
    from mosic.data.synthetic import generate
    from mosic.precompute.runner import precompute
    from mosic.store_schema import layout as L
    from mosic.store_schema import location
    from mosic.store_schema.reader import StoreReader
    from mosic.store_schema.writer import StoreWriter

    fs, _ = location.filesystem(f"s3://{a.bucket}")
    if not fs.exists(a.bucket):
        fs.mkdir(a.bucket)
    run = f"s3://{a.bucket}/bench-{os.getpid()}-{int(time.time())}"

    work = Path(tempfile.mkdtemp(prefix="mosic-bench-remote-"))
    generate(work / "synthetic", videos=a.videos, seed=123)
    cfg = load_pipeline("synthetic-oracle", overrides={
        "dataset.root": str(work / "synthetic"), "stores": str(work / "stores"), "clips.stride": 2,
        "clips.step": 2, "tracker.grid": 16})
    src = StoreReader(precompute(cfg, progress=False).store)
    clips = [src.clips[i] for i in src.done]
    tracks = np.stack([src[i].tracks for i in src.done])
    vis = np.stack([src[i].visibility for i in src.done])
    C, T, N, _ = tracks.shape
    print(f"{C} clips x {T} frames x {N} points, {cfg.store.clips_per_chunk} clips per chunk; "
          f"S3 endpoint {a.endpoint}{' (moto, in this process)' if server else ''}")

    results: dict = {"clips": C, "T": T, "N": N, "clips_per_chunk": cfg.store.clips_per_chunk,
                     "endpoint": "moto-localhost" if server else a.endpoint}
    order = np.random.default_rng(0).permutation(C)
    for kind, loc in (("local", work / "out.zarr"), ("s3", location.URL(f"{run}/out.zarr"))):
        t0 = time.perf_counter()
        w = StoreWriter.open_or_create(loc, src.spec, clips, clips_per_chunk=cfg.store.clips_per_chunk)
        t_create = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s, e, _ in w.todo():
            w.write_chunk(s, tracks[s:e], vis[s:e], np.full(e - s, L.DONE, np.uint8))
        w.finalize()
        t_write = time.perf_counter() - t0
        row = {"create_s": t_create, "write_clips_per_s": C / t_write, "bytes": location.size_bytes(loc)}
        for label, cache_mb in (("read_cold_clips_per_s", 256), ("read_nocache_clips_per_s", 0)):
            t0 = time.perf_counter()
            r = StoreReader(loc, cache_mb=cache_mb)
            t_open = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = [r[int(i)].tracks for i in order]
            row[label] = C / (time.perf_counter() - t0)
            row["open_s"] = t_open
            assert all(np.array_equal(g, tracks[i]) for g, i in zip(got, order))
        results[kind] = row
        print(f"{kind:5s} create {t_create:6.2f} s | write {row['write_clips_per_s']:8.0f} clips/s | open "
              f"{row['open_s']:5.2f} s | read cold {row['read_cold_clips_per_s']:8.0f} clips/s | read no cache "
              f"{row['read_nocache_clips_per_s']:8.0f} clips/s | {row['bytes'] / 2**20:.2f} MiB")
    fs.rm(run, recursive=True)
    shutil.rmtree(work, ignore_errors=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
