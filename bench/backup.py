"""Benchmark backups: 1 GB of table data (rows with 1536-dimension vectors) and 1 GB of objects.

Run: `.venv/bin/python bench/backup.py` (BENCH_GB=1.0). Starts its own embedded stack. Times `backup create`
against the raw way in the same run — `pg_dump -Fc` (its default gzip) plus downloading every object with boto3
and `tar -cf` of them — target <= 1.2x; then reports `backup verify` and `backup restore --force` times, and what
the restore's safety copy (the pre-restore archive) costs, against keeping the replaced objects as S3 versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from studioops import stack
from studioops.backup import create_backup, restore_backup, verify_backup
from studioops.backup.create import write_archive
from studioops.backup.database import _env
from studioops.config import Settings
from studioops.stack.postgres import pg_bin
from studioops.stack.process import free_port

GB = float(os.environ.get("BENCH_GB", "1.0"))
OBJECT_MB = 4


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def load_rows(settings: Settings) -> int:
    """Rows of ~6 KB of vector each (plus text), until the table holds GB gigabytes."""
    with psycopg.connect(settings.db.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_embeddings "
                     "(id bigserial PRIMARY KEY, content text NOT NULL, embedding vector(1536) NOT NULL)")
        target = int(GB * 1024**3)
        batch = 5000
        while conn.execute("SELECT pg_total_relation_size('bench_embeddings')").fetchone()[0] < target:
            conn.execute(
                "INSERT INTO bench_embeddings (content, embedding) "
                "SELECT 'chunk ' || g || ' of the summer campaign brief', "
                "(SELECT array_agg(random()::real) FROM generate_series(1, 1536) WHERE g > 0)::vector "
                "FROM generate_series(1, %s) AS g", (batch,))
        return conn.execute("SELECT count(*) FROM bench_embeddings").fetchone()[0]


def load_objects(settings: Settings) -> int:
    from studioops.storage import Storage

    storage = Storage.from_settings(settings)
    count = int(GB * 1024 / OBJECT_MB)
    for i in range(count):
        storage.put_bytes("documents", f"projects/bench/{i:05d}.bin", os.urandom(OBJECT_MB << 20))
    return count


def raw_backup(settings: Settings, root: Path) -> None:
    """What a hand-written script does: pg_dump -Fc, mirror the objects, tar them."""
    from studioops.storage import Storage

    work = root / "raw"
    work.mkdir()
    subprocess.run([pg_bin("pg_dump"), "--format=custom", "--file", str(work / "db.dump"), "--dbname",
                    settings.db.dbname], check=True, env=_env(settings.db))
    storage = Storage.from_settings(settings)
    mirror = work / "objects"
    for bucket in storage.list_buckets():
        if bucket == "backups":
            continue
        for obj in storage.iter_objects(bucket):
            dest = mirror / bucket / obj.key
            dest.parent.mkdir(parents=True, exist_ok=True)
            if obj.key.endswith("/"):
                continue
            storage.client.download_file(bucket, obj.key, str(dest))
    subprocess.run(["tar", "-cf", str(root / "raw.tar"), "-C", str(work), "."], check=True)
    shutil.rmtree(work)


def overwrite(settings: Settings, versioned: bool) -> float:
    """The alternative safety copy: with versioning on, an overwritten object keeps its old version."""
    from studioops.storage import Storage

    storage = Storage.from_settings(settings)
    if versioned:
        storage.client.put_bucket_versioning(Bucket="documents", VersioningConfiguration={"Status": "Enabled"})
    keys = [o.key for o in storage.iter_objects("documents", "projects/bench/")]
    start = time.perf_counter()
    for key in keys:
        storage.put_bytes("documents", key, os.urandom(OBJECT_MB << 20))
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-backup-") as tmp:
        root = Path(tmp)
        settings = Settings(_env_file=None, studioops_home=root / "home",
                            database_url=f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
                            minio_endpoint=f"localhost:{free_port()}", backup_upload=False)
        stack.up(settings)
        try:
            t_rows, rows = timed(lambda: load_rows(settings))
            t_objs, objs = timed(lambda: load_objects(settings))
            print(f"backup benchmark: {GB:.1f} GB of table data ({rows:,} rows with vector(1536)) loaded in "
                  f"{t_rows:.0f}s, {objs} objects of {OBJECT_MB} MB loaded in {t_objs:.0f}s, {os.cpu_count()} cores")
            t_raw, _ = timed(lambda: raw_backup(settings, root))
            raw_size = (root / "raw.tar").stat().st_size
            (root / "raw.tar").unlink()
            t_ours, result = timed(lambda: create_backup(settings, prune=False))
            ratio = t_ours / t_raw
            print(f"raw pg_dump -Fc + mirror + tar     {t_raw:7.1f} s   {raw_size / 2**30:.2f} GiB")
            print(f"studioops backup create           {t_ours:7.1f} s   {result.size / 2**30:.2f} GiB   "
                  f"ratio {ratio:.2f}x (target <= 1.2x) {'ok' if ratio <= 1.2 else 'OVER TARGET'}")
            t_verify, _ = timed(lambda: verify_backup(settings, str(result.path)))
            print(f"studioops backup verify           {t_verify:7.1f} s   (checksums + scratch restore + compare)")
            t_restore, _ = timed(lambda: restore_backup(settings, str(result.path), force=True))
            print(f"studioops backup restore --force  {t_restore:7.1f} s   (checksums + safety copy + restore + "
                  "objects + swap)")
            t_safety, _ = timed(lambda: write_archive(settings, root / "safety", "pre-restore"))
            print(f"  of which the pre-restore archive {t_safety:6.1f} s   ({t_safety / t_restore:.0%} of the restore)")
            t_plain, t_versions = overwrite(settings, versioned=False), overwrite(settings, versioned=True)
            print(f"  S3 versions instead: overwriting every object takes {t_plain:.1f} s plain, {t_versions:.1f} s "
                  "with versioning on (no copy up front; but the database needs a safety copy of its own, and "
                  "versioning cannot be turned off again)")
        finally:
            stack.down(settings)


if __name__ == "__main__":
    main()
