"""The runner: the POSIX sh script of every runner service and the program each job carries.

This module is the only place that knows the wire format (see docs/ARCHITECTURE.md, "The runner
wire format"). Every output line of the cell reaches the log as

    @@OJ|<stream>|<seq>|<text>|@@

stream ``o`` (stdout) or ``e`` (stderr), ``seq`` counting from 1 per stream. A line holding a
carriage return is sent with the stream letter upper-cased (``O`` / ``E``) and its text escaped
(``\\`` for a backslash, ``\\r`` for CR): the supervisor reads the script's output in universal-
newline mode, so a bare CR would otherwise split the tagged line in two. Control lines:
``@@OJ|s|0|<json>|@@`` (start: node, job, host) and ``@@OJ|x|0|<exit code>|@@`` (last).
"""

from __future__ import annotations

import base64

MARKER = "@@OJ"
END = "|@@"
STDOUT, STDERR, START, EXIT = "o", "e", "s", "x"
ESCAPED = {"O": "o", "E": "e"}

# The body of POST /job is base64 text; OSCAR base64-encodes it again into the pod's EVENT variable,
# and Linux refuses one environment string over 128 KiB (MAX_ARG_STRLEN). 90 KiB of body gives
# EVENT = 120 KiB, just under; the program itself may then hold 3/4 of that.
MAX_BODY_BYTES = 90 * 1024
MAX_PROGRAM_BYTES = MAX_BODY_BYTES * 3 // 4

# Runs under dash, set -u safe. fd 3 = the supervisor's pipe (all tagged lines go there),
# fd 4 = the stdout tagger's pipe, fd 5 = the command substitution that captures python's status.
RUNNER_SCRIPT = r"""# oscar-jupyter runner (POSIX sh; the OSCAR supervisor runs it with /bin/sh)
set -u
_oj_cr=$(printf '\r_'); _oj_cr=${_oj_cr%_}

_oj_replace() {  # text from to -> _oj_out
  _oj_rest=$1; _oj_out=
  while :; do
    case $_oj_rest in
      *"$2"*) _oj_out=$_oj_out${_oj_rest%%"$2"*}$3; _oj_rest=${_oj_rest#*"$2"} ;;
      *) _oj_out=$_oj_out$_oj_rest; return 0 ;;
    esac
  done
}

_oj_tag() {  # stream letter, escaped letter: tag every line of stdin
  _oj_n=0
  while IFS= read -r _oj_line || [ -n "$_oj_line" ]; do
    _oj_n=$((_oj_n + 1))
    case $_oj_line in
      *"$_oj_cr"*)
        _oj_replace "$_oj_line" '\' '\\'
        _oj_replace "$_oj_out" "$_oj_cr" '\r'
        printf '@@OJ|%s|%d|%s|@@\n' "$2" "$_oj_n" "$_oj_out" ;;
      *) printf '@@OJ|%s|%d|%s|@@\n' "$1" "$_oj_n" "$_oj_line" ;;
    esac
  done
}

_oj_safe() {  # value -> itself, or "unknown" when it would need JSON escaping
  case $1 in
    ''|*[!A-Za-z0-9._:-]*) printf 'unknown' ;;
    *) printf '%s' "$1" ;;
  esac
}

_oj_finish() {  # exit code
  printf '@@OJ|x|0|%s|@@\n' "$1"
  exit 0
}

printf '@@OJ|s|0|{"node": "%s", "job": "%s", "host": "%s"}|@@\n' \
  "$(_oj_safe "${RESOURCE_ID:-}")" "$(_oj_safe "${JOB_UUID:-}")" \
  "$(_oj_safe "$(uname -n 2>/dev/null)")"

if [ -z "${INPUT_FILE_PATH:-}" ] || [ ! -f "$INPUT_FILE_PATH" ]; then
  printf '@@OJ|e|1|%s|@@\n' "oscar-jupyter runner: no job body (INPUT_FILE_PATH is unset or \
missing); submit the cell through oscar-jupyter, which sends it as the job body"
  _oj_finish 2
fi
if ! command -v python3 >/dev/null 2>&1; then
  printf '@@OJ|e|1|%s|@@\n' "oscar-jupyter runner: python3 not found in the image; \
choose an image with Python 3 (--image)"
  _oj_finish 127
fi

_oj_work=$(mktemp -d /tmp/oj-XXXXXXXX 2>/dev/null) || {
  _oj_work=/tmp/oj-$$
  mkdir -p "$_oj_work"
}
cd "$_oj_work" || _oj_finish 2

exec 3>&1
_oj_status=$(
  {
    {
      {
        python3 -u "$INPUT_FILE_PATH" 3>&- 4>&- 5>&-
        echo "$?" >&5
      } 2>&1 1>&4 4>&- | _oj_tag e E >&3 4>&- 5>&-
    } 4>&1 | _oj_tag o O >&3 5>&-
  } 5>&1
)
exec 3>&-

cd /tmp && rm -rf "$_oj_work"
_oj_finish "${_oj_status:-255}"
"""

_PROGRAM_TEMPLATE = '''\
import os as _oj_os, sys as _oj_sys, types as _oj_types, traceback as _oj_traceback
_oj_os.environ.update({env!r})
for _oj_stream in (_oj_sys.stdout, _oj_sys.stderr):
    _oj_stream.reconfigure(encoding="utf-8", errors="backslashreplace")
_oj_path = _oj_os.path.join(_oj_os.getcwd(), "cell.py")
_oj_code = {code!r}
with open(_oj_path, "w", encoding="utf-8") as _oj_file:
    _oj_file.write(_oj_code)
_oj_main = _oj_types.ModuleType("__main__")
_oj_main.__file__ = _oj_path
_oj_main.__builtins__ = __builtins__
_oj_sys.modules["__main__"] = _oj_main
_oj_sys.argv = [_oj_path]
_oj_sys.path[0] = _oj_os.getcwd()
try:
    exec(compile(_oj_code, _oj_path, "exec"), _oj_main.__dict__)
except SystemExit:
    raise
except BaseException as _oj_error:
    _oj_traceback.print_exception(type(_oj_error), _oj_error, _oj_error.__traceback__.tb_next)
    _oj_sys.exit(130 if isinstance(_oj_error, KeyboardInterrupt) else 1)
'''


def build_program(code: str, env: dict[str, str] | None = None) -> bytes:
    """The Python program a job carries: sets ``env``, writes the cell to ``cell.py`` in the
    working directory and runs it as ``__main__`` (tracebacks name ``cell.py`` and its lines)."""
    return _PROGRAM_TEMPLATE.format(code=code, env=dict(env or {})).encode("utf-8")


def encode_body(program: bytes) -> bytes:
    """The body of ``POST /job/{service}``: base64 text, so the supervisor decodes it to a file."""
    return base64.b64encode(program)
