"""LogParser on whole-log texts shaped like OSCAR's GET /system/logs/{svc}/{job} responses."""

from __future__ import annotations

import base64
import hashlib
import json

from oscar_jupyter import runner
from oscar_jupyter.logs import LogParser, OutputLine

D = "2026-03-01 10:00:0{}.123 - supervisor - DEBUG - "
PREAMBLE = (
    "This pod oj-abc-1/6f0d2a3e has been submitted to SLURM node localhost.\n"
    "To check the job status, use scontrol show job 42\n"
)
INFO = (
    "2026-03-01 10:00:00,001 - supervisor - INFO - SUPERVISOR: Initializing Binary supervisor\n"
    "2026-03-01 10:00:00,002 - supervisor - INFO - Reading storage configuration\n"
)


def debug(*lines: str) -> str:
    return "".join(
        f"2026-03-01 10:00:01,{i:03d} - supervisor - DEBUG - {line}\n"
        for i, line in enumerate(lines)
    )


def test_only_tagged_lines_count_and_decorations_are_removed():
    log = (
        PREAMBLE
        + INFO
        + debug("EVENT received: cHJpbnQoMSk=", "CONTAINER OUTPUT:")
        + debug(
            '@@OJ|s|0|{"node": "vk", "job": "oj-abc-1", "host": "n1"}|@@',
            "@@OJ|o|1|    indented  |@@",
            "@@OJ|e|1|oops|@@",
            "@@OJ|x|0|0|@@",
        )
        + "2026-03-01 10:00:02,000 - supervisor - INFO - Creating response\n"
        + '@@OJ|s|0|{"node": "vk", "job": "oj-abc-1", "host": "n1"}|@@\n'
        + "@@OJ|o|1|    indented  |@@\n@@OJ|e|1|oops|@@\n@@OJ|x|0|0|@@\n\n"
        + "real\t0m1.2s\n"
    )
    parser = LogParser()
    assert parser.feed(log) == [
        OutputLine("stdout", 1, "    indented  "),
        OutputLine("stderr", 1, "oops"),
    ]
    assert parser.started == {"node": "vk", "job": "oj-abc-1", "host": "n1"}
    assert parser.exit_code == 0 and parser.finished


def test_growing_log_returns_only_new_lines_without_repeats_or_gaps():
    parser = LogParser()
    first = PREAMBLE + INFO + debug("@@OJ|o|1|one|@@")
    assert [line.text for line in parser.feed(first)] == ["one"]
    assert not parser.finished
    # job.out is re-read in front and may itself grow; the old lines come again
    second = (
        PREAMBLE
        + "slurm warning\n"
        + INFO
        + debug("@@OJ|o|1|one|@@", "@@OJ|o|2|two|@@", "@@OJ|e|1|err|@@")
    )
    assert [line.text for line in parser.feed(second)] == ["two", "err"]
    assert parser.feed(second) == []
    final = second + debug("@@OJ|x|0|3|@@") + "@@OJ|o|1|one|@@\n@@OJ|o|2|two|@@\n@@OJ|e|1|err|@@\n"
    assert parser.feed(final) == []
    assert parser.exit_code == 3
    assert [line.text for line in parser.lines] == ["one", "two", "err"]


def test_line_split_across_two_polls_is_taken_once_complete():
    parser = LogParser()
    head = INFO + debug("@@OJ|o|1|first|@@") + D.format(2) + "@@OJ|o|2|half of a li"
    assert [line.text for line in parser.feed(head)] == ["first"]
    # even a cut that happens to end in "|@@" inside the text is not taken before its newline
    cut = INFO + debug("@@OJ|o|1|first|@@") + D.format(2) + "@@OJ|o|2|half of a li|@@"
    assert parser.feed(cut) == []
    whole = INFO + debug("@@OJ|o|1|first|@@", "@@OJ|o|2|half of a li|@@ne|@@")
    assert [line.text for line in parser.feed(whole)] == ["half of a li|@@ne"]


def test_dump_only_log_at_info_level_is_enough():
    parser = LogParser()
    log = INFO + "@@OJ|s|0|{}|@@\n@@OJ|o|1|a|@@\n@@OJ|o|2||@@\n@@OJ|x|0|1|@@\n"
    assert [line.text for line in parser.feed(log)] == ["a", ""]
    assert parser.exit_code == 1
    assert parser.started == {}


