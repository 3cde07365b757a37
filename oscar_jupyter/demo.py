"""Run a tutorial notebook headless, echoing each cell's output to the terminal as it arrives.

python -m oscar_jupyter.demo notebooks/01-quickstart.ipynb [--out test-artifacts/...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


class EchoingClient(NotebookClient):
    """nbclient that also prints each cell's output live: streams, tables, status-line updates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, str] = {}

    def process_message(self, msg: dict, cell: Any, cell_index: int) -> Any:
        self._echo(msg)
        return super().process_message(msg, cell, cell_index)

    def _echo(self, msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            target = sys.stderr if content.get("name") == "stderr" else sys.stdout
            target.write(content.get("text", ""))
            target.flush()
        elif kind in ("display_data", "update_display_data", "execute_result"):
            text = content.get("data", {}).get("text/plain", "")
            key = (content.get("transient") or {}).get("display_id") or msg["header"]["msg_id"]
            if text and self._shown.get(key) != text:  # a status line: print each new state
                self._shown[key] = text
                print("  " + text.replace("\n", "\n  "), flush=True)
        elif kind == "error":
            print("\n".join(content.get("traceback", [])), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oscar_jupyter.demo")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, help="where to save the executed notebook")
    args = parser.parse_args(argv)
    nb = nbformat.read(args.notebook, as_version=4)
    client = EchoingClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(args.notebook.parent)}},
    )

    def announce(cell: Any, cell_index: int, **_: Any) -> None:
        if cell.cell_type == "code":
            first = cell.source.splitlines()[0] if cell.source else ""
            print(f"\n--- cell {cell_index}: {first}", flush=True)

    client.on_cell_start = announce
    client.execute()
    out = args.out or Path("test-artifacts") / f"{args.notebook.stem}.executed.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"\nSaved the executed notebook to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
