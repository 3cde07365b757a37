"""Virtual nodes from the Kubernetes API, for clusters whose /system/status cannot list them.

No Kubernetes runs here: a loopback HTTP server answers the one call the kubernetes client makes
(GET /api/v1/nodes with a label selector) with node objects shaped as interLink's virtual kubelet
publishes them (INTERLINK.md section 4).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from oscar_jupyter.client import OscarClient
from oscar_jupyter.config import ClusterProfile
from oscar_jupyter.nodes import list_nodes_from_kubernetes
from oscar_jupyter.session import Session


def vk_node(name: str, label: str, cpu: str, memory: str, gpus: str | None, ready: str) -> dict:
    capacity = {"cpu": cpu, "memory": memory, "pods": "100"}
    if gpus:
        capacity["nvidia.com/gpu"] = gpus
    key, value = label.split("=")
    return {
        "metadata": {"name": name, "labels": {key: value, "kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": "virtual-node.interlink/no-schedule", "value": "true",
                             "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": capacity,
                   "conditions": [{"type": "Ready", "status": ready}]},
    }


NODES = [
    vk_node("vega-new-vk", "virtual-node.interlink/type=virtual-kubelet", "512", "1000Gi", "8",
            "True"),
    vk_node("old-vk", "type=virtual-kubelet", "100", "3000G", None, "False"),
]


@pytest.fixture()
def kube_api():
    selectors: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            selectors.append(selector)
            items = [n for n in NODES if selector in (
                f"{k}={v}" for k, v in n["metadata"]["labels"].items())]
            body = json.dumps({"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                               "items": items}).encode()
            self.send_response(200 if url.path == "/api/v1/nodes" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", selectors
    server.shutdown()


@pytest.fixture()
def kubeconfig(kube_api, tmp_path, monkeypatch):
    url, _ = kube_api
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "kube-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_both_interlink_labels_are_listed_with_their_capacity(kubeconfig, kube_api):
    nodes = list_nodes_from_kubernetes(str(kubeconfig))
    assert [n.name for n in nodes] == ["old-vk", "vega-new-vk"]
    vega = nodes[1]
    assert (vega.status, vega.cpu_total, vega.gpus, vega.is_interlink) == ("Ready", 512, 8, True)
    assert vega.memory_total_bytes == 1000 * 1024**3
    assert nodes[0].status == "NotReady" and nodes[0].memory_total_bytes == 3000 * 10**9
    assert kube_api[1] == ["virtual-node.interlink/type=virtual-kubelet", "type=virtual-kubelet"]


def test_the_session_falls_back_to_kubernetes_when_oscar_cannot_list_nodes(kubeconfig):
    # Nothing listens on port 9: /system/status fails like an OSCAR without metrics-server.
    client = OscarClient(ClusterProfile(cluster_id="x", endpoint="http://127.0.0.1:9"), retries=0)
    nodes, problem = Session._discover_nodes(client)
    assert problem is None
    assert [n.name for n in nodes] == ["old-vk", "vega-new-vk"]


def test_without_a_kubeconfig_the_warning_says_names_go_unchecked(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    client = OscarClient(ClusterProfile(cluster_id="x", endpoint="http://127.0.0.1:9"), retries=0)
    nodes, problem = Session._discover_nodes(client)
    assert nodes is None and "names go unchecked" in problem
