"""The job side of a persistent session: a long-lived Python that waits for cells (issue 20).

`runner.build_session_program` sends ``cell_program.py`` without its last two lines (the
``main()`` call) followed by this file's code: the names of ``cell_program`` (``CHANNEL``,
``display``, ``open_storage``, ``report`` ...) are this program's globals in the job, where the
image's standard library is all there is. Nothing connects into the job: it polls the session's
objects in the user's bucket through presigned URLs, and everything it says goes out through
its log, as any cell's output does.

- ``PARAMS["inputs"]`` is the sealed manifest (``cell_program.seal``) holding ``session``:
  ``token`` (in every marker), ``first`` (the GET URL of cell 1's object), ``idle_seconds``.
- Cell ``n``'s object (``jobs/<job>/cells/<n>.json``, written by the notebook) holds its
  ``code``, ``inputs`` (base64 of a pickle), ``outputs`` (names), ``out_url`` (PUT of the
  ``--out`` pickle), ``control_url`` (GET of the cell's control object: an interrupt) and
  ``next`` (the GET URL of cell ``n + 1``'s object), or ``stop``. The program polls one URL at a
  time: a 404 means "not yet".
- Around each cell it writes markers, rich-output records (``d``) carrying only metadata
  ``oscar_jupyter_session`` (``event`` begin / end / ready / closing, ``cell``, the session's
  ``token``; at the end ``status`` ok / error / interrupted and the ``--out`` pickle's ``size``
  and ``sha256``), so the notebook knows where a cell's output starts and ends in the one log.
- The cell runs in the main thread with the session's namespace (``__main__``); a watcher
  thread polls the control object and sends SIGINT to the program: KeyboardInterrupt in the
  cell, the session and its variables kept.
"""

try:  # in the package (type checks, tests); in the job cell_program's code comes first
    from .cell_program import (
        CHANNEL,
        MPL_BACKEND,
        PARAMS,
        STORAGE_TIMEOUT,
        BackendFinder,
        OffloadValuesError,
        StorageChannel,
        display,
        open_storage,
        pickled_values,
        python_version,
        receive_uploads,
        report,
        restart_with_env,
        send_downloads_reported,
        show_figures_left_open,
    )
except ImportError:  # pragma: no cover (the job)
    pass

import base64 as _base64
import hashlib as _hashlib
import json as _json
import os as _os
import pickle as _pickle
import signal as _signal
import sys as _sys
import threading as _threading
import time as _time
import types as _types
import urllib.error as _urlerror
import urllib.request as _urlrequest

SESSION_KEY = "oscar_jupyter_session"
FAST_POLL = 0.05  # seconds between looks for the next cell, just after one
SLOW_POLL = 1.0  # ... after FAST_FOR seconds without a cell
FAST_FOR = 30.0
CONTROL_POLL = 0.25
MAX_FAILURES = 20  # storage errors in a row before the session gives up
STREAM_SETTLE = 0.05  # lets the tagger read the cell's last stderr before the end marker


def session_marker(token, event, **fields):
    """A marker in the log: a rich-output record with no data, only our metadata."""
    payload = dict(fields, event=event, token=token, time=_time.time())
    CHANNEL.send("d", {"data": {"text/plain": ""}, "metadata": {SESSION_KEY: payload}})


def get_object(url):
    """The object's bytes, None when it does not exist yet (404)."""
    try:
        with _urlrequest.urlopen(url, timeout=STORAGE_TIMEOUT) as response:
            return response.read()
    except _urlerror.HTTPError as error:
        if error.code == 404:
            return None
        raise


def put_object(url, data):
    request = _urlrequest.Request(url, data=data, method="PUT")
    request.add_header("Content-Type", "application/octet-stream")
    with _urlrequest.urlopen(request, timeout=STORAGE_TIMEOUT):
        pass


class CellWait:
    """Polls one URL until its object exists: fast just after a cell, slower when idle."""

    def __init__(self, idle_seconds):
        self.idle_seconds = idle_seconds
        self.last_cell = _time.monotonic()

    def next_cell(self, url):
        failures = 0
        while True:
            try:
                data = get_object(url)
                failures = 0
            except Exception as error:  # storage unreachable or access expired
                failures += 1
                if failures >= MAX_FAILURES:
                    raise OffloadValuesError(
                        f"the session cannot read its cells from the object storage "
                        f"({type(error).__name__}: {error})"
                    ) from None
                data = None
            if data is not None:
                self.last_cell = _time.monotonic()
                return _json.loads(data.decode("utf-8"))
            idle = _time.monotonic() - self.last_cell
            if self.idle_seconds and idle > self.idle_seconds:
                return {"stop": True, "reason": "idle"}
            _time.sleep(FAST_POLL if idle < FAST_FOR else SLOW_POLL)


