"""Data of any size through the user's bucket: what goes up before a job, what comes back after.

`--in` values too large for the job's body, `--upload` files and folders go to
`jobs/<job>/...` before the job is sent; the job gets a presigned URL for each of its objects
(GET for what it reads, PUT for what it writes: the `--out` values when large, each `--download`
and a report of them), valid for its walltime plus an hour, sealed with the runner service's
channel key (`cell_program.seal`) so that neither the job's log nor anything shown holds them.
After the job, `JobTransfers.collect` fetches the downloads (also when the cell failed),
`result_blob` the large `--out` values, and `discard` removes the job's objects.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .cell_program import seal
from .spec import SpecError
from .storage import UserBucket, job_prefix

# Above this, `--in` values (base64 of their pickle) go through the bucket: the job's body may
# hold about 62 KiB once compressed, and pickles of arrays hardly compress.
INLINE_INPUT_BYTES = 32 * 1024
# Above this, `--out` values come back through the bucket rather than the log (each log fetch
# brings the whole log again).
INLINE_RESULT_BYTES = 512 * 1024
DEFAULT_REMOTE_FOLDER = "/tmp"
URL_MARGIN_SECONDS = 3600
DEFAULT_URL_SECONDS = 24 * 3600

ProgressFactory = Callable[[str, int], Callable[[int], None]]  # (label, total) -> on_bytes


def _no_progress(label: str, total: int) -> Callable[[int], None]:
    return lambda moved: None


@dataclass(frozen=True)
class Upload:
    local: Path
    remote: str

    @property
    def folder(self) -> bool:
        return self.local.is_dir()


@dataclass(frozen=True)
class Download:
    remote: str
    local: Path


def _remote_path(flag: str, text: str, whole: str) -> str:
    if not text.startswith("/"):
        raise SpecError(
            flag, f"{flag} {whole}: the path in the job must be absolute, e.g. /tmp/{text}"
        )
    if "\x00" in text or ".." in PurePosixPath(text).parts:
        raise SpecError(flag, f"{flag} {whole}: the path in the job may not hold '..' or NUL")
    return str(PurePosixPath(text))


def parse_upload(text: str, base: Path | None = None) -> Upload:
    """`LOCAL[:REMOTE]`: LOCAL must exist here; REMOTE absolute (default /tmp/<name>)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("--upload", "--upload: give LOCAL[:REMOTE], e.g. --upload data.csv")
    local_text, sep, remote_text = text.partition(":")
    local = Path(os.path.expanduser(local_text))
    if base is not None and not local.is_absolute():
        local = base / local
    if not local.exists():
        raise SpecError("--upload", f"--upload {text}: there is no file or folder {local_text}")
    if not (local.is_file() or local.is_dir()):
        raise SpecError("--upload", f"--upload {text}: {local_text} is no file or folder")
    if not os.access(local, os.R_OK):
        raise SpecError("--upload", f"--upload {text}: {local_text} cannot be read")
    remote = (
        _remote_path("--upload", remote_text, text)
        if sep
        else f"{DEFAULT_REMOTE_FOLDER}/{local.resolve().name}"
    )
    return Upload(local, remote)


