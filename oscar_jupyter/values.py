"""Values in and out of an offloaded cell: ``--in`` / ``inputs=`` and ``--out`` / ``outputs=``.

Inputs travel in the job's program as a pickle (protocol 4, which every Python 3 that runs the
program reads), checked here before anything is sent: what cannot be pickled, or what only this
notebook could rebuild (a function or class defined in it), is refused with what to do instead.
Outputs come back in the job's log as one ``r`` record (see ``runner``) holding a pickle with its
size and SHA-256: a record that is missing, cut short or altered is an error, never a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import keyword
import pickle
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .spec import SpecError

PICKLE_PROTOCOL = 4


class ResultError(RuntimeError):
    """The ``--out`` values did not arrive intact or cannot be loaded here."""

    def _render_traceback_(self) -> list[str]:
        return [f"ResultError: {self}"]


def here() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


# Names the job's program gives every cell (cell_program.py): a value of that name would be the
# program's, not the cell's.
PROGRAM_NAMES = frozenset({"display"})


def check_names(flag: str, names: Iterable[str]) -> list[str]:
    """Each name must be a Python variable name the cell can use (not a keyword, not one the
    job's program provides); duplicates are dropped."""
    checked: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
            raise SpecError(flag, f"{flag} {name!r}: give variable names, e.g. {flag} x,y")
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            raise SpecError(
                flag, f"{flag} {name}: {name} is a Python keyword, not a variable; rename it"
            )
        if name in PROGRAM_NAMES:
            raise SpecError(
                flag,
                f"{flag} {name}: on the cluster {name} is the job's own {name}() function; "
                "give the variable another name",
            )
        if name not in checked:
            checked.append(name)
    return checked


class _NotebookOnly(Exception):
    pass


class _RefuseNotebookObjects(pickle.Pickler):
    """Refuses a function or class defined in the notebook: the cluster cannot import it."""

    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, (type, types.FunctionType))
            and getattr(obj, "__module__", None) == "__main__"
        ):
            kind = "class" if isinstance(obj, type) else "function"
            raise _NotebookOnly(f"{kind} {obj.__qualname__}")
        return NotImplemented


