"""Persistent sessions without a cluster: the job's program, names, markers, tracebacks, and
the magics' refusals before anything is sent."""

from __future__ import annotations

import base64
import re
import zlib

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from oscar_jupyter import remote_session, runner
from oscar_jupyter import session as session_module
from oscar_jupyter.logs import OutputLine
from oscar_jupyter.remote_session import RemoteSession, SessionError, check_name, relabel
from oscar_jupyter.spec import OffloadSpec


def unpacked(program: bytes) -> str:
    packed = re.search(rb'b85decode\("(.*?)"\)', program)
    assert packed is not None
    return zlib.decompress(base64.b85decode(packed.group(1))).decode("utf-8")


def test_session_program_is_cell_program_then_the_loop():
    source = unpacked(runner.build_session_program({"A": "1"}, "sealed:abc"))
    compile(source, "<session>", "exec")
    assert "def session_main():" in source and "def open_storage(params):" in source
    assert source.count("main()") == source.count("session_main()") + source.count("def main()")
    assert source.rstrip().endswith("session_main()")
    assert "'inputs': 'sealed:abc'" in source and "'env': {'A': '1'}" in source
    assert "from .cell_program" in source  # in a try block: ImportError in the job
    # small enough to leave the job's body room: nothing but the channel travels in it
    assert len(runner.encode_body(runner.build_session_program({}, "sealed:" + "x" * 900))) < (
        runner.MAX_BODY_BYTES // 3
    )


@pytest.mark.parametrize("name", ["s1", "analysis_2", "a-b"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "1s", "a b", "x" * 33, "s/1", None, "../s"])
def test_bad_names_are_refused(name):
    with pytest.raises(SessionError, match="session name"):
        check_name(name)


def test_traceback_names_the_cell_and_earlier_cells():
    text = (
        "Traceback (most recent call last):\n"
        '  File "/tmp/oj-AbC123/cell-7.py", line 2, in <module>\n'
        "    f()\n"
        '  File "/tmp/oj-AbC123/cell-3.py", line 5, in f\n'
        "    raise ValueError\n"
        "ValueError"
    )
    shown = relabel(text, 7, "Cell In[9]", 1)
    assert "Cell In[9], line 3, in <module>" in shown
    assert "session cell 3, line 5, in f" in shown
    assert "/tmp/oj-" not in shown


class FakeJob:
    name = "oj-x-abc-123"
    service = "oj-x"
    node = "vega"
    spec = OffloadSpec(node="vega", time="00:10:00")
    started_at = None

    def is_done(self):
        return False

    def lines(self):
        return self._lines

    def lines_since(self, count):
        return self._lines[count:]

    def elapsed(self):
        return 0.0


def marker(token, event, **fields):
    payload = {"event": event, "token": token, "time": 1.0, **fields}
    bundle = {"data": {"text/plain": ""}, "metadata": {remote_session.SESSION_KEY: payload}}
    return OutputLine("stdout", 1, "", bundle)


def test_markers_need_the_sessions_token_and_split_the_output():
    job = FakeJob()
    job._lines = [
        marker("t0", "ready"),
        marker("forged", "end", cell=1, status="ok"),  # printed by a cell: just output
        marker("t0", "begin", cell=1),
        OutputLine("stdout", 2, "hello"),
    ]
    remote = RemoteSession(None, "s1", job, token="t0", idle_minutes=30)  # type: ignore[arg-type]
    seen: list[str] = []
    markers = remote._take(lambda lines: seen.extend(line.text for line in lines))
    assert [m["event"] for m in markers] == ["ready", "begin"]
    assert seen == ["", "hello"]  # the forged marker is a (blank) rich output of the cell
    assert remote.state() == "busy" and remote.running == 1
    assert remote.next_cell == 2  # what another view (the sidebar) stops after
    job._lines.append(marker("t0", "end", cell=1, status="ok"))
    remote._take(None)
    assert remote.state() == "idle"
    assert remote.row()["time_left"] == 600


