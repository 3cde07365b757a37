"""Between Kubernetes and the plugin's files: what interLink's virtual kubelet (VK) and the Slurm
plugin's HTTP handlers add, the same in interLink 0.6.1 and 0.6.2 and plugin 0.6.1 and
0.6.2-pre5 (reference OSCAR.md section 13; line numbers at those tags).

* B3: the plugin's `/create` answers 504 with sbatch's stderr as soon as sbatch writes anything
  there, and removes the job directory (plugin `pkg/slurm/Create.go` 258-264, sbatch's stderr
  test in `prepare.go` 1398-1401). interLink's API wraps the answer, the VK wraps it again and
  sets the pod Failed with reason `ProviderFailed` and that text as message (interLink 0.6.1
  `pkg/virtualkubelet/virtualkubelet.go` 1673-1736; 0.6.2 1698-1737 and 1876). OSCAR's job
  listing carries no reason (OSCAR `pkg/types/jobinfo.go` 22-27), so only the pod status (the
  Kubernetes API) says why.
* B9: the VK asks for one pod's status at a time every 5 s (interLink `virtualkubelet.go`
  1917-1978 at 0.6.1), and the plugin answers from one global cache for 10 s (`Status.go` 125,
  472-476): within 10 s of the last computation every pod gets that computation's answer,
  which names its own pod, so at most one pod's state changes per 10 s.
* B13: the virtual node advertises its configured capacity, 100 CPUs, 3000G, 10000 pods and
  no GPU by default (interLink `virtualkubelet.go` 52-56, `GetResources` 326-369): a GPU count
  of 0 is left out of the list. interLink 0.6.2 can take the site's free resources from the
  plugin's ping answer (`virtualkubelet.go` 661-671 at 0.6.2), but plugin 0.6.2-pre5 answers
  the ping with `sinfo -s` text (`Status.go` 107-123), so the capacity stays configured.
"""

from __future__ import annotations

import random
from typing import Any

from .interlink import parse_quantity

# interLink pkg/virtualkubelet/virtualkubelet.go 52-56 (0.6.1 and 0.6.2).
DEFAULT_CPU_CAPACITY = "100"
DEFAULT_MEMORY_CAPACITY = "3000G"
DEFAULT_POD_CAPACITY = "10000"
# interLink virtualkubelet.go 1918-1925 (statusLoop's timer).
STATUS_LOOP_S = 5.0
# Plugin pkg/slurm/Status.go 125 (`timeNow.Sub(timer) >= time.Second*10`).
PLUGIN_STATUS_CACHE_S = 10.0
# Plugin pkg/slurm/GetLogs.go 63 and 134: follow mode (B6) sleeps 4 s between reads of a
# container log that has not grown, or does not exist yet (kubernetes_api.PodLogHandler).
FOLLOW_POLL_S = 4.0
PROVIDER_FAILED = "ProviderFailed"


def node_capacity(cpu: str, memory: str, gpus: int) -> dict[str, str]:
    """The node's `status.capacity` (= allocatable) as `GetResources` builds it."""
    for value, what in ((cpu, "the node's CPU capacity"), (memory, "the node's memory capacity")):
        parse_quantity(value, what=what)
    capacity = {"cpu": cpu, "memory": memory, "pods": DEFAULT_POD_CAPACITY}
    if gpus > 0:
        capacity["nvidia.com/gpu"] = str(gpus)
    return capacity


def _go_html_escape(text: str) -> str:
    """Go's `html.EscapeString` (interLink `pkg/interlink/api/handler.go` 174)."""
    for plain, escaped in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(plain, escaped)
    return text.replace('"', "&#34;")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES |= {"\v": "\\v", "\\": "\\\\", '"': '\\"'}


def _go_quote(text: str) -> str:
    """Go's `strconv.Quote`, as `%#v` prints a string field."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def provider_failed_message(plugin_answer: str, session: str | None = None) -> str:
    """The pod status message when the plugin's `/create` answered 504 with `plugin_answer`.

    The plugin writes its error text (`pkg/slurm/func.go` 175-181); interLink's API answers
    "<session message> call exit status: 500. Body: ..." HTML-escaped (`pkg/interlink/api/
    handler.go` 155-180); the VK's `createRequest` makes it "error creating pod (HTTP 504): ..."
    (`pkg/virtualkubelet/execute.go` 444-446 at 0.6.1) and `RemoteExecution` wraps that once
    more (`execute.go` 1128 at 0.6.1, 1316 at 0.6.2). The session is "CreatePod#<0-99999>"
    (`execute.go` 423).
    """
    session = session or f"CreatePod#{random.randrange(100000)}"
    body = _go_html_escape(plugin_answer)
    inner = (
        f"error creating pod (HTTP 504): HTTP InterLink session {session}:  "
        f"call exit status: 500. Body: {body}"
    )
    return (
        "error doing createRequest() in RemoteExecution() return value  error detail "
        f"&errors.errorString{{s:{_go_quote(inner)}}} error: {inner}"
    )


def provider_failed_status(
    message: str, containers: list[tuple[str, str]], init_containers: list[tuple[str, str]]
) -> dict[str, Any]:
    """The pod status the VK writes after a failed create (module docstring, B3): Failed,
    reason ProviderFailed, every container terminated with exit code 1 and the message.
    `containers` and `init_containers` are (name, image) pairs."""

    def terminated(name: str, image: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": PROVIDER_FAILED, "message": message}},
        }

    return {
        "phase": "Failed",
        "reason": PROVIDER_FAILED,
        "message": message,
        "initContainerStatuses": [terminated(*c) for c in init_containers],
        "containerStatuses": [terminated(*c) for c in containers],
    }
