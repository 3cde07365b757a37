"""Follow a job pod's log through the cluster's Kubernetes API, where a kubeconfig reaches it.

OSCAR serves a job's log only whole, so a poll costs the whole log. The Kubernetes API streams
it (`follow=true`): lines reach the kernel as the node writes them, and each byte once. OSCAR
runs a job as a Kubernetes Job in its services namespace (`oscar-svc`); the Job controller
labels the pod `job-name=<job>`, and the runner's output is the `oscar-container` log (the same
text OSCAR's log route serves). Any error hands the job back to polling OSCAR, which resumes
exactly (the parser de-duplicates).
"""

from __future__ import annotations

import codecs
import os
import re
import threading
import time
from typing import Any, Protocol

from .config import JupyterSettings


class StreamSink(Protocol):
    """What a follower feeds: a job handle (`jobs.Job`), named here without importing it."""

    name: str

    def is_done(self) -> bool: ...

    def feed_stream(self, text: str, follower: Follower) -> None: ...


NAMESPACE = "oscar-svc"
CONTAINER = "oscar-container"
JOB_LABEL = "job-name"
# How long to keep looking for the pod / waiting for its container while the job waits.
RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0
# A stream silent for this long is dropped and polling takes over (a dead connection can block
# a read for ever; a quiet cell merely costs one reconnect-free switch to polling).
READ_TIMEOUT_SECONDS = 120.0
CHUNK_BYTES = 64 * 1024


# B6 (reference OSCAR.md section 13): while run-<container>.out does not exist yet, the Slurm
# plugin writes this into the followed log every 4 s, without a newline, so it joins the first
# line of output (interlink-slurm-plugin pkg/slurm/GetLogs.go 52-55 at 0.6.1, session prefix
# func.go 197-199); and an error opening the file the same way (GetLogs.go 66-69).
_PLUGIN_SESSION = "HTTP InterLink session "
_INJECTED = re.compile(
    re.escape(_PLUGIN_SESSION)
    + r"[^:\n]*: (?:Cannot open in follow mode the container logs [^\n]*? because it does not "
    r"exist yet, sleeping before retrying\.\.\.|could not open file to follow logs at [^\n]*? "
    r"error type: [^\n]*? error: [^\n]*?(?=\n|$))"
)
_HOLD_LIMIT = 4096  # longest text held back as a possible beginning of an injected message


class InjectedTextFilter:
    """Removes the plugin's injected follow messages from a stream fed in pieces: a piece's
    end that may begin such a message is held back until the next piece (or `end`)."""

    def __init__(self) -> None:
        self._held = ""
        self.removed = 0  # messages removed

    def feed(self, text: str) -> str:
        text, count = _INJECTED.subn("", self._held + text)
        self.removed += count
        start = _possible_start(text)
        self._held = text[start:]
        return text[:start]

    def end(self) -> str:
        held, self._held = self._held, ""
        return held


def _possible_start(text: str) -> int:
    """Where an unfinished injected message may begin at the end of `text` (len: nowhere)."""
    at = text.rfind(_PLUGIN_SESSION)
    if at >= 0 and "\n" not in text[at:] and len(text) - at < _HOLD_LIMIT:
        return at
    for size in range(min(len(_PLUGIN_SESSION) - 1, len(text)), 0, -1):
        if _PLUGIN_SESSION.startswith(text[-size:]):
            return len(text) - size
    return len(text)


def strip_injected(text: str) -> str:
    """A whole followed log without the plugin's injected messages."""
    return _INJECTED.sub("", text)


def kubeconfig_at_hand(profile: Any = None) -> str | None:
    """The kubeconfig the profile names (`jupyter: kubeconfig:`), if it exists: never
    $KUBECONFIG or ~/.kube/config, which may be another cluster's (OSCAR gives its users no
    Kubernetes access, so only a profile that names the cluster's own can follow pod logs)."""
    path = JupyterSettings.of(profile).kubeconfig
    return path if path and os.path.isfile(path) else None


