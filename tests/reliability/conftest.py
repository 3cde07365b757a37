"""Prints the reliability tables' totals after the run (see table.py)."""

from __future__ import annotations

from .table import summary_lines


def pytest_terminal_summary(terminalreporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("reliability tables")
        for line in lines:
            terminalreporter.write_line(line)