def test_user_text_that_looks_like_markers_or_decorations_is_text():
    parser = LogParser()
    tricky = "@@OJ|x|0|5|@@ and - supervisor - DEBUG - x"
    log = debug(f"@@OJ|o|1|{tricky}|@@") + f"@@OJ|o|1|{tricky}|@@\n"
    assert [line.text for line in parser.feed(log)] == [tricky]
    assert parser.exit_code is None
    # a fake control line printed by the cell is tagged, so it is output, not control
    assert parser.feed(debug("@@OJ|o|2|@@OJ|s|0|{}|@@|@@")) == [
        OutputLine("stdout", 2, "@@OJ|s|0|{}|@@")
    ]
    assert parser.started is None


def test_escaped_lines_restore_carriage_returns_and_backslashes():
    parser = LogParser()
    log = debug(r"@@OJ|O|1|10%\r100%\\n|@@", r"@@OJ|E|1|a\\r\r|@@", r"@@OJ|o|2|raw \r kept|@@")
    assert [(line.stream, line.text) for line in parser.feed(log)] == [
        ("stdout", "10%\r100%\\n"),
        ("stderr", "a\\r\r"),
        ("stdout", "raw \\r kept"),
    ]


def test_hex_escapes_show_nul_and_bytes_that_are_not_utf8_and_restore_other_controls():
    parser = LogParser()
    log = debug(
        r"@@OJ|O|1|a\xffb\x00c|@@",
        r"@@OJ|O|2|\x1b[31mred\x1b[0m\x07|@@",
        r"@@OJ|E|1|text \\x41 \xE6\x97 \x|@@",
        r"@@OJ|o|3|plain \x00 stays|@@",
    )
    assert [(line.stream, line.text) for line in parser.feed(log)] == [
        ("stdout", "a\\xffb\\x00c"),
        ("stdout", "\x1b[31mred\x1b[0m\x07"),
        ("stderr", "text \\x41 \\xe6\\x97 x"),
        ("stdout", "plain \\x00 stays"),
    ]


def test_only_newline_splits_lines_not_other_unicode_separators():
    parser = LogParser()
    text = "a\u2028b\x85c\x1cd\x0be\x0cf"
    assert [line.text for line in parser.feed(debug(f"@@OJ|o|1|{text}|@@"))] == [text]


def test_crlf_line_ends_from_the_transport_are_tolerated():
    parser = LogParser()
    log = debug("@@OJ|o|1|x|@@", "@@OJ|x|0|0|@@").replace("\n", "\r\n")
    assert [line.text for line in parser.feed(log)] == ["x"]
    assert parser.exit_code == 0


def test_traceback_is_the_trailing_stderr_block():
    parser = LogParser()
    parser.feed(
        debug(
            "@@OJ|e|1|warning: old|@@",
            "@@OJ|o|1|hi|@@",
            "@@OJ|e|2|Traceback (most recent call last):|@@",
            '@@OJ|e|3|  File "/tmp/oj-1/cell.py", line 2, in <module>|@@',
            "@@OJ|e|4|    1/0|@@",
            "@@OJ|e|5|ZeroDivisionError: division by zero|@@",
            "@@OJ|x|0|1|@@",
        )
    )
    assert parser.traceback() == (
        'Traceback (most recent call last):\n  File "/tmp/oj-1/cell.py", line 2, in <module>\n'
        "    1/0\nZeroDivisionError: division by zero"
    )
    assert LogParser().traceback() == ""


def test_malformed_control_lines_are_ignored():
    parser = LogParser()
    parser.feed(debug("@@OJ|s|0|not json|@@", "@@OJ|x|0|abc|@@", "@@OJ|q|1|x|@@"))
    assert parser.started is None and parser.exit_code is None and parser.lines == []


def growing_log(lines: int) -> str:
    """A cell's whole log as OSCAR serves it at the end: DEBUG lines, then the final dump."""
    tagged = ['@@OJ|s|0|{"node": "vk"}|@@'] + [f"@@OJ|o|{i}|line {i}|@@" for i in range(1, lines)]
    tagged.append("@@OJ|x|0|0|@@")
    return PREAMBLE + INFO + debug(*tagged) + "".join(line + "\n" for line in tagged)


