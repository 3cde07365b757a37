"""One-line hints for errors a cell meets because it runs on the cluster."""

from __future__ import annotations

from oscar_jupyter.hints import hint
from oscar_jupyter.spec import OffloadSpec


def test_a_full_tmp_in_the_container_points_to_a_mounted_scratch_path():
    # /tmp under --containall is the session directory, 64 MiB by default (B11)
    for line in (
        "OSError: [Errno 28] No space left on device",
        "OSError: [Errno 28] No space left on device: '/tmp/data.npy'",
    ):
        advice = hint(line, OffloadSpec())
        assert advice.startswith("Hint: the job's disk is full")
        assert "--mount" in advice and "oscar-jupyter check" in advice


def test_other_errors_get_the_hint_that_fits_them_or_none():
    spec = OffloadSpec()
    assert hint("NameError: name 'data' is not defined", spec).endswith(
        "--in data (or define it in the cell)"
    )
    assert "no module 'torch'" in hint("ModuleNotFoundError: No module named 'torch.nn'", spec)
    assert hint("ValueError: loss is NaN", spec) == ""
