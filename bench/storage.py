"""Benchmark object storage: put and get of a 256 MB file through `studioops` against raw boto3 on the same server.

Run: `.venv/bin/python bench/storage.py` (BENCH_MB=256, BENCH_RUNS=3). Starts its own embedded stack in a temporary
home, prints medians, the ratio ours/raw boto3 (target >= 0.9x throughput, i.e. time ratio <= 1.11x), and the ratio
against a plain file copy on the same disk (the physical limit).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from studioops import stack
from studioops.config import Settings
from studioops.stack.process import free_port
from studioops.storage import Storage
from studioops.storage.client import endpoint_url

SIZE_MB = int(os.environ.get("BENCH_MB", "256"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-s3-") as tmp:
        root = Path(tmp)
        settings = Settings(
            _env_file=None,
            studioops_home=root / "home",
            database_url=f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
            minio_endpoint=f"localhost:{free_port()}",
            minio_access_key="bench",
            minio_secret_key="bench-secret-key-12",
        )
        stack.up(settings)
        try:
            src = root / "src.bin"
            with src.open("wb") as f:
                for _ in range(SIZE_MB):
                    f.write(os.urandom(1024 * 1024))
            ours = Storage.from_settings(settings)
            raw = boto3.client(
                "s3", endpoint_url=endpoint_url(settings), aws_access_key_id="bench",
                aws_secret_access_key="bench-secret-key-12", region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"),
            )
            results: dict[str, list[float]] = {k: [] for k in
                                               ("ours_put", "ours_get", "raw_put", "raw_get", "copy")}
            for _ in range(RUNS):
                key = f"bench/{uuid.uuid4().hex}.bin"
                results["ours_put"].append(timed(lambda k=key: ours.put_file(src, "uploads", k)))
                results["ours_get"].append(timed(lambda k=key: ours.get_file("uploads", k, root / "ours.bin")))
                ours.delete("uploads", key)
                results["raw_put"].append(timed(lambda k=key: raw.upload_file(str(src), "uploads", k)))
                results["raw_get"].append(timed(lambda k=key: raw.download_file("uploads", k, str(root / "raw.bin"))))
                raw.delete_object(Bucket="uploads", Key=key)
                results["copy"].append(timed(lambda: shutil.copyfile(src, root / "copy.bin")))
                for name in ("ours.bin", "raw.bin", "copy.bin"):
                    (root / name).unlink()
        finally:
            stack.down(settings)

    med = {k: statistics.median(v) for k, v in results.items()}
    mbps = {k: SIZE_MB / v for k, v in med.items()}
    print(f"object storage benchmark: {SIZE_MB} MB file, median of {RUNS} runs, embedded SeaweedFS on loopback")
    for op in ("put", "get"):
        ratio = mbps[f"ours_{op}"] / mbps[f"raw_{op}"]
        print(f"{op}: studioops {med[f'ours_{op}']:.2f} s ({mbps[f'ours_{op}']:.0f} MB/s)   "
              f"raw boto3 {med[f'raw_{op}']:.2f} s ({mbps[f'raw_{op}']:.0f} MB/s)   "
              f"throughput ratio {ratio:.2f}x (target >= 0.9x) {'ok' if ratio >= 0.9 else 'BELOW TARGET'}   "
              f"vs file copy {med['copy']:.2f} s ({mbps['copy']:.0f} MB/s): {mbps[f'ours_{op}'] / mbps['copy']:.2f}x")


if __name__ == "__main__":
    main()
