"""Virtual nodes from the Kubernetes API, for clusters whose /system/status cannot list them.

No Kubernetes runs here: a loopback HTTP server answers the one call the kubernetes client makes
(GET /api/v1/nodes with a label selector) with node objects shaped as interLink's virtual kubelet
publishes them (INTERLINK.md section 4), two of them with the two labels interLink has used. OSCAR
is the real local OSCAR (local_cluster.py), whose /system/status lists no virtual node, as a real
cluster's; its fault injector makes it answer 500 where an OSCAR without metrics-server does.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from oscar_jupyter.client import OscarClient
from oscar_jupyter.nodes import discover_nodes, list_nodes_from_kubernetes


def vk_node(name: str, label: str, cpu: str, memory: str, gpus: str | None, ready: str) -> dict:
    capacity = {"cpu": cpu, "memory": memory, "pods": "100"}
    if gpus:
        capacity["nvidia.com/gpu"] = gpus
    key, value = label.split("=")
    return {
        "metadata": {"name": name, "labels": {key: value, "kubernetes.io/hostname": name}},
        "spec": {
            "taints": [
                {
                    "key": "virtual-node.interlink/no-schedule",
                    "value": "true",
                    "effect": "NoSchedule",
                }
            ]
        },
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


NODES = [
    vk_node(
        "vega-new-vk", "virtual-node.interlink/type=virtual-kubelet", "512", "1000Gi", "8", "True"
    ),
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
            items = [
                n
                for n in NODES
                if selector in (f"{k}={v}" for k, v in n["metadata"]["labels"].items())
            ]
            body = json.dumps(
                {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items}
            ).encode()
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
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "kube-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
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


def test_the_session_falls_back_to_kubernetes_when_oscar_cannot_list_nodes(kubeconfig, cluster):
    cluster.faults.answer("GET", "/system/status", 500)  # an OSCAR without metrics-server
    with OscarClient(cluster.basic_profile(), retries=0) as client:
        found = discover_nodes(client, kubeconfig=str(kubeconfig))
    assert found.source == "Kubernetes" and found.warning is None
    assert found.interlink_names == ["old-vk", "vega-new-vk"]
    assert {n.source for n in found.nodes} == {"Kubernetes"}


def test_kubernetes_is_asked_when_oscar_answers_without_virtual_nodes(kubeconfig, cluster):
    # A real cluster's /system/status: only nodes with metrics, so no virtual kubelet.
    with OscarClient(cluster.basic_profile(), retries=0) as client:
        found = discover_nodes(client, kubeconfig=str(kubeconfig))
    assert cluster.seen("GET", "/system/status")[0].status == 200
    assert found.source == "Kubernetes"
    assert found.interlink_names == ["old-vk", "vega-new-vk"]


def test_the_profile_list_is_the_last_source(tmp_path, monkeypatch, cluster):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with OscarClient(cluster.basic_profile(), retries=0) as client:
        found = discover_nodes(client, ["vega", "leonardo"])
    assert found.source == "profile" and found.interlink_names == ["vega", "leonardo"]
    assert not found.nodes[0].resources_known


def test_a_kubeconfig_the_profile_does_not_name_is_never_used(kubeconfig, cluster):
    # $KUBECONFIG (set by the fixture) may be another cluster's: only the profile's counts.
    with OscarClient(cluster.basic_profile(), retries=0) as client:
        found = discover_nodes(client)
    assert found.source is None and "the profile names no kubeconfig" in found.warning


def test_without_any_source_the_warning_says_names_go_unchecked(tmp_path, monkeypatch, cluster):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with OscarClient(cluster.basic_profile(), retries=0) as client:
        found = discover_nodes(client)
    assert found.source is None and found.interlink_names is None
    assert "lists no interLink node" in found.warning and "names go unchecked" in found.warning
    assert "jupyter: {nodes: [vega]}" in found.warning