class InterruptWatcher:
    """A thread that polls the cell's control object; an interrupt becomes SIGINT here."""

    def __init__(self, url):
        self.url = url
        self.done = _threading.Event()
        # Held while the signal is sent and while the cell is declared over: no SIGINT can
        # reach the session's own loop after the cell (it would end the session).
        self.lock = _threading.Lock()
        self.thread = _threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        if self.url:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            self.done.set()
        return False

    def run(self):
        while not self.done.wait(CONTROL_POLL):
            try:
                data = get_object(self.url)
            except Exception:
                continue
            with self.lock:
                if data is not None and not self.done.is_set():
                    _os.kill(_os.getpid(), _signal.SIGINT)
                    return


def run_cell(cell, namespace, number):
    """Runs one cell in `namespace`; its end marker's fields. A cell's ``storage`` (its
    ``--upload``/``--download`` manifest, as a job's) is this program's storage channel while
    it runs: uploads land before its code, downloads go after it, whatever its outcome."""
    names = globals()  # in the job, cell_program's globals too: its STORAGE
    session_storage = names.get("STORAGE")
    if cell.get("storage"):
        names["STORAGE"] = StorageChannel(cell["storage"])
    try:
        return run_cell_code(cell, namespace, number)
    finally:
        if cell.get("storage"):
            send_downloads_reported()
        names["STORAGE"] = session_storage


def run_cell_code(cell, namespace, number):
    path = _os.path.join(_os.getcwd(), f"cell-{number}.py")
    code = cell.get("code", "")
    with open(path, "w", encoding="utf-8") as cell_file:
        cell_file.write(code)
    namespace["__file__"] = path
    status, fields = "ok", {}  # type: ignore[var-annotated]
    try:
        with InterruptWatcher(cell.get("control_url")):
            if cell.get("storage"):
                receive_uploads()
            if cell.get("inputs"):
                namespace.update(_pickle.loads(_base64.b64decode(cell["inputs"])))
            try:
                exec(compile(code, path, "exec"), namespace)
            finally:
                show_figures_left_open()
        names = cell.get("outputs") or []
        if names:
            blob, _ = pickled_values(namespace, names)
            put_object(cell["out_url"], blob)
            fields.update(
                size=len(blob), sha256=_hashlib.sha256(blob).hexdigest(), python=python_version()
            )
    except KeyboardInterrupt:
        status = "interrupted"
    except BaseException as error:  # SystemExit too: the session goes on
        status = "error"
        report(error, skip_frames=1)
    _sys.stdout.flush()
    _sys.stderr.flush()
    _time.sleep(STREAM_SETTLE)
    fields["status"] = status
    return fields


def session_main():
    restart_with_env(PARAMS.get("env") or {})
    for stream in (_sys.stdout, _sys.stderr):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")  # type: ignore[union-attr]
    # A job started in the background may inherit SIGINT ignored: the interrupt needs it.
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    try:
        open_storage(PARAMS)
    except OffloadValuesError as error:
        report(error, skip_frames=0)
        _sys.exit(1)
    manifest = (STORAGE_OF() or {}).get("session") or {}
    token = manifest.get("token", "")
    url = manifest.get("first")
    namespace = _types.ModuleType("__main__")
    namespace.__dict__["__builtins__"] = __builtins__
    namespace.__dict__["display"] = display
    _sys.modules["__main__"] = namespace
    _sys.argv = ["session"]
    _sys.path[0] = _os.getcwd()
    _sys.meta_path.append(BackendFinder())
    _os.environ.setdefault("MPLBACKEND", "module://" + MPL_BACKEND)
    waiter = CellWait(manifest.get("idle_seconds") or 0)
    session_marker(token, "ready", pid=_os.getpid())
    number = 0
    while url:
        try:
            cell = waiter.next_cell(url)
        except OffloadValuesError as error:
            session_marker(token, "closing", reason=str(error))
            report(error, skip_frames=0)
            _sys.exit(1)
        if cell.get("stop"):
            session_marker(token, "closing", reason=cell.get("reason", "stop"))
            return
        number = cell.get("n", number + 1)
        session_marker(token, "begin", cell=number)
        fields = run_cell(cell, namespace.__dict__, number)
        session_marker(token, "end", cell=number, **fields)
        url = cell.get("next")


def STORAGE_OF():  # noqa: N802 (the manifest cell_program.open_storage opened, at call time)
    storage = globals().get("STORAGE")
    return storage.manifest if storage is not None else None


if __name__ == "__main__":
    session_main()
