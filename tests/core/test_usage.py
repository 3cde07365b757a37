"""What a job used, measured by the runner on the cluster, and the one-line hint about its
request: the tagger's usage record (run as the program it is), the parser's check of it, and
the words every view shows."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import textwrap

from oscar_jupyter.logs import LogParser
from oscar_jupyter.usage import (
    GiB,
    MiB,
    Request,
    Usage,
    core_hours_text,
    hint,
    total_core_hours,
    usage_text,
)

from ..wire import cell_log, exit_line, out, start, supervisor_log, usage_line
from .one_job import OneJobOscar
from .test_tagger import records, run_tagger

KEY = "123456789012345678901234567890"
USED = {"wall_seconds": 185.0, "cpu_seconds": 130.0, "max_rss_kib": 319_897}


def test_the_tagger_sends_what_its_program_used_signed_just_before_the_exit(tmp_path):
    program = textwrap.dedent("""
        import time
        b = bytearray(200 * 2**20)
        b[::4096] = b"x" * len(b[::4096])
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass
        time.sleep(0.5)
        print("done")
    """)
    output, _ = run_tagger(tmp_path, program, shutil.which("python3"))
    tagged = records(output)
    kind, signature, text = tagged[-2]
    assert kind == "u" and tagged[-1][0] == "x"
    usage = Usage.from_record(json.loads(text))
    assert usage is not None
    assert 1.0 <= usage.wall_seconds < 10
    assert 0.5 <= usage.cpu_seconds < usage.wall_seconds  # busy 0.5 s, asleep 0.5 s
    assert 200 * MiB < usage.peak_memory < 300 * MiB
    assert usage.gpu_memory is None  # no nvidia-smi here
    parser = LogParser()
    parser.feed(output)
    assert parser.exit_code == 0
    assert Usage.from_record(parser.usage) == usage
    assert [line.text for line in parser.lines] == ["done"]  # the record is not the cell's text


def test_a_usage_record_the_cell_writes_is_not_taken():
    forged = {**USED, "max_rss_kib": 1}
    log = supervisor_log(
        [
            start(exit_key=KEY),
            usage_line(forged),  # unsigned
            usage_line(forged, exit_key="999"),  # signed with another key
            out(1, "hi"),
            usage_line(USED, exit_key=KEY),
            usage_line(forged, exit_key="999"),  # after the runner's: still not taken
            exit_line(0, exit_key=KEY),
        ]
    )
    parser = LogParser()
    parser.feed(log)
    assert parser.usage == USED


def test_a_job_without_a_usage_record_has_none_and_one_in_progress_none_yet():
    parser = LogParser()
    parser.feed(cell_log("j", ["a"], exit_key=KEY, exit_code=None, usage=USED))
    assert parser.usage is None
    parser = LogParser()
    parser.feed(cell_log("j", ["a"], exit_key=KEY))
    assert parser.finished and parser.usage is None
    parser = LogParser()
    parser.feed(cell_log("j", ["a"], exit_key=KEY, usage=USED))
    assert parser.usage == USED


def used(wall: float, cpu: float, peak: float) -> Usage:
    return Usage(wall, cpu, int(peak))


def test_the_usage_reads_wall_cpu_and_peak_against_the_request():
    usage = used(185, 130, 312.4 * MiB)
    request = Request(cpus=1, mem="8G", time="02:00:00")
    assert usage_text(usage, request) == (
        "wall 00:03:05 of 02:00:00 · CPU 00:02:10 (0.7 of 1 CPU on average) · peak 312.4 MiB of 8G"
    )
    assert usage_text(usage, None) == (
        "wall 00:03:05 · CPU 00:02:10 (0.7 of 1 CPU on average) · peak 312.4 MiB"
    )
    gpu = Usage(60, 50, 1 * GiB, 3 * GiB, 16 * GiB)
    assert usage_text(gpu, Request(cpus=4)).endswith("GPU memory peak 3.0 GiB of 16.0 GiB")


def test_the_hint_names_a_request_nearly_exceeded_or_far_too_large():
    assert hint(used(600, 590, 27.9 * GiB), Request(mem="32G")) == (
        "peak 27.9 GiB of 32G: close to the limit, ask for more with --mem"
    )
    assert hint(used(6900, 6800, GiB), Request(time="02:00:00")) == (
        "ran 01:55:00 of 02:00:00: close to the limit, ask for more with --time"
    )
    assert hint(used(600, 720, GiB), Request(cpus=8)) == (
        "used 1.2 of 8 CPUs on average: ask for fewer with --cpus-per-task 2"
    )
    assert hint(used(600, 590, 1.2 * GiB), Request(mem="32G")) == (
        "peak 1.2 GiB of 32G: ask for less with --mem 2G"
    )
    assert hint(used(180, 170, GiB), Request(time="02:00:00")) == (
        "ran 00:03:00 of 02:00:00: a shorter --time (00:10:00) waits less in the queue"
    )


def test_no_hint_when_the_request_fitted_or_the_job_was_too_short_to_judge():
    assert hint(used(600, 590, 5 * GiB), Request(cpus=1, mem="8G", time="00:15:00")) is None
    assert hint(used(5, 1, 50 * MiB), Request(cpus=8)) is None  # 5 s say nothing of CPUs
    assert hint(used(5, 1, 50 * MiB), None) is None
    assert hint(used(5, 1, 50 * MiB), Request(mem="1G")) is None  # small requests are fine


def test_core_hours_are_cores_asked_times_wall_time():
    jobs = [(Request(cpus=8), 1800.0), (Request(cpus=1), 3600.0), (None, None)]
    assert total_core_hours(jobs) == 5.0
    assert core_hours_text(5.0) == "5.00 core-hours"
    assert core_hours_text(1.0) == "1.00 core-hour"
    assert core_hours_text(12.345) == "12.3 core-hours"


def ended_job(tmp_path, spec, usage=USED):
    from oscar_jupyter.jobs import Job

    log = cell_log("job-1", ["hi"], exit_key=KEY, usage=usage)
    job = Job(OneJobOscar(log), "svc", "job-1", spec, log_dir=tmp_path)
    job.refresh()
    return job


def test_the_status_line_of_an_ended_job_says_what_it_used_and_the_hint(tmp_path):
    from oscar_jupyter.display import status_line
    from oscar_jupyter.spec import OffloadSpec

    job = ended_job(tmp_path, OffloadSpec(node="vk", time="02:00:00", cpus_per_task=8, mem="32G"))
    assert job.status() == "Succeeded"
    first, second = status_line(job).split("\n")
    assert first.startswith("✔ Succeeded on vk · wall 00:03:05 of 02:00:00 · ")
    assert "CPU 00:02:10 (0.7 of 8 CPUs on average) · peak 312.4 MiB of 32G" in first
    assert second == "used 0.7 of 8 CPUs on average: ask for fewer with --cpus-per-task 1"
    fitted = ended_job(tmp_path / "2", OffloadSpec(node="vk", time="00:05:00", mem="1G"))
    assert "\n" not in status_line(fitted) and "peak 312.4 MiB of 1G" in status_line(fitted)


def test_the_listing_and_the_sidebar_json_show_the_same_usage_and_the_core_hours(tmp_path):
    from oscar_jupyter.job_status import JobState, listed_row, rows_core_hours
    from oscar_jupyter.widgets.jobs_table import listing_bundle

    request = Request(cpus=8, mem="32G", time="02:00:00")
    usage = Usage.from_record(USED)
    state = JobState("Succeeded", 0, "vk", None, None, None, usage)
    row = listed_row("svc", "oj-1-9827865a7cfd", {}, state, kernel_tag=None, this_kernel=True)
    row = dataclasses.replace(row, request=request)
    entry = row.as_json(None)
    assert entry["usage"]["text"] == usage_text(usage, request)
    assert entry["usage"]["hint"] == hint(usage, request)
    assert entry["request"] == {"cpus": 8, "mem": "32G", "time": "02:00:00"}
    assert entry["core_hours"] == round(8 * 185 / 3600, 4)
    assert rows_core_hours([row, row]) == 2 * 8 * 185 / 3600
    text = listing_bundle([row, row], whose="this notebook")["text/plain"]
    assert usage_text(usage, request) in text and hint(usage, request) in text
    assert text.splitlines()[-1] == (
        "Total for this notebook: 0.82 core-hours (cores asked × wall time)"
    )


def test_job_records_keep_the_request_and_the_usage_after_the_kernel(tmp_path, monkeypatch):
    from oscar_jupyter import job_records
    from oscar_jupyter.job_status import merge_records
    from oscar_jupyter.spec import OffloadSpec

    monkeypatch.setenv("OSCAR_JUPYTER_LOG_DIR", str(tmp_path / "logs"))
    job = ended_job(tmp_path, OffloadSpec(node="vk", cpus_per_task=4, mem="8G"))
    job.client.endpoint = "http://oscar.example"
    job_records.note_submitted(job, "print('hi')", "local", "k1")
    assert job_records.note_ended(job)
    record = job_records._load("http://oscar.example", "job-1")
    assert record is not None and record.status == "Succeeded"
    assert record.request == {"cpus": 4, "mem": "8G", "time": None}
    assert Usage.from_record(record.usage) == job.usage
    # A view without the kernel: the row made from the record alone says the same.
    (row,) = merge_records([], {"job-1": job_records.replace(record, status="Cancelled")})
    assert row.usage == job.usage and row.request == Request(4, "8G", None)


def test_gpu_memory_is_measured_where_nvidia_smi_answers(tmp_path, monkeypatch):
    # A stand-in nvidia-smi: two GPUs, of which CUDA_VISIBLE_DEVICES gives the job the first.
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, 3000, 16000\\n1, 9000, 16000\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    (tmp_path / "run").mkdir()
    output, _ = run_tagger(tmp_path / "run", "print('on the GPU')\n", shutil.which("python3"))
    kind, _, text = records(output)[-2]
    usage = Usage.from_record(json.loads(text))
    assert kind == "u" and usage is not None
    assert (usage.gpu_memory, usage.gpu_total) == (3000 * MiB, 16000 * MiB)
    assert usage_text(usage, None).endswith("GPU memory peak 2.9 GiB of 15.6 GiB")
