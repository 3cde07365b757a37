"""A connection that drops while a cell streams: the log resumes with no line lost or repeated."""

from __future__ import annotations

import socket
import threading

import pytest

from oscar_jupyter.session import Session

pytestmark = pytest.mark.e2e


class CuttableProxy:
    """A TCP proxy on loopback in front of the local OSCAR; `cut()` drops every connection and
    refuses new ones until `restore()`, like a network outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


def test_the_log_resumes_after_an_outage_without_repeating_or_skipping(
    local_oscar, tmp_path, monkeypatch
):
    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    proxy = CuttableProxy(int(local_oscar.endpoint.rsplit(":", 1)[1]))
    session = Session()
    session.connect(
        endpoint=f"http://127.0.0.1:{proxy.port}",
        user=local_oscar.user,
        password=local_oscar.password,
        config_path=tmp_path / "none.yaml",
    )
    code = "import time\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(1)\n"
    job = session.submit(code, session.build_spec({"node": "local-slurm", "time": "00:05:00"}))
    seen: list[str] = []
    errors: list[str] = []
    outage = {"done": False}

    def on_update(job, lines):
        seen.extend(line.text for line in lines)
        if job.error:
            errors.append(job.error)
        if seen and not outage["done"]:
            outage["done"] = True
            proxy.cut()
            threading.Timer(3.0, proxy.restore).start()

    try:
        assert job.wait(120, on_update=on_update) == 0
    finally:
        if not job.is_done():
            job.cancel()
    assert seen == [f"tick {i}" for i in range(8)]
    assert errors, "the outage was never noticed: the test did not cut anything"
    assert job.error is None
    assert job.logs() == "".join(f"tick {i}\n" for i in range(8))