def parse_download(text: str, base: Path | None = None) -> Download:
    """`REMOTE[:LOCAL]`: REMOTE absolute; LOCAL (default: REMOTE's name here) in a folder
    that exists."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("--download", "--download: give REMOTE[:LOCAL], e.g. /tmp/model.pt")
    remote_text, sep, local_text = text.partition(":")
    remote = _remote_path("--download", remote_text, text)
    name = PurePosixPath(remote).name
    if not name:
        raise SpecError("--download", f"--download {text}: name a file or folder, not /")
    local = Path(os.path.expanduser(local_text)) if sep and local_text else Path(name)
    if base is not None and not local.is_absolute():
        local = base / local
    if not local.parent.is_dir():
        raise SpecError("--download", f"--download {text}: there is no folder {local.parent}")
    return Download(remote, local)


def check_transfers(uploads: Sequence[str], downloads: Sequence[str]) -> None:
    """Refuse bad `--upload`/`--download` values before anything is sent."""
    for flag, items in (("--upload", uploads), ("--download", downloads)):
        if isinstance(items, str) or not isinstance(items, (list, tuple)):
            raise SpecError(flag, f"{flag}: give a list of strings, e.g. ['data.csv']")
    parsed_up = [parse_upload(item) for item in uploads]
    parsed_down = [parse_download(item) for item in downloads]
    remotes = [u.remote for u in parsed_up]
    twice = sorted({r for r in remotes if remotes.count(r) > 1})
    if twice:
        raise SpecError("--upload", f"--upload: two uploads go to {twice[0]}; give one REMOTE")
    locals_ = [str(d.local.resolve()) for d in parsed_down]
    twice = sorted({p for p in locals_ if locals_.count(p) > 1})
    if twice:
        raise SpecError("--download", f"--download: two downloads land at {twice[0]}")


def url_seconds(time_limit_seconds: float | None) -> int:
    if not time_limit_seconds:
        return DEFAULT_URL_SECONDS
    return int(time_limit_seconds) + URL_MARGIN_SECONDS


@dataclass
class JobTransfers:
    """One job's objects in the user's bucket, and what to do with them after it."""

    bucket: UserBucket
    job_name: str
    downloads: list[Download] = field(default_factory=list)
    result_in_bucket: bool = False
    collected: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return job_prefix(self.job_name)

    def key(self, name: str) -> str:
        return self.prefix + name

    # -- before the job

    def prepare(
        self,
        *,
        channel_key: bytes,
        inputs: str,
        uploads: Sequence[Upload],
        downloads: Sequence[Download],
        outputs: bool,
        seconds: int,
        progress: ProgressFactory = _no_progress,
        out_ranks: int = 1,
    ) -> str:
        """Put the job's inputs in the bucket; the sealed manifest the job's program opens."""
        return seal(
            channel_key,
            self.manifest(
                inputs=inputs,
                uploads=uploads,
                downloads=downloads,
                outputs=outputs,
                seconds=seconds,
                progress=progress,
                out_ranks=out_ranks,
            ),
        )

    def manifest(
        self,
        *,
        inputs: str,
        uploads: Sequence[Upload],
        downloads: Sequence[Download],
        outputs: bool,
        seconds: int,
        progress: ProgressFactory = _no_progress,
        out_ranks: int = 1,
    ) -> dict[str, Any]:
        """Put the inputs in the bucket; the manifest of their presigned URLs (`prepare` seals
        it into a job's body; a session cell's object, private like the URLs, holds it as is).
        `out_ranks`: how many ranks send their own --out values (--out-ranks all), each to its
        own object."""
        manifest: dict[str, Any] = {"inline_result_bytes": INLINE_RESULT_BYTES}
        if len(inputs) > INLINE_INPUT_BYTES:
            blob = base64.b64decode(inputs)
            key = self.key("in.pickle")
            self.bucket.put(key, io.BytesIO(blob), progress("--in values", len(blob)))
            manifest["inputs_object"] = {
                "url": self.bucket.presign(key, "GET", seconds),
                "size": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        else:
            manifest["inputs"] = inputs
        manifest["uploads"] = [
            self._upload(index, item, seconds, progress) for index, item in enumerate(uploads)
        ]
        self.downloads = list(downloads)
        manifest["downloads"] = [
            {
                "remote": item.remote,
                "url": self.bucket.presign(self.key(f"download-{i}"), "PUT", seconds),
            }
            for i, item in enumerate(downloads)
        ]
        if downloads:
            manifest["downloads_report"] = self.bucket.presign(
                self.key("downloads.json"), "PUT", seconds
            )
        if outputs:
            manifest["outputs_url"] = self.bucket.presign(self.key("out.pickle"), "PUT", seconds)
            if out_ranks > 1:
                manifest["rank_outputs_urls"] = [
                    self.bucket.presign(self.key(_result_name(rank)), "PUT", seconds)
                    for rank in range(1, out_ranks)
                ]
        return manifest

    def _upload(
        self, index: int, item: Upload, seconds: int, progress: ProgressFactory
    ) -> dict[str, Any]:
        key = self.key(f"upload-{index}")
        label = f"--upload {item.local.name}"
        if item.folder:
            with tempfile.TemporaryFile() as spool:
                with tarfile.open(fileobj=spool, mode="w:") as archive:
                    archive.add(str(item.local), arcname=".")
                total = spool.tell()
                spool.seek(0)
                size, digest = self.bucket.put(key, spool, progress(label, total))
        else:
            with open(item.local, "rb") as source:
                total = os.fstat(source.fileno()).st_size
                size, digest = self.bucket.put(key, source, progress(label, total))
        return {
            "url": self.bucket.presign(key, "GET", seconds),
            "size": size,
            "sha256": digest,
            "remote": item.remote,
            "folder": item.folder,
        }

    # -- after the job

    def collect(self, progress: ProgressFactory = _no_progress) -> list[str]:
        """Fetch the downloads (once); notes for what did not come back."""
        if self.collected or not self.downloads:
            self.collected = True
            return self.notes
        self.collected = True
        try:
            report = json.loads(self.bucket.get_bytes(self.key("downloads.json")))["downloads"]
        except Exception:
            self.notes.append(
                "--download: the job sent nothing back (it ended before its cell did, or could "
                "not reach the object storage)"
            )
            return self.notes
        for index, (item, entry) in enumerate(zip(self.downloads, report, strict=False)):
            if "error" in entry:
                self.notes.append(f"--download {item.remote}: {entry['error']}")
                continue
            self._fetch_download(index, item, entry, progress)
        return self.notes

    def _fetch_download(
        self, index: int, item: Download, entry: dict[str, Any], progress: ProgressFactory
    ) -> None:
        key = self.key(f"download-{index}")
        on_bytes = progress(f"--download {item.remote}", int(entry["size"]))
        with tempfile.NamedTemporaryFile(dir=item.local.parent, delete=False) as spool:
            self.bucket.get(key, spool, on_bytes)
        try:
            size, digest = os.path.getsize(spool.name), _file_sha256(spool.name)
            if size != entry["size"] or digest != entry["sha256"]:
                self.notes.append(
                    f"--download {item.remote}: arrived damaged ({size} of {entry['size']} "
                    f"bytes); {item.local} was left as it was"
                )
                return
            if entry.get("folder"):
                item.local.mkdir(exist_ok=True)
                with tarfile.open(spool.name, mode="r:") as archive:
                    archive.extractall(item.local, filter="data")
            else:
                os.replace(spool.name, item.local)
        finally:
            if os.path.exists(spool.name):
                os.unlink(spool.name)

    def result_blob(self, progress: ProgressFactory = _no_progress, rank: int = 0) -> bytes:
        """The --out values a rank put in the bucket (rank 0's, unless --out-ranks all)."""
        key = self.key(_result_name(rank))
        size = self.bucket.size_of(key) or 0
        label = f"--out values of rank {rank}" if rank else "--out values"
        return self.bucket.get_bytes(key, progress(label, size))

    def discard(self) -> int:
        """Remove the job's objects; how many there were."""
        return self.bucket.delete_prefix(self.prefix)


def _result_name(rank: int) -> str:
    """The object of a rank's large --out values."""
    return f"out-rank-{rank}.pickle" if rank else "out.pickle"


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
