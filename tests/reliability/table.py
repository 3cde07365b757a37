"""Totals of the reliability tables (bad inputs, faults), printed at the end of the test run."""

from __future__ import annotations

from collections import defaultdict

RESULTS: dict[str, dict[str, bool]] = defaultdict(dict)


def record(table: str, case: str, passed: bool) -> None:
    RESULTS[table][case] = passed


def summary_lines() -> list[str]:
    lines = []
    for table, cases in sorted(RESULTS.items()):
        passed = sum(cases.values())
        lines.append(f"{table}: {passed} of {len(cases)} cases as expected")
        lines += [f"  not as expected: {case}" for case, ok in cases.items() if not ok]
    return lines