def _pickle_one(name: str, value: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _RefuseNotebookObjects(buffer, protocol=PICKLE_PROTOCOL).dump(value)
    except _NotebookOnly as what:
        raise SpecError(
            "--in",
            (
                f"--in {name}: it holds {what}, defined in the notebook, which the cluster cannot "
                f"import: define it in the cell (or in a module of the image) and send plain data"
            ),
        ) from None
    except Exception as err:
        raise SpecError(
            "--in",
            (
                f"--in {name}: a {type(value).__name__} cannot be pickled ({type(err).__name__}: "
                f"{err}); send the data it is built from, or write it to a file on a --mount'ed "
                f"path and read that in the cell"
            ),
        ) from None
    return buffer.getvalue()


def pack_inputs(inputs: Mapping[str, Any]) -> str:
    """The ``--in`` values as the program carries them (base64 of a pickle); "" for none."""
    if not inputs:
        return ""
    if not isinstance(inputs, Mapping):
        raise SpecError("--in", "inputs: give a dict of name -> value, e.g. inputs={'x': x}")
    names = check_names("--in", list(inputs))
    for name in names:
        _pickle_one(name, inputs[name])  # names the value at fault
    blob = pickle.dumps({name: inputs[name] for name in names}, protocol=PICKLE_PROTOCOL)
    return base64.b64encode(blob).decode("ascii")


def input_sizes(inputs: Mapping[str, Any]) -> str:
    """ "x 40 KiB, y 2 KiB": for the error of a job body over its bound."""
    sizes = [(name, len(_pickle_one(name, value))) for name, value in inputs.items()]
    sizes.sort(key=lambda item: -item[1])
    return ", ".join(f"{name} {max(1, size // 1024)} KiB" for name, size in sizes)


def _unpack(
    record: str,
    wanted: str,
    fetch_object: Callable[[], bytes] | None = None,
    rank: int | None = None,
) -> tuple[bytes, str]:
    """The pickle of an ``r`` record and the cluster's Python version, checked against the
    record's size and SHA-256; `ResultError` when the record is damaged or altered. A record
    with ``object`` holds no pickle: the job put it in the user's bucket, `fetch_object` gets
    it. `rank`: the rank whose record the log says it is (--out-ranks all), which the record's
    own ``rank`` must be."""
    try:
        header = json.loads(base64.b64decode(record, validate=True))
        size, digest, python = int(header["size"]), str(header["sha256"]), str(header["python"])
        if rank is not None and header.get("rank") != rank:
            raise ResultError(
                f"the values {wanted} came from rank {rank} but say they are rank "
                f"{header.get('rank')}'s; none was used"
            )
        if header.get("object"):
            if fetch_object is None:
                raise ResultError(
                    f"the values {wanted} are in the cluster's object storage and this job's "
                    "storage is not known here: attach from the kernel that sent it"
                )
            blob = fetch_object()
        else:
            blob = base64.b64decode(header["pickle"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as err:
        raise ResultError(f"the values {wanted} arrived damaged ({err}); none was used") from None
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != digest:
        raise ResultError(
            f"the values {wanted} arrived corrupted ({len(blob)} of {size} bytes, checksum "
            f"{'different' if len(blob) == size else 'not checked'}); none was used"
        )
    return blob, python


def is_intact(record: str) -> bool:
    """Whether an ``r`` record arrived as the program sent it (its size and SHA-256 match)."""
    try:
        _unpack(record, "", fetch_object=lambda: b"")
    except ResultError as err:
        # a record pointing into the bucket is whole when its header is: the blob is checked
        # when it is fetched
        return "bytes, checksum" in str(err) and _is_object_record(record)
    return True


def _is_object_record(record: str) -> bool:
    try:
        header = json.loads(base64.b64decode(record, validate=True))
        return bool(header.get("object")) and int(header["size"]) >= 0
    except (ValueError, KeyError, TypeError, binascii.Error):
        return False


def decode_result(
    record: str | None,
    names: list[str],
    exit_code: int | None = None,
    fetch_object: Callable[[], bytes] | None = None,
    rank: int | None = None,
) -> dict[str, Any]:
    """The values of an ``r`` record, checked against its size and SHA-256. `exit_code` is the
    job's, when its exit record arrived: without a record, it tells a cell that ended its own
    process (exit code 0, no values sent) from a log cut short. `rank`: the rank the record
    came from, with --out-ranks all (the record must say the same)."""
    if rank is None:
        return _decode(record, names, exit_code, fetch_object)
    try:
        return _decode(record, names, exit_code, fetch_object, rank)
    except ResultError as err:
        raise ResultError(f"--out-ranks all, rank {rank}: {err}") from None


def _decode(
    record: str | None,
    names: list[str],
    exit_code: int | None,
    fetch_object: Callable[[], bytes] | None,
    rank: int | None = None,
) -> dict[str, Any]:
    wanted = ", ".join(names)
    if record is None and exit_code == 0:
        raise ResultError(
            f"the cell ended its process itself (os._exit() or sys.exit()) before {wanted} could "
            f"be sent back: let the cell run to its end to get its --out values"
        )
    if record is None:
        raise ResultError(
            f"the job ended without sending back {wanted} (its log was cut short, or the runner "
            f"service predates --out): run the cell again"
        )
    blob, python = _unpack(record, wanted, fetch_object, rank)
    versions = f"Python {python} on the cluster, {here()} here"
    try:
        pickled = pickle.loads(blob)
        values = {name: pickle.loads(pickled[name]) for name in names}
    except Exception as err:
        advice = (
            f"; install {err.name} in the notebook's environment"
            if isinstance(err, ImportError) and err.name
            else ""
        )
        raise ResultError(
            f"the notebook could not load {wanted} sent from the cluster ({versions}): "
            f"{type(err).__name__}: {err}{advice}"
        ) from None
    return values
