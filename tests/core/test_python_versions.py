"""The code that runs in the user's image keeps to the Pythons it supports: the tagger to 3.5
syntax (it runs first, on whatever python3 the image has, behind the version gate of the
runner's script), the job's program to 3.8 (`runner.OLDEST_PYTHON`).

`ast.parse(feature_version=...)` catches newer syntax (f-strings for the tagger; the walrus,
positional-only parameters, `match`, parenthesized context managers), but not newer names that
parse fine and fail only when run: `str.removeprefix`, `list[int]` outside annotations, `X | Y`
in `isinstance`, `functools.cache`, modules such as `zoneinfo`. A denylist of those covers what
is likely; where this machine has a real python3.8 (pyenv), the job's program also runs on it.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from oscar_jupyter import runner
from oscar_jupyter.spec import OffloadSpec

from .pythons import find_python

PACKAGE = Path(runner.__file__).parent
IMAGE_CODE = {"tagger.py": (3, 5), "cell_program.py": runner.OLDEST_PYTHON}

# Names that parse on every Python but exist only from a newer one: (what, the version).
NEWER_ATTRIBUTES = {
    "removeprefix": (3, 9),
    "removesuffix": (3, 9),
    "cache": (3, 9),  # functools.cache
    "randbytes": (3, 9),
    "waitstatus_to_exitcode": (3, 9),
    "is_relative_to": (3, 9),
    "with_stem": (3, 9),
    "readlink": (3, 9),  # Path.readlink (os.readlink is old: see _OLD_READLINK)
    "lcm": (3, 9),
    "bit_count": (3, 10),
    "pairwise": (3, 10),
    "aiter": (3, 10),
    "anext": (3, 10),
    "to_thread": (3, 9),
    "UTC": (3, 11),
    "batched": (3, 12),
    "exception": (3, 11),  # sys.exception()
    "add_note": (3, 11),
    "file_digest": (3, 11),
}
_OLD_READLINK = {"os"}  # os.readlink exists on every Python 3
NEWER_MODULES = {"zoneinfo": (3, 9), "graphlib": (3, 9), "tomllib": (3, 11)}
NEWER_BUILTINS = {"aiter": (3, 10), "anext": (3, 10)}
GENERIC_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "type"}
NEWER_KEYWORDS = {("zip", "strict"): (3, 10), ("dataclass", "slots"): (3, 10)}


def newer_than(tree: ast.AST, oldest: tuple[int, int]) -> list[str]:
    """What `tree` uses that Python `oldest` lacks although it parses there: one line each."""
    found = []

    def note(node: ast.AST, what: str, since: tuple[int, int]) -> None:
        if since > oldest:
            found.append(
                f"line {getattr(node, 'lineno', '?')}: {what} (Python {since[0]}.{since[1]})"
            )

    annotations = {
        id(sub)
        for node in ast.walk(tree)
        for annotation in _annotations(node)
        for sub in ast.walk(annotation)
    }
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue  # annotations are not evaluated (the program has none; the tagger neither)
        if isinstance(node, ast.Attribute) and node.attr in NEWER_ATTRIBUTES:
            base = node.value.id if isinstance(node.value, ast.Name) else ""
            if not (node.attr == "readlink" and base in _OLD_READLINK):
                note(node, f".{node.attr}", NEWER_ATTRIBUTES[node.attr])
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                top = name.split(".")[0]
                if top in NEWER_MODULES:
                    note(node, f"import {name}", NEWER_MODULES[top])
                if name.split(".")[-1] in NEWER_ATTRIBUTES and "." in name:
                    note(node, f"from import {name}", NEWER_ATTRIBUTES[name.split(".")[-1]])
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            if node.value.id in GENERIC_BUILTINS:
                note(node, f"{node.value.id}[...] at run time", (3, 9))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            callee = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if callee in NEWER_BUILTINS:
                note(node, f"{callee}()", NEWER_BUILTINS[callee])
            for keyword in node.keywords:
                since = NEWER_KEYWORDS.get((callee, keyword.arg or ""))
                if since:
                    note(node, f"{callee}({keyword.arg}=...)", since)
            if callee in ("isinstance", "issubclass") and len(node.args) == 2:
                if isinstance(node.args[1], ast.BinOp) and isinstance(node.args[1].op, ast.BitOr):
                    note(node, f"{callee}(x, A | B)", (3, 10))
    return found


def _annotations(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    if isinstance(node, ast.arg) and node.annotation is not None:
        return [node.annotation]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
        return [node.returns]
    return []


@pytest.mark.parametrize("name", sorted(IMAGE_CODE))
def test_the_code_that_runs_in_the_image_parses_on_its_oldest_python(name):
    ast.parse((PACKAGE / name).read_text(), filename=name, feature_version=IMAGE_CODE[name])


@pytest.mark.parametrize("name", sorted(IMAGE_CODE))
def test_the_code_that_runs_in_the_image_uses_no_newer_name(name):
    tree = ast.parse((PACKAGE / name).read_text(), filename=name)
    assert newer_than(tree, IMAGE_CODE[name]) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "name = text.removeprefix('a')",
        "from functools import cache",
        "import functools\n@functools.cache\ndef f(): pass",
        "import zoneinfo",
        "from zoneinfo import ZoneInfo",
        "values = list[int]()",
        "ok = isinstance(x, int | str)",
        "pairs = zip(a, b, strict=True)",
        "n = (5).bit_count()",
    ],
)
def test_the_denylist_catches_what_3_8_lacks(snippet):
    ast.parse(snippet, feature_version=(3, 8))  # parses: only the denylist sees it
    assert newer_than(ast.parse(snippet), (3, 8)) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "import os\nos.readlink('x')",
        "def f(x: list[int]) -> dict[str, int]: pass",
        "ok = isinstance(x, (int, str))",
        "n = len(text)",
    ],
)
def test_the_denylist_lets_3_8_code_through(snippet):
    assert newer_than(ast.parse(snippet), (3, 8)) == []


@pytest.mark.parametrize("snippet", ["x = f'{1}'", "x = 1_000", "(y := 1)"])
def test_the_syntax_check_catches_what_the_tagger_must_avoid(snippet):
    with pytest.raises(SyntaxError):
        ast.parse(snippet, feature_version=(3, 5))


def test_the_syntax_check_catches_what_3_8_lacks():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))


PROGRAM = """\
import os, sys
print("python", sys.version_info[:2], os.environ["GREETING"])
print("to stderr", file=sys.stderr)
display({"a": 1})
values = [n * n for n in range(4)]
raise ValueError("boom")
"""


@pytest.mark.skipif(find_python("3.8") is None, reason="no python3.8 here (pyenv)")
def test_the_job_program_runs_on_a_real_python_3_8(run_runner, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(find_python("3.8"), bin_dir / "python3")
    body = OffloadSpec(env={"GREETING": "hello"}).job_body(PROGRAM)
    result = run_runner(body, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    stdout = result.text("stdout")
    assert stdout[0] == "python (3, 8) hello"
    assert "{'a': 1}" in stdout[1]  # display() of a plain value
    assert "to stderr" in result.text("stderr")
    assert result.parser.exit_code == 1
    assert result.parser.traceback().splitlines()[-1] == "ValueError: boom"


def test_the_site_checks_probe_keeps_to_3_8_too():
    from oscar_jupyter.site_check import probe_code

    code = probe_code("http://storage.example:9000")
    tree = ast.parse(code, feature_version=runner.OLDEST_PYTHON)
    assert newer_than(tree, runner.OLDEST_PYTHON) == []