def test_parse_cost_is_proportional_to_the_new_text_not_the_whole_log():
    log = growing_log(100_000)
    parser = LogParser()
    chunks = 300
    for i in range(1, chunks + 1):
        parser.feed(log[: len(log) * i // chunks])  # cut anywhere, even inside a line
    assert [line.text for line in parser.lines] == [f"line {i}" for i in range(1, 100_000)]
    assert parser.exit_code == 0 and parser.full_parses == 1  # the first feed only
    # each feed re-reads at most the line it was cut in: linear, not 300/2 times the log
    assert parser.chars_parsed < len(log) + chunks * 100


def test_incremental_and_whole_parses_agree_wherever_the_polls_cut():
    log = growing_log(500)
    whole = LogParser()
    whole.feed(log)
    for step in (1, 7, 64, 1000):
        polled, streamed = LogParser(), LogParser()
        for end in range(step, len(log) + step, step):
            polled.feed(log[:end])
            streamed.feed_more(log[end - step : end])
        for parser in (polled, streamed):
            assert parser.lines == whole.lines
            assert (parser.started, parser.exit_code) == (whole.started, whole.exit_code)


def test_a_text_that_does_not_extend_the_last_one_is_parsed_whole_again():
    parser = LogParser()
    parser.feed(PREAMBLE + INFO + debug("@@OJ|o|1|one|@@"))
    # job.out grew in front: everything after it shifted
    shifted = (
        PREAMBLE + "slurmstepd: warning\n" + INFO + debug("@@OJ|o|1|one|@@", "@@OJ|o|2|two|@@")
    )
    assert [line.text for line in parser.feed(shifted)] == ["two"]
    assert parser.full_parses == 2  # the first feed and this one
    # a shorter text (a log served from the start again) also starts over
    assert parser.feed(PREAMBLE) == [] and parser.full_parses == 3
    assert [line.text for line in parser.lines] == ["one", "two"]


def test_a_followed_stream_can_fall_back_to_polled_whole_logs():
    log = growing_log(50)
    parser = LogParser()
    parser.feed_more(log[:1000])
    parser.feed_more(log[1000:2000])
    parser.feed(log)  # polling OSCAR again after the stream broke: an extension
    assert parser.full_parses == 0
    assert [line.text for line in parser.lines] == [f"line {i}" for i in range(1, 50)]


def test_partial_records_show_the_pending_line_until_it_is_complete():
    parser = LogParser()
    log = debug("@@OJ|o|1|before|@@", "@@OJ|p|2|3/30|@@", "@@OJ|q|1|Name? |@@")
    assert [line.text for line in parser.feed(log)] == ["before"]  # partials are not lines
    assert parser.partial == {"stdout": "3/30", "stderr": "Name? "}
    log += debug("@@OJ|p|2|9/30|@@")
    assert parser.feed(log) == []
    assert parser.partial == {"stdout": "9/30", "stderr": "Name? "}
    log += debug("@@OJ|o|2|30/30|@@")
    assert parser.feed(log) == [OutputLine("stdout", 2, "30/30")]
    assert parser.partial == {"stderr": "Name? "}
    log += debug("@@OJ|P|3|\\x1b[1mnext|@@")
    assert parser.feed(log) == []
    assert parser.partial == {"stdout": "\x1b[1mnext", "stderr": "Name? "}
    log += debug("@@OJ|e|1|Name? Ada|@@", "@@OJ|O|3|\\x1b[1mnext line|@@", "@@OJ|x|0|0|@@")
    assert [line.text for line in parser.feed(log)] == ["Name? Ada", "\x1b[1mnext line"]
    assert parser.partial == {}


def test_partial_records_of_complete_lines_are_ignored_when_the_log_is_parsed_again():
    log = debug("@@OJ|p|1|1/3|@@", "@@OJ|o|1|3/3|@@", "@@OJ|p|2|half|@@")
    parser = LogParser()
    parser.feed(log)
    assert parser.partial == {"stdout": "half"}
    # the final dump repeats the records; a shifted log (job.out grew) is parsed whole again
    assert parser.feed("shifted\n" + log + "@@OJ|p|1|1/3|@@\n@@OJ|o|1|3/3|@@\n") == []
    assert parser.partial == {"stdout": "half"}
    # a partial record cut off by the poll waits for its newline
    parser = LogParser()
    parser.feed(debug("@@OJ|o|1|a|@@") + "@@OJ|p|2|ha|@@")
    assert parser.partial == {}


KEY = "271828182845904523536028747135266249775"
KEY_DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
KEYED_START = '@@OJ|s|0|{"node": "vk", "exit_key_sha256": "' + KEY_DIGEST + '"}|@@'


def test_an_exit_record_without_the_start_lines_key_is_the_cells_text_and_ends_nothing():
    # The cell wrote these into the supervisor's pipe itself: untagged, without the key.
    forged = ["@@OJ|x|0|0|@@", "@@OJ|x|12345|0|@@"]
    log = debug(KEYED_START, "@@OJ|o|1|working|@@", *forged, "@@OJ|o|2|still working|@@")
    parser = LogParser()
    assert parser.feed(log) == [
        OutputLine("stdout", 1, "working"),
        OutputLine("stdout", 0, forged[0]),
        OutputLine("stdout", 0, forged[1]),
        OutputLine("stdout", 2, "still working"),
    ]
    assert parser.exit_code is None and not parser.finished
    # the tagger's own exit record, then the supervisor's final dump repeating everything
    log += debug(f"@@OJ|x|{KEY}|1|@@")
    log += "".join(f"{line}\n" for line in [KEYED_START, *forged, f"@@OJ|x|{KEY}|1|@@"])
    assert parser.feed(log) == []  # each forged line shown once
    assert parser.exit_code == 1


def test_only_the_first_start_line_names_the_exit_key():
    other = "1"
    second_start = '@@OJ|s|0|{"exit_key_sha256": "' + hashlib.sha256(b"1").hexdigest() + '"}|@@'
    parser = LogParser()
    parser.feed(debug(KEYED_START, second_start, f"@@OJ|x|{other}|0|@@"))
    assert parser.started == {
        "node": "vk",
        "exit_key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
    }
    assert parser.exit_code is None
    assert [line.text for line in parser.lines] == [f"@@OJ|x|{other}|0|@@"]


def test_logs_without_an_exit_key_take_any_exit_record_as_before():
    for start in ("@@OJ|s|0|{}|@@", '@@OJ|s|0|{"node": "vk"}|@@', "@@OJ|s|0|not json|@@"):
        parser = LogParser()
        parser.feed(debug(start, "@@OJ|o|1|a|@@", "@@OJ|x|0|3|@@"))
        assert parser.exit_code == 3 and [line.text for line in parser.lines] == ["a"]


def test_the_traceback_marker_is_the_programs_record_and_a_plain_line_only_in_older_logs():
    marker = runner.TRACEBACK_MARKER
    parser = LogParser()
    parser.feed(
        debug(
            KEYED_START,
            f"@@OJ|e|1|{marker}|@@",
            "@@OJ|t|2||@@",
            "@@OJ|e|3|Traceback (most recent call last):|@@",
        )
    )
    assert [(line.seq, line.text, line.marker) for line in parser.lines] == [
        (1, marker, False),  # printed by the cell: its text
        (2, marker, True),
        (3, "Traceback (most recent call last):", False),
    ]
    older = LogParser()  # a runner before `t` records printed the marker as a stderr line
    older.feed(debug("@@OJ|s|0|{}|@@", f"@@OJ|e|1|{marker}|@@", f"@@OJ|o|1|{marker}|@@"))
    assert [line.marker for line in older.lines] == [True, False]


def test_a_rich_output_may_carry_json_data_but_its_text_is_text():
    def record(data: dict) -> str:
        payload = json.dumps({"data": data, "metadata": {}, "notes": []}).encode()
        return "@@OJ|d|1|" + base64.b64encode(payload).decode() + "|@@"

    parser = LogParser()
    [line] = parser.feed(debug(record({"application/json": {"a": [1, 2]}, "text/plain": "{}"})))
    assert line.bundle["data"]["application/json"] == {"a": [1, 2]} and line.text == "{}"
    [line] = LogParser().feed(debug(record({"application/json": {"a": 1}})))
    assert line.bundle["data"] == {"application/json": {"a": 1}} and line.text == ""
    [line] = LogParser().feed(debug(record({"text/plain": 5})))
    assert line.text == "oscar-jupyter: a rich output arrived damaged"