@pytest.fixture()
def ip(ipshell, monkeypatch, tmp_path):
    monkeypatch.setattr(session_module, "_current", None)
    monkeypatch.setattr(remote_session, "_SESSIONS", {})
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    for name in ("OSCAR_ENDPOINT", "OSCAR_USER", "OSCAR_PASSWORD", "OSCAR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return ipshell


def test_unknown_session_is_refused_before_anything_is_sent(ip):
    with pytest.raises(SessionError, match="no session nope in this kernel"):
        ip.run_cell_magic("oscar_offload", "--session nope", "print(1)\n")


def test_session_cells_take_no_resources(ip):
    with pytest.raises(UsageError, match="--mem, .*cannot go with --session"):
        ip.run_cell_magic("oscar_offload", "--session s1 --mem 2G --no-wait", "print(1)\n")


def test_duplicate_start_is_refused_before_anything_is_sent(ip):
    job = FakeJob()
    job._lines = []
    remote_session._SESSIONS["s1"] = RemoteSession(
        None,  # type: ignore[arg-type]
        "s1",
        job,  # type: ignore[arg-type]
        token="t",
        idle_minutes=30,
    )
    with pytest.raises(SessionError, match="session s1 already runs"):
        ip.run_line_magic("oscar_session", "start s1 --node vega --time 00:10:00")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("stop", "name the session"),
        ("begin s1", "invalid choice"),
        ("start 1x --node vega", "session name"),
        ("stop s1 --mem 2G", "takes only the session's name"),
    ],
)
def test_session_magic_usage_errors(ip, line, message):
    with pytest.raises((UsageError, SessionError), match=message), capture_output():
        ip.run_line_magic("oscar_session", line)


def test_walltime_warning_once_when_near():
    job = FakeJob()
    job._lines = []
    job.started_at = object()  # started: time left = limit - elapsed
    elapsed = [100.0]
    job.elapsed = lambda: elapsed[0]  # type: ignore[method-assign]
    remote = RemoteSession(None, "s1", job, token="t", idle_minutes=30)  # type: ignore[arg-type]
    assert remote.walltime_warning() is None  # 500 s of 600 left
    elapsed[0] = 400.0
    warning = remote.walltime_warning()
    assert warning is not None and "reaches its walltime in 3 min" in warning
    assert remote.walltime_warning() is None  # once


def test_a_poll_costs_the_kernel_what_the_log_grew_by(tmp_path, monkeypatch):
    """OSCAR serves the whole log on every poll (a session's grows all day): the parser, the
    look for Slurm's end banner and the session's reader take only what is new."""
    from oscar_jupyter import jobs

    from ..wire import record

    looked_at: list[int] = []
    real = jobs.mentions_slurm_end
    monkeypatch.setattr(
        jobs, "mentions_slurm_end", lambda text: looked_at.append(len(text)) or real(text)
    )
    job = jobs.Job(None, "oj-x", "oj-x-abc-123", OffloadSpec(), log_dir=tmp_path)  # type: ignore[arg-type]
    log = "".join(record("o", i, f"line {i} " + "x" * 90) + "\n" for i in range(1, 5001))
    job._absorb(log)
    remote = RemoteSession(None, "s1", job, token="t", idle_minutes=30)  # type: ignore[arg-type]
    remote._take(None)
    parsed = job._parser.chars_parsed
    seen: list[str] = []
    for i in range(5001, 5011):
        log += record("o", i, f"line {i}") + "\n"
        job._absorb(log)
        remote._take(lambda lines: seen.extend(line.text for line in lines))
        assert seen[-1] == f"line {i}"
    assert len(seen) == 10
    assert len(log) > 500_000
    assert job._parser.chars_parsed - parsed < 1000
    assert max(looked_at[1:]) < 1000, looked_at  # the first look: the whole log
