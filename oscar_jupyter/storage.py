"""The user's bucket on the cluster's object storage (OSCAR's MinIO), spoken to in plain S3.

OSCAR's `/system/config` gives the caller's own MinIO keys (the admin's for Basic); the bucket is
made through OSCAR's `POST /system/buckets`, private to its owner, named after the owner and the
cluster like the runner services (`oscar-jupyter-<owner tag>`). Each job's objects live under
`jobs/<job name>/`; the job itself never gets these keys, only presigned URLs for exactly its
own objects (`presign`). Transfers stream with a SHA-256 and report progress.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .client import OscarClient, OscarError
from .config import Secret

BUCKET_PREFIX = "oscar-jupyter"
JOBS_FOLDER = "jobs/"
PART_BYTES = 16 * 1024 * 1024
TRANSFER_THREADS = 8
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
CHUNK = 1024 * 1024

Progress = Callable[[int], None]  # bytes moved since the last call


class StorageUnavailable(RuntimeError):
    """The cluster offers no object storage to this user, or it cannot be reached."""


@dataclass(frozen=True)
class StorageAccess:
    """`minio_provider` of `/system/config`."""

    endpoint: str
    access_key: Secret
    secret_key: Secret
    region: str
    verify: bool

    @classmethod
    def of(cls, config: dict[str, Any]) -> StorageAccess | None:
        provider = config.get("minio_provider") or {}
        if not provider.get("endpoint") or not provider.get("access_key"):
            return None
        return cls(
            endpoint=str(provider["endpoint"]).rstrip("/"),
            access_key=Secret(str(provider["access_key"])),
            secret_key=Secret(str(provider.get("secret_key") or "")),
            region=str(provider.get("region") or "us-east-1"),
            verify=bool(provider.get("verify", True)),
        )


def job_prefix(job_name: str) -> str:
    return f"{JOBS_FOLDER}{job_name}/"


def bucket_name(owner_tag: str, salt: int = 0) -> str:
    return f"{BUCKET_PREFIX}-{owner_tag}" + (f"-{salt}" if salt else "")


class HashingReader:
    """A file read once, in order, its SHA-256 and size kept (s3transfer reads a source that
    cannot seek part after part)."""

    def __init__(self, handle: IO[bytes], progress: Progress | None = None) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress
        self._lock = threading.Lock()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        with self._lock:
            self.digest.update(data)
            self.size += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data


class UserBucket:
    """This user's bucket on the cluster `client` talks to."""

    def __init__(self, client: OscarClient, owner_tag: str) -> None:
        self.client = client
        self.owner_tag = owner_tag
        self._access: StorageAccess | None = None
        self._s3: Any = None
        self._bucket: str | None = None
        self._lock = threading.Lock()

    @property
    def access(self) -> StorageAccess:
        if self._access is None:
            access = StorageAccess.of(self.client.config())
            if access is None:
                raise StorageUnavailable(
                    f"{self.client.endpoint} offers no object storage to this user "
                    "(/system/config has no MinIO provider): large --in/--out, --upload and "
                    "--download need it; --mount a path of the HPC file system instead"
                )
            self._access = access
        return self._access

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            access = self.access
            self._s3 = boto3.client(
                "s3",
                endpoint_url=access.endpoint,
                aws_access_key_id=access.access_key.reveal(),
                aws_secret_access_key=access.secret_key.reveal(),
                region_name=access.region,
                verify=access.verify,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    max_pool_connections=TRANSFER_THREADS * 2,
                    retries={"max_attempts": 5, "mode": "standard"},
                ),
            )
        return self._s3

    @property
    def name(self) -> str:
        """The bucket, made through OSCAR when missing (a name someone else holds moves on)."""
        with self._lock:
            if self._bucket is None:
                self._bucket = self._ensure_bucket()
            return self._bucket

    def exists(self) -> bool:
        """The user has the bucket already (asked of OSCAR; never made by asking): a view that
        only looks does not make one."""
        with self._lock:
            if self._bucket is not None:
                return True
            mine = {str(b.get("bucket_name")) for b in self.client.list_buckets()}
            found = [bucket_name(self.owner_tag, salt) for salt in range(5)]
            self._bucket = next((name for name in found if name in mine), None)
            return self._bucket is not None

    def _ensure_bucket(self) -> str:
        # OSCAR says which buckets are ours (S3 answers 403 alike for another user's bucket
        # and for none at all); a name someone else holds moves on to the next one.
        mine = {str(b.get("bucket_name")) for b in self.client.list_buckets()}
        for salt in range(5):
            name = bucket_name(self.owner_tag, salt)
            if name in mine:
                return name
            try:
                self.client.create_bucket(name)
            except OscarError as error:
                if error.status_code != 400 or "exists" not in error.message:
                    raise
                continue
            return name
        raise StorageUnavailable("no free bucket name for this user: oscar-jupyter-<tag>[-N]")

    def _unreachable(self, error: Exception) -> StorageUnavailable:
        return StorageUnavailable(
            f"the cluster's object storage at {self.access.endpoint} does not answer from this "
            f"machine ({type(error).__name__}): large --in/--out, --upload and --download need "
            "it; --mount a path of the HPC file system instead"
        )

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=PART_BYTES,
            multipart_chunksize=PART_BYTES,
            max_concurrency=TRANSFER_THREADS,
            use_threads=True,
        )

    def put(self, key: str, source: IO[bytes], progress: Progress | None = None) -> tuple[int, str]:
        """Store what `source` holds; its (size, SHA-256)."""
        reader = HashingReader(source)
        self.s3.upload_fileobj(
            reader,
            self.name,
            key,
            Config=self._transfer_config(),
            Callback=progress,
        )
        return reader.size, reader.digest.hexdigest()

    def put_bytes(self, key: str, data: bytes, progress: Progress | None = None) -> None:
        self.put(key, io.BytesIO(data), progress)

    def get(self, key: str, target: IO[bytes], progress: Progress | None = None) -> None:
        self.s3.download_fileobj(
            self.name, key, target, Config=self._transfer_config(), Callback=progress
        )

    def get_bytes(self, key: str, progress: Progress | None = None) -> bytes:
        buffer = io.BytesIO()
        self.get(key, buffer, progress)
        return buffer.getvalue()

    def get_file(self, key: str, path: Path, progress: Progress | None = None) -> None:
        with open(path, "wb") as handle:
            self.get(key, handle, progress)

    def size_of(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.s3.head_object(Bucket=self.name, Key=key)["ContentLength"])
        except ClientError:
            return None

    def presign(self, key: str, method: str, seconds: int) -> str:
        """A URL that lets its holder GET or PUT exactly `key` for `seconds` (signed here)."""
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        url: str = self.s3.generate_presigned_url(
            operation,
            Params={"Bucket": self.name, "Key": key},
            ExpiresIn=max(60, min(seconds, MAX_PRESIGN_SECONDS)),
        )
        return url

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                yield str(item["Key"])

    def job_names(self) -> set[str]:
        """Jobs that have objects here (for cleanup)."""
        names = set()
        for key in self.keys(JOBS_FOLDER):
            names.add(key[len(JOBS_FOLDER) :].split("/", 1)[0])
        return names

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; how many."""
        keys = list(self.keys(prefix))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.s3.delete_objects(Bucket=self.name, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def __repr__(self) -> str:
        return f"UserBucket({self.client.endpoint!r}, tag={self.owner_tag!r})"
