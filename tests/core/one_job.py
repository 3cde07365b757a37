"""A stand-in for OSCAR that knows one ended job: a `Job` built on it reads that job's log."""

from __future__ import annotations


class OneJobOscar:
    """Lists one ended job and serves its log."""

    def __init__(self, log: str) -> None:
        self.log = log

    def list_jobs(self, service: str) -> dict:
        return {"job-1": {"status": "Succeeded"}}

    def job_logs(self, service: str, job: str) -> str:
        return self.log