def start_follower(job: StreamSink, kubeconfig: str | None = None) -> Follower | None:
    """A running follower of `job`'s pod log; None without a kubeconfig or `kubernetes`."""
    path = kubeconfig
    if not path:
        return None
    try:
        from kubernetes import client, config
    except ImportError:
        return None
    try:
        api = client.CoreV1Api(config.new_client_from_config(config_file=path))
    except Exception:  # an unreadable or incomplete kubeconfig: keep polling
        return None
    follower = Follower(job, api)
    follower.start()
    return follower


def pod_status_message(job_name: str, kubeconfig: str, namespace: str = NAMESPACE) -> str | None:
    """The status message of `job_name`'s pod (the Slurm plugin's refusal, B3), or None."""
    try:
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
        pods = api.list_namespaced_pod(
            namespace, label_selector=f"{JOB_LABEL}={job_name}", _request_timeout=10
        )
    except Exception:  # no client, no access, no answer: nothing to add
        return None
    for pod in pods.items:
        status = pod.status
        message = (getattr(status, "message", None) or "").strip()
        if message:
            reason = getattr(status, "reason", None)
            return f"{reason}: {message}" if reason else message
    return None


class Follower:
    """One thread streaming one job's pod log into the job; `streaming` while the stream is
    open. It ends with the stream (the pod ended, was deleted, or an error): polling resumes."""

    def __init__(self, job: StreamSink, api: Any, namespace: str = NAMESPACE) -> None:
        self.job = job
        self.api = api
        self.namespace = namespace
        self.streaming = False
        self.error: str | None = None  # why the stream stopped, when it failed
        self.chars = 0  # characters received
        self.fed_at = time.monotonic()  # when the stream last brought text (or opened)
        self._text: list[str] = []
        self._thread = threading.Thread(
            target=self._run, name=f"oscar-follow-{job.name}", daemon=True
        )

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        """Everything the stream has brought (the pod's log from its start)."""
        return "".join(self._text)

    def _run(self) -> None:
        try:
            response = self._open()
            if response is not None:
                self._stream(response)
        except Exception as err:  # anything: polling OSCAR takes over
            self.error = f"{type(err).__name__}: {err}"
        finally:
            self.streaming = False

    def _open(self) -> Any:
        """The log stream, once the pod exists and its container has started."""
        from kubernetes.client.exceptions import ApiException

        delay = RETRY_SECONDS
        while not self.job.is_done():
            pods = self.api.list_namespaced_pod(
                self.namespace, label_selector=f"{JOB_LABEL}={self.job.name}"
            )
            if pods.items:
                try:
                    return self.api.read_namespaced_pod_log(
                        pods.items[0].metadata.name,
                        self.namespace,
                        container=CONTAINER,
                        follow=True,
                        _preload_content=False,
                        _request_timeout=(10.0, READ_TIMEOUT_SECONDS),
                    )
                except ApiException as err:
                    if err.status not in (400, 404):  # 400: the container is still waiting
                        raise
            time.sleep(delay)
            delay = min(MAX_RETRY_SECONDS, delay * 1.5)
        return None

    def _stream(self, response: Any) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        injected = InjectedTextFilter()  # B6: the plugin's own messages are not the job's log
        self.fed_at = time.monotonic()
        self.streaming = True
        try:
            while True:
                data = response.read1(CHUNK_BYTES)
                if not data:
                    break
                text = injected.feed(decoder.decode(data))
                if text:
                    self._text.append(text)
                    self.chars += len(text)
                    self.fed_at = time.monotonic()
                    self.job.feed_stream(text, self)
            tail = injected.feed(decoder.decode(b"", final=True)) + injected.end()
            if tail:
                self._text.append(tail)
                self.job.feed_stream(tail, self)
        finally:
            response.release_conn()
