"""The Python program every job carries: it runs the cell on the cluster, in the user's image.

`runner.build_program` sends this file's text with the ``PARAMS = {}`` line replaced by the job's
parameters. It runs under the runner's tagger (``tagger.py``) with the standard library of the
image's Python (3.8 or newer: the runner's version gate) alone: it must never import
oscar_jupyter, IPython or anything else that the image may lack. What it does, in order:

- starts Python again with the cell's ``--env`` set, so variables read at start-up take effect;
- sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
  ``MASTER_PORT`` from the MPI launcher's or Slurm's variables when the job runs as ranks
  (issue 21), and gives the cell ``oscar_rank()``;
- loads the ``--in`` values (a pickle) into the cell's namespace; with storage (large values,
  ``--upload``, ``--download``), ``PARAMS["inputs"]`` is a sealed manifest of presigned URLs
  instead, opened with the runner service's channel key (``StorageChannel``);
- runs the cell as ``__main__`` from ``cell.py`` (tracebacks name it and its lines), with
  ``display()`` and a matplotlib backend whose ``plt.show()`` sends the figures to the notebook;
- shows the figures still open when the cell ends, as a notebook does;
- sends the ``--out`` values back (a pickle, with its size and SHA-256).

Rich outputs, results and the traceback marker travel as lines (stdout; stderr for the marker)
that start with a prefix holding a nonce the tagger chose, so text that the cell prints can never
pass for one; the tagger turns them into ``d``, ``r`` and ``t`` records. The nonce comes on a
pipe named in argv (``--rich-fd=N``), read and closed before the cell runs: it is never in an
environment, which the cell could read back from /proc/self/environ.
"""

import base64
import hashlib
import hmac
import importlib.util
import io
import json
import os
import pickle
import socket
import sys
import tarfile
import tempfile
import time
import traceback
import types
import urllib.error
import urllib.parse
import urllib.request

PARAMS = {}

TRACEBACK_MARKER = PARAMS.get("traceback_marker", "")
MPL_BACKEND = "_oj_matplotlib_backend"
# What an image gives in a notebook when its _repr_*_ method exists: mime type, and whether the
# value is binary (base64 in the bundle, as Jupyter's display_data carries it).
REPR_METHODS = (
    ("_repr_png_", "image/png", True),
    ("_repr_jpeg_", "image/jpeg", True),
    ("_repr_svg_", "image/svg+xml", False),
    ("_repr_html_", "text/html", False),
    ("_repr_markdown_", "text/markdown", False),
    ("_repr_latex_", "text/latex", False),
)
MAX_TEXT_REPR = 10000


class OffloadValuesError(Exception):
    """An --in or --out value that cannot travel: reported as the cell's error, one line."""


RICH_FD_ARG = "--rich-fd="
ENV_SET_ARG = "--env-set"


def read_nonce():
    """The tagger's nonce from the pipe named by ``--rich-fd=N``, which is then closed; "" when
    there is none (then display() prints text)."""
    for arg in sys.argv[1:]:
        if arg.startswith(RICH_FD_ARG):
            try:
                with os.fdopen(int(arg[len(RICH_FD_ARG) :]), "rb") as pipe:
                    nonce = pipe.read(64).decode("ascii")
            except (ValueError, OSError):
                return ""
            return nonce if nonce.isalnum() else ""
    return ""


def nonce_pipe(nonce):
    """An inheritable pipe end holding `nonce`, for the program started again (restart_with_env)."""
    read_end, write_end = os.pipe()
    os.write(write_end, nonce.encode("ascii"))
    os.close(write_end)
    os.set_inheritable(read_end, True)
    return read_end


def restart_with_env(env):
    """Starts this program again with `env` set (once): the interpreter reads some variables
    only at start-up. The nonce goes on through a new pipe, as the tagger gave it."""
    if not env or ENV_SET_ARG in sys.argv[1:]:
        return
    os.environ.update(env)
    argv = [sys.executable, "-u", os.path.abspath(__file__), ENV_SET_ARG]
    if CHANNEL.nonce:
        argv.append(f"{RICH_FD_ARG}{nonce_pipe(CHANNEL.nonce)}")
    os.execv(sys.executable, argv)


