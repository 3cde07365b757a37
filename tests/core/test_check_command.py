"""`oscar-jupyter check`: the table printed, the exit status from the report (the probe itself
runs in tests/e2e/test_image_python.py and test_site_check.py)."""

from __future__ import annotations

import pytest

from oscar_jupyter import cli, site_check
from oscar_jupyter.config import ConfigError
from oscar_jupyter.runner import old_python_message
from oscar_jupyter.site_check import SiteReport


def report(*rows: tuple[str, str, bool | None, bool]) -> SiteReport:
    made = SiteReport("site")
    for what, found, ok, blocking in rows:
        made.add(what, found, ok, blocking=blocking)
    return made


@pytest.fixture()
def answer(monkeypatch):
    calls = []

    def use(result):
        def fake_check(profile, **kwargs):
            calls.append((profile, kwargs))
            if isinstance(result, Exception):
                raise result
            return result

        monkeypatch.setattr(site_check, "check_site", fake_check)
        return calls

    return use


def test_a_usable_site_exits_0_even_with_a_missing_feature(answer, capsys):
    calls = answer(
        report(
            ("image's Python", "python3 3.11.2", True, True), ("--secret", "missing", False, False)
        )
    )
    assert cli.main(["check", "site", "--node", "vega", "--timeout", "60", "--no-keep"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Site check of site:"
    assert "  FAIL --secret" in out and "cannot run" not in out
    assert calls == [
        (
            "site",
            {
                "node": "vega",
                "image": None,
                "timeout": 60.0,
                "progress": cli._progress,
                "keep": False,
            },
        )
    ]


def test_a_site_where_cells_cannot_run_exits_1(answer, capsys):
    old = old_python_message("3.6.15")
    answer(report(("image's Python", old, False, True)))
    assert cli.main(["check", "site"]) == cli.CHECK_UNUSABLE == 1
    out = capsys.readouterr().out
    assert old in out and "site: cells cannot run on this site" in out


def test_a_wrong_profile_exits_2_with_the_reason(answer, capsys):
    answer(ConfigError("cluster 'site' is not in config.yaml"))
    assert cli.main(["check", "site"]) == cli.CHECK_ERROR == 2
    assert "oscar-jupyter check: error: cluster 'site' is not in" in capsys.readouterr().err


def test_a_bad_timeout_is_refused(answer, capsys):
    answer(report())
    assert cli.main(["check", "site", "--timeout", "0"]) == 2
    assert "--timeout must be positive" in capsys.readouterr().err


def test_usable_means_no_blocking_failure():
    assert report(("a", "x", False, False)).usable and not report(("a", "x", False, False)).ok
    assert not report(("a", "x", False, True)).usable
    assert report(("a", "x", None, True)).usable
