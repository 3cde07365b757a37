"""Times and ids as every job view shows them: local clock time with a relative form ("3 min
ago"), ISO UTC for tooltips, durations as Slurm writes them, short job ids. One place, so the
cell, `%oscar_jobs`, the jobs table and the sidebar agree; labextension/src/format.ts is held to
the same golden cases (tests/golden/vocabulary.json)."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_iso(value: str | None) -> datetime | None:
    """An ISO time as OSCAR or a record writes it ('...Z' or with an offset); None if not one."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def iso_utc(stamp: datetime | None, timespec: str = "seconds") -> str:
    """'2026-12-01T17:38:06Z' ("" for None): the exact time, for tooltips and JSON."""
    if stamp is None:
        return ""
    return stamp.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def now_iso() -> str:
    """This moment as `iso_utc` writes it."""
    return iso_utc(datetime.now(timezone.utc))


def local_time(stamp: datetime | None, now: datetime | None = None) -> str:
    """'14:03:12' today, 'Nov 30 14:03' on another day, in this machine's time zone."""
    if stamp is None:
        return ""
    local = stamp.astimezone()
    today = (now or datetime.now(timezone.utc)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    return f"{local.strftime('%b')} {local.day} {local.strftime('%H:%M')}"


def relative(stamp: datetime | None, now: datetime | None = None) -> str:
    """'just now', '42 s ago', '3 min ago', '2 h ago', '5 d ago' ('in 3 s' for a clock ahead)."""
    if stamp is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - stamp).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 5:
        return "just now"
    if seconds < 60:
        amount = f"{int(seconds)} s"
    elif seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 86400:
        amount = f"{int(seconds // 3600)} h"
    else:
        amount = f"{int(seconds // 86400)} d"
    return f"in {amount}" if ahead else f"{amount} ago"


def local_and_relative(stamp: datetime | None, now: datetime | None = None) -> str:
    """'14:03:12 (3 min ago)'; "" for None."""
    if stamp is None:
        return ""
    return f"{local_time(stamp, now)} ({relative(stamp, now)})"


NO_TIME = "—"


def duration(seconds: float | None) -> str:
    """A duration as Slurm writes a walltime: '00:00:42', '00:03:05', '02:03:00', '1-04:00:00';
    '—' for None. Elapsed time, walltime and run time read alike in every view."""
    if seconds is None:
        return NO_TIME
    total = int(max(0.0, seconds))
    days, rest = divmod(total, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def short_id(job: str) -> str:
    """A job's own part of its name (12 hex digits), which every magic that takes a job
    accepts: 'oj-1a2b3c-...-5d799e-9827865a7cfd' -> '9827865a7cfd'."""
    return job.rsplit("-", 1)[-1]


def size(count: int | float) -> str:
    """A size in bytes as every view writes it: '512 B', '312.4 MiB', '27.9 GiB'."""
    amount = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{count} B"