class Channel:
    """Rich outputs and results (stdout), the traceback marker (stderr), in order with the
    cell's text."""

    def __init__(self, nonce, stdout, stderr):
        self.nonce = nonce
        self.prefix = f"\x1eOJ{nonce}|" if nonce else ""
        self.stdout = stdout
        self.stderr = stderr

    def send(self, kind, payload):
        if not self.prefix:
            return False
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.write(self.stdout, kind + "|" + base64.b64encode(data).decode("ascii"))
        return True

    def mark_traceback(self):
        if not self.prefix:
            return False
        self.write(self.stderr, "t|")
        return True

    def mark_finished(self):
        """For the tagger of a job of several ranks: the cell's code ran to its end (a rank may
        still wait in MPI_Finalize for the others)."""
        if self.prefix:
            self.write(self.stderr, "f|")

    def write(self, stream, line):
        sys.stdout.flush()
        sys.stderr.flush()
        stream.write(self.prefix + line + "\n")
        stream.flush()


CHANNEL = Channel(read_nonce(), sys.stdout, sys.stderr)


def short_size(size):
    return f"{size / 1e6:.1f} MB" if size >= 100000 else f"{max(1, size // 1000)} kB"


def text_repr(obj):
    try:
        text = repr(obj)
    except Exception as error:
        text = f"<{type(obj).__name__} object (repr failed: {error})>"
    return text if len(text) <= MAX_TEXT_REPR else text[:MAX_TEXT_REPR] + "..."


def is_figure(obj):
    return type(obj).__module__ == "matplotlib.figure" and hasattr(obj, "savefig")


def figure_png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def call_repr(obj, method):
    if isinstance(obj, type):
        return None
    function = getattr(obj, method, None)
    if not callable(function):
        return None
    try:
        return function()
    except Exception:
        return None


def bundle_of(obj):
    """The mime bundle a notebook would show for `obj` (text/plain always)."""
    data, metadata = {}, {}
    if is_figure(obj):
        data["image/png"] = figure_png(obj)
    else:
        for method, mime, _binary in REPR_METHODS:
            value = call_repr(obj, method)
            if isinstance(value, tuple) and len(value) == 2:
                value, metadata[mime] = value
            if value is not None:
                data[mime] = value
    for mime, value in list(data.items()):
        if isinstance(value, (bytes, bytearray)):
            data[mime] = base64.b64encode(value).decode("ascii")
        elif not isinstance(value, str):
            del data[mime]
    data["text/plain"] = text_repr(obj)
    return data, metadata


def raw_bundle(obj):
    """display(obj, raw=True): `obj` is a mime bundle already, as IPython takes it. Text goes as
    it is, bytes as base64 (as Jupyter sends them), other JSON data (application/json) as JSON."""
    if not isinstance(obj, dict):
        raise TypeError(
            f"display(raw=True) takes mime bundles, dicts of mime type -> data such as "
            f"{{'text/html': '<b>hi</b>'}}; got a {type(obj).__name__}"
        )
    data = {}
    for mime, value in obj.items():
        if not isinstance(mime, str):
            raise TypeError(f"display(raw=True): the keys are mime types (str), not {mime!r}")
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(value).decode("ascii")
        elif not is_json(value):
            raise TypeError(
                f"display(raw=True): the {mime!r} data is a {type(value).__name__}, which a "
                f"notebook cannot show: give text (str), bytes or JSON data, keyed by mime type"
            )
        data[mime] = value
    return data


def is_json(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def display(*objs, **kwargs):
    """Shows each object in the notebook as IPython's display() would: its richest forms; with
    raw=True each object is a mime bundle already. metadata= is sent with each."""
    raw = kwargs.get("raw", False)
    extra = kwargs.get("metadata") or {}
    if not isinstance(extra, dict) or not is_json(extra):
        raise TypeError("display(metadata=...) takes a dict of JSON data")
    limit = PARAMS.get("max_display_bytes", 1000000)
    for obj in objs:
        data, metadata = (raw_bundle(obj), {}) if raw else bundle_of(obj)
        metadata.update(extra)
        notes = []
        for mime in [m for m in data if m != "text/plain"]:
            size = len(data[mime] if isinstance(data[mime], str) else json.dumps(data[mime]))
            if size > limit:
                notes.append(
                    f"oscar-jupyter: a {mime} output of {short_size(size)} was left out (each "
                    f"output may take {short_size(limit)} of the log); save it to a file on a "
                    f"--mount'ed path instead"
                )
                del data[mime]
        if not CHANNEL.send("d", {"data": data, "metadata": metadata, "notes": notes}):
            text = data.get("text/plain", "")
            print(text if isinstance(text, str) else json.dumps(text))


def show_open_figures():
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        display(pyplot.figure(number))
    pyplot.close("all")


def show_figures_left_open():
    try:
        show_open_figures()
    except Exception as error:  # never hide the cell's own outcome behind a figure's failure
        print(
            f"oscar-jupyter: could not show the open figures: {type(error).__name__}: {error}",
            file=sys.stderr,
        )


BACKEND_SOURCE = (
    "from matplotlib.backends.backend_agg import *  # noqa\n"
    "from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas  # noqa\n"
    "def show(*args, **kwargs):\n"
    "    _oj_show_open_figures()\n"
)


class BackendFinder:
    """Makes ``import _oj_matplotlib_backend`` (MPLBACKEND=module://...) give the Agg backend
    whose show() sends the open figures to the notebook; nothing is imported until then."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == MPL_BACKEND else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__dict__["_oj_show_open_figures"] = show_open_figures
        exec(BACKEND_SOURCE, module.__dict__)


def python_version():
    return ".".join(str(part) for part in sys.version_info[:3])


def python_versions():
    return f"Python {python_version()} on the cluster, {PARAMS.get('python', '?')} in the notebook"


class NoNotebookObjects(pickle.Pickler):
    """Refuses what only the notebook side could rebuild: a class or function of the cell."""

    def reducer_override(self, obj):
        module = getattr(obj, "__module__", None)
        if isinstance(obj, (type, types.FunctionType)) and module == "__main__":
            kind = "class" if isinstance(obj, type) else "function"
            raise OffloadValuesError(
                f"{kind} {obj.__qualname__} is defined in the cell, and the notebook cannot "
                f"rebuild it: return plain data (numbers, strings, lists, dicts, arrays)"
            )
        return NotImplemented


# --- the storage channel ---------------------------------------------------------------------
# The presigned URLs of a job's objects must not be readable in its log, which holds the job's
# body: they travel sealed with a key that only the runner service's environment holds
# (CHANNEL_KEY_VARIABLE). Standard library only: HMAC-SHA256 as a keystream and as the tag.

CHANNEL_KEY_VARIABLE = "OSCAR_JUPYTER_CHANNEL_KEY"
SEALED_PREFIX = "sealed:"
TRANSFER_CHUNK = 1024 * 1024
STORAGE_TIMEOUT = 60


def _subkey(key, purpose):
    return hmac.new(key, purpose, hashlib.sha256).digest()


def _keystream_xor(key, nonce, data):
    out = bytearray(len(data))
    stream_key = _subkey(key, b"encrypt")
    for block in range(0, len(data), 32):
        pad = hmac.new(stream_key, nonce + block.to_bytes(8, "big"), hashlib.sha256).digest()
        chunk = data[block : block + 32]
        mixed = int.from_bytes(chunk, "big") ^ int.from_bytes(pad[: len(chunk)], "big")
        out[block : block + len(chunk)] = mixed.to_bytes(len(chunk), "big")
    return bytes(out)


def seal(key, document):
    """`document` (JSON) encrypted and authenticated with `key` (bytes), as text."""
    nonce = os.urandom(16)
    body = _keystream_xor(key, nonce, json.dumps(document).encode("utf-8"))
    tag = hmac.new(_subkey(key, b"authenticate"), nonce + body, hashlib.sha256).digest()
    return SEALED_PREFIX + base64.b64encode(nonce + tag + body).decode("ascii")


def unseal(key, text):
    """The document `seal` made; ValueError when it was made with another key or altered."""
    raw = base64.b64decode(text[len(SEALED_PREFIX) :])
    nonce, tag, body = raw[:16], raw[16:48], raw[48:]
    expected = hmac.new(_subkey(key, b"authenticate"), nonce + body, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise ValueError("the storage manifest does not open with this service's key")
    return json.loads(_keystream_xor(key, nonce, body).decode("utf-8"))


def url_host(url):
    """What an error may say of a presigned URL: its scheme and host, never its query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class StorageChannel:
    """The job's side of its objects: GET and PUT through presigned URLs, each checked."""

    def __init__(self, manifest):
        self.manifest = manifest

    def _open(self, url, method="GET", data=None, length=None):
        request = urllib.request.Request(url, data=data, method=method)
        if length is not None:
            request.add_header("Content-Length", str(length))
            request.add_header("Content-Type", "application/octet-stream")
        try:
            return urllib.request.urlopen(request, timeout=STORAGE_TIMEOUT)
        except urllib.error.HTTPError as error:
            raise OffloadValuesError(
                f"the cluster's object storage ({url_host(url)}) refused this job's {method} "
                f"(HTTP {error.code}): its access may have expired (it lasts the job's --time "
                f"plus one hour); run the cell again"
            ) from None
        except (urllib.error.URLError, socket.timeout, OSError) as error:
            reason = getattr(error, "reason", error)
            raise OffloadValuesError(
                f"this job cannot reach the cluster's object storage at {url_host(url)} "
                f"({reason}): this site's compute nodes do not reach OSCAR's MinIO, so large "
                f"--in/--out values, --upload and --download cannot travel; put the data on "
                f"the HPC file system and --mount its path instead"
            ) from None

    def fetch(self, item, target):
        """Stream object `item` ({url, size, sha256}) into the file `target`; checked."""
        digest, size = hashlib.sha256(), 0
        with self._open(item["url"]) as response:
            while True:
                chunk = response.read(TRANSFER_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                target.write(chunk)
        if size != item["size"] or digest.hexdigest() != item["sha256"]:
            raise OffloadValuesError(
                f"{item.get('what', 'an object')} arrived damaged from the object storage "
                f"({size} of {item['size']} bytes, checksum "
                f"{'different' if size == item['size'] else 'not checked'}); none was used"
            )

    def send(self, url, source, length):
        """PUT `length` bytes of the file object `source`; their SHA-256."""
        digest = hashlib.sha256()

        class Hashing(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, buffer):
                data = source.read(len(buffer))
                digest.update(data)
                buffer[: len(data)] = data
                return len(data)

        self._open(url, "PUT", io.BufferedReader(Hashing(), TRANSFER_CHUNK), length).close()
        return digest.hexdigest()


STORAGE = None


def open_storage(params):
    """The sealed manifest in PARAMS["inputs"], opened; the inline values stay as they were."""
    global STORAGE
    text = params.get("inputs") or ""
    if not text.startswith(SEALED_PREFIX):
        return
    key = os.environ.pop(CHANNEL_KEY_VARIABLE, "")
    if not key:
        raise OffloadValuesError(
            "the runner service carries no storage channel key (it predates storage): delete "
            "it (%oscar_cleanup --services) and run the cell again"
        )
    try:
        manifest = unseal(bytes.fromhex(key), text)
    except ValueError as error:
        raise OffloadValuesError(f"storage: {error}") from None
    params["inputs"] = manifest.get("inputs") or ""
    STORAGE = StorageChannel(manifest)


def safe_members(archive, target):
    """The members of a folder's tar, refused when one would land outside `target`."""
    root = os.path.realpath(target)
    for member in archive.getmembers():
        path = os.path.realpath(os.path.join(root, member.name))
        if not (path == root or path.startswith(root + os.sep)) or member.issym() or member.islnk():
            raise OffloadValuesError(f"--upload: {member.name!r} would land outside {target}")
        yield member


def receive_uploads():
    """--upload: each file or folder written at its REMOTE path before the cell runs."""
    storage = STORAGE
    if storage is None:
        return
    for item in storage.manifest.get("uploads") or []:
        remote = item["remote"]
        item["what"] = f"--upload {remote}"
        parent = remote if item.get("folder") else os.path.dirname(remote)
        try:
            os.makedirs(parent or "/", exist_ok=True)
            if item.get("folder"):
                with tempfile.TemporaryFile() as spool:
                    storage.fetch(item, spool)
                    spool.seek(0)
                    with tarfile.open(fileobj=spool, mode="r:") as archive:
                        archive.extractall(remote, members=list(safe_members(archive, remote)))
            else:
                with open(remote, "wb") as target:
                    storage.fetch(item, target)
        except OSError as error:
            raise OffloadValuesError(
                f"--upload {remote}: cannot write it in the job ({error.strerror or error}); "
                f"choose another REMOTE path (/tmp is small in a container: --mount scratch)"
            ) from None


def send_downloads():
    """--download: each REMOTE file or folder PUT after the cell, whatever its outcome; a
    summary object says what each became (size, SHA-256, or why it is missing)."""
    storage = STORAGE
    items = storage.manifest.get("downloads") if storage else None
    if storage is None or not items:
        return
    manifest = storage.manifest
    report = []
    for item in items:
        remote = item["remote"]
        entry = {"remote": remote}
        try:
            if os.path.isdir(remote):
                with tempfile.TemporaryFile() as spool:
                    with tarfile.open(fileobj=spool, mode="w:") as archive:
                        archive.add(remote, arcname=".")
                    length = spool.tell()
                    spool.seek(0)
                    entry.update(folder=True, size=length)
                    entry["sha256"] = storage.send(item["url"], spool, length)
            elif os.path.isfile(remote):
                length = os.path.getsize(remote)
                with open(remote, "rb") as source:
                    entry.update(folder=False, size=length)
                    entry["sha256"] = storage.send(item["url"], source, length)
            else:
                entry["error"] = "no such file or folder in the job"
        except OffloadValuesError as error:
            entry["error"] = str(error)
        except OSError as error:
            entry["error"] = f"cannot read it ({error.strerror or error})"
        report.append(entry)
    data = json.dumps({"downloads": report}).encode("utf-8")
    storage.send(manifest["downloads_report"], io.BytesIO(data), len(data))
    for entry in report:
        if "error" in entry:
            print(f"oscar-jupyter: --download {entry['remote']}: {entry['error']}", file=sys.stderr)


def load_inputs():
    storage = STORAGE
    item = storage.manifest.get("inputs_object") if storage else None
    if storage is not None and item:
        item["what"] = "the --in values"
        buffer = io.BytesIO()
        storage.fetch(item, buffer)
        try:
            return pickle.loads(buffer.getvalue())
        except Exception as error:
            raise OffloadValuesError(
                f"--in: the cluster could not load the values sent from the notebook "
                f"({python_versions()}): {type(error).__name__}: {error}"
            ) from None
    blob = PARAMS.get("inputs")
    if not blob:
        return {}
    try:
        return pickle.loads(base64.b64decode(blob))
    except Exception as error:
        advice = (
            "; install it in the image (--image) or send plain data"
            if isinstance(error, ImportError)
            else ""
        )
        raise OffloadValuesError(
            f"--in: the cluster could not load the values sent from the notebook "
            f"({python_versions()}): {type(error).__name__}: {error}{advice}"
        ) from None


def pickled_values(namespace, names):
    """(the pickle of {name: pickle of its value}, {name: pickle of its value}) for the `--out`
    names of a cell that ran in `namespace`; OffloadValuesError naming what to change."""
    missing = [name for name in names if name not in namespace]
    if missing:
        raise OffloadValuesError(
            "--out {}: the cell did not define {}".format(",".join(missing), ", ".join(missing))
        )
    values = {}
    for name in names:
        buffer = io.BytesIO()
        try:
            NoNotebookObjects(buffer, protocol=min(4, pickle.HIGHEST_PROTOCOL)).dump(
                namespace[name]
            )
        except OffloadValuesError as error:
            raise OffloadValuesError(f"--out {name}: {error}") from None
        except Exception as error:
            raise OffloadValuesError(
                f"--out {name}: {type(namespace[name]).__name__} cannot be pickled "
                f"({type(error).__name__}: {error}); return plain data, or save it to a file on "
                f"a --mount'ed path"
            ) from None
        values[name] = buffer.getvalue()
    return pickle.dumps(values, protocol=min(4, pickle.HIGHEST_PROTOCOL)), values


def send_outputs(namespace):
    """The --out values, as one `r` record: in the log, or in the user's bucket when large.
    With --out-ranks all every rank sends its own (its record says which rank it is), into its
    own object, and the ranks share the log's bounds."""
    names = PARAMS.get("outputs") or []
    if not names:
        return
    blob, values = pickled_values(namespace, names)
    every_rank = PARAMS.get("out_ranks") == "all"
    me = oscar_rank()
    share = max(1, me.size) if every_rank else 1
    limit = PARAMS.get("max_result_bytes", 8000000) // share
    inline_limit, url = limit, None
    storage = STORAGE
    if storage is not None:
        inline_limit = storage.manifest.get("inline_result_bytes", limit * share) // share
        url = outputs_url(storage.manifest, me.rank if every_rank else 0)
    header = {"python": python_version(), "size": len(blob)}
    if every_rank:
        header["rank"] = me.rank
    if storage is not None and url and len(blob) > inline_limit:
        digest = storage.send(url, io.BytesIO(blob), len(blob))
        CHANNEL.send("r", dict(header, sha256=digest, object=True))
        return
    if len(blob) > limit:
        sizes = ", ".join(f"{n} {short_size(len(v))}" for n, v in values.items())
        who = f"rank {me.rank}'s values take" if every_rank else "the values take"
        room = f"{short_size(limit)} travels back in the log"
        if every_rank:
            room += f" from each of the {share} ranks (--out-ranks all)"
        raise OffloadValuesError(
            f"--out: {who} {short_size(len(blob))} ({sizes}); at most {room}: save large "
            f"results to a file on a --mount'ed path"
        )
    CHANNEL.send(
        "r",
        dict(
            header,
            sha256=hashlib.sha256(blob).hexdigest(),
            pickle=base64.b64encode(blob).decode("ascii"),
        ),
    )


def outputs_url(manifest, rank):
    """Where rank `rank` PUTs its large --out values: rank 0 at ``outputs_url``, the others
    (--out-ranks all) at their own entry of ``rank_outputs_urls``; None when there is none."""
    if not rank:
        return manifest.get("outputs_url")
    urls = manifest.get("rank_outputs_urls") or []
    return urls[rank - 1] if rank <= len(urls) else None


# Where a rank learns where it is, first found wins: (rank, size, local rank, local size).
RANK_SOURCES = (
    (
        "OMPI_COMM_WORLD_RANK",  # Open MPI's mpiexec
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH / Intel MPI (Hydra)
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", ""),  # srun
)
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
DEFAULT_MASTER_PORT = 29500


def first_slurm_host(nodelist):
    """The first host of a Slurm node list: 'gpu[03-05,09],cpu1' -> 'gpu03'."""
    text = nodelist.strip()
    bracket, comma = text.find("["), text.find(",")
    if bracket == -1 or -1 < comma < bracket:
        return text.split(",", 1)[0]
    first = text[bracket + 1 :]
    for end, char in enumerate(first):
        if char in ",-]":
            first = first[:end]
            break
    return text[:bracket] + first


def rank_environment(environ):
    """The ranks' variables (``RANK_VARIABLES``, ``MASTER_ADDR``, ``MASTER_PORT``) that
    ``environ`` lacks, as torch.distributed's ``env://`` reads them; {} outside any launcher.
    Values already set (``--env``) are kept."""
    for names in RANK_SOURCES:
        if not environ.get(names[0], "").isdigit() or not environ.get(names[1], "").isdigit():
            continue
        values = [environ.get(name, "") if name else "" for name in names]
        if names[0] == "SLURM_PROCID" and values[1] == "1":
            return {}  # a job of one task, as every job without --mpi: nothing to say
        if not values[2].isdigit():
            values[2] = "0" if values[1] == "1" else ""
        if not values[3].isdigit():
            nodes = environ.get("SLURM_NNODES", "")
            values[3] = values[1] if nodes == "1" or values[1] == "1" else ""
        found = {RANK_VARIABLES[i]: values[i] for i in range(4) if values[i]}
        break
    else:
        return {}
    if found.get("LOCAL_WORLD_SIZE") == found["WORLD_SIZE"]:
        found["MASTER_ADDR"] = "127.0.0.1"  # every rank on this node
    elif environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST"):
        # mpiexec runs in the batch step, on the allocation's first node: rank 0's host
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
        found["MASTER_ADDR"] = first_slurm_host(nodelist)
    job = environ.get("SLURM_JOB_ID", "")
    # the same on every rank of the job, and other jobs on the node likely pick another
    found["MASTER_PORT"] = str(20000 + int(job) % 20000 if job.isdigit() else DEFAULT_MASTER_PORT)
    return {name: value for name, value in found.items() if name not in environ}


class RankInfo:
    """Where this rank is: ``oscar_rank()`` in the cell."""

    def __init__(self, environ):
        def number(name, default):
            value = environ.get(name, "")
            return int(value) if value.isdigit() else default

        self.rank = number("RANK", 0)
        self.size = number("WORLD_SIZE", 1)
        self.local_rank = number("LOCAL_RANK", 0)
        self.local_size = number("LOCAL_WORLD_SIZE", self.size)
        self.host = socket.gethostname()
        self.is_first = self.rank == 0

    def __repr__(self):
        return (
            f"rank {self.rank} of {self.size} on {self.host} "
            f"(local {self.local_rank} of {self.local_size})"
        )


def oscar_rank():
    """This rank's place: ``.rank``, ``.size``, ``.local_rank``, ``.local_size``, ``.host``,
    ``.is_first`` (rank 0); rank 0 of 1 when the cell runs once."""
    return RankInfo(os.environ)


class MissingSecretError(Exception):
    """A --secret that did not reach the job (B4)."""


def check_secrets():
    """Every --secret the cell was sent with is in the environment. B4 (reference OSCAR.md
    section 13): OSCAR passes a service's secrets to its pod as envFrom (pkg/types/job.go
    194-205), which interLink resolves only from 0.6.2 (execute.go 1168-1235): on 0.6.1 and
    older the variable is silently missing, and the cell would read None."""
    missing = [name for name in PARAMS.get("secrets") or [] if name not in os.environ]
    if missing:
        raise MissingSecretError(
            f"--secret {', '.join(missing)} did not reach the job: this site's interLink is "
            f"0.6.1 or older, which drops OSCAR's service secrets (envFrom); pass the value "
            f"through a file on a --mount'ed path, or ask the site for interLink 0.6.2"
        )


def report(error, skip_frames):
    if not CHANNEL.mark_traceback():
        print(TRACEBACK_MARKER, file=sys.stderr, flush=True)
    if isinstance(error, MissingSecretError):
        print(f"MissingSecretError: {error}", file=sys.stderr, flush=True)
        return
    if isinstance(error, OffloadValuesError):
        print(f"OffloadValuesError: {error}", file=sys.stderr, flush=True)
        return
    tb = error.__traceback__
    for _ in range(skip_frames):
        tb = tb.tb_next if tb is not None else None
    traceback.print_exception(type(error), error, tb)


def main():
    restart_with_env(PARAMS.get("env") or {})
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")  # type: ignore[union-attr]
    path = os.path.join(os.getcwd(), "cell.py")
    code = PARAMS.get("code", "")
    with open(path, "w", encoding="utf-8") as cell_file:
        cell_file.write(code)
    cell = types.ModuleType("__main__")
    cell.__file__ = path
    cell.__dict__["__builtins__"] = __builtins__
    cell.__dict__["display"] = display
    cell.__dict__["oscar_rank"] = oscar_rank
    os.environ.update(rank_environment(os.environ))
    sys.modules["__main__"] = cell
    sys.argv = [path]
    sys.path[0] = os.getcwd()
    sys.meta_path.append(BackendFinder())
    os.environ.setdefault("MPLBACKEND", "module://" + MPL_BACKEND)
    ran = False
    first = is_first_rank()
    try:
        check_secrets()
        open_storage(PARAMS)
        if first:
            receive_uploads()
            mark_uploads_received()
        else:
            wait_for_uploads()
        cell.__dict__.update(load_inputs())
        try:
            ran = True
            exec(compile(code, path, "exec"), cell.__dict__)
        finally:
            show_figures_left_open()
            if ran and first:
                send_downloads_reported()
        if first or PARAMS.get("out_ranks") == "all":
            send_outputs(cell.__dict__)
        if os.environ.get(RANK_SETTING):
            CHANNEL.mark_finished()
    except SystemExit:
        raise
    except BaseException as error:
        report(error, skip_frames=1)
        sys.exit(130 if isinstance(error, KeyboardInterrupt) else 1)


# A job of several ranks on one node (the runner's tagger starts them): rank 0 receives the
# --upload files, sends the --download files and the --out values; the others wait for the
# uploads (UPLOADS_RECEIVED in the shared work directory) and send nothing back, but their own
# --out values with --out-ranks all.
RANK_SETTING = "OSCAR_JUPYTER_RANK"
UPLOADS_RECEIVED = ".oj-uploads-received"


def is_first_rank():
    return os.environ.get(RANK_SETTING, "0") in ("", "0")


def mark_uploads_received():
    if os.environ.get(RANK_SETTING):
        with open(UPLOADS_RECEIVED, "w"):
            pass


def wait_for_uploads():
    if STORAGE is None or not STORAGE.manifest.get("uploads"):
        return
    while not os.path.exists(UPLOADS_RECEIVED):
        time.sleep(0.1)


def send_downloads_reported():
    """send_downloads, whose own failure never hides the cell's outcome."""
    try:
        send_downloads()
    except Exception as error:
        print(f"oscar-jupyter: --download: {error}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
