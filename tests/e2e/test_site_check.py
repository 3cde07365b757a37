"""`oscar-jupyter check` / `%oscar_check` against the local OSCAR on the real Slurm: one probe
job, a table of what a first day on the site would otherwise find out cell by cell, and the
findings kept in the profile, where the magics read them."""

from __future__ import annotations

import shutil

import pytest
import yaml

from oscar_jupyter.config import JupyterSettings, load_profile
from oscar_jupyter.session import Session
from oscar_jupyter.site_check import check_site
from oscar_jupyter.spec import OffloadSpec, SpecError

pytestmark = pytest.mark.e2e
NODE = "local-slurm"


@pytest.fixture()
def own_config(local_oscar, monkeypatch, tmp_path):
    """A copy of the session's oscar-cli file: the check writes into it."""
    path = tmp_path / "config.yaml"
    shutil.copy(local_oscar.profile_path, path)
    monkeypatch.setenv("OSCAR_CLI_CONFIG", str(path))
    return path


@pytest.mark.parametrize("user", ["admin", "alice"])
def test_the_check_reports_the_site_and_keeps_what_it_found(local_oscar, own_config, user):
    profile = "local" if user == "admin" else local_oscar.user_profiles[user]
    seen: list[str] = []
    report = check_site(profile, node=NODE, progress=seen.append)
    found = {f.what: f for f in report.findings}
    assert found["interLink"].ok is True
    assert found["image's Python"].ok is True and "python3 3." in found["image's Python"].found
    assert found["--pre-exec"].ok is True
    assert found["--secret"].ok in (True, False)  # arrives, or says why not (interLink 0.6.1)
    assert "MiB" in found["/tmp"].found
    assert "submit to first line" in found and "queue wait" in found
    assert any("probe job" in step for step in seen)
    text = report.text()
    assert text.startswith(f"Site check of {profile}:")
    assert [f.what for f in report.findings if f.ok is False] in ([], ["--secret"]), text
    # Kept in the profile, dated, where the session reads it.
    kept = JupyterSettings.of(load_profile(profile, config_path=own_config)).site_check
    assert kept["python"].startswith("3.") and kept["pre_exec"] is True
    assert kept["date"] and kept["node"] == NODE
    assert "auth_password" not in str(kept) and "token" not in str(kept).lower()
    # Everything else of the file is as it was.
    before = yaml.safe_load(local_oscar.profile_path.read_text())
    after = yaml.safe_load(own_config.read_text())
    jupyter = after["oscar"][profile]["jupyter"]
    jupyter.pop("site_check")
    if not jupyter:  # a profile without a jupyter: block got one for the findings alone
        del after["oscar"][profile]["jupyter"]
    assert after == before


def test_secrets_the_check_found_missing_are_refused_before_sending(local_oscar, own_config):
    data = yaml.safe_load(own_config.read_text())
    data["oscar"]["local"].setdefault("jupyter", {})["site_check"] = {
        "date": "2026-12-01",
        "secrets": False,
    }
    own_config.write_text(yaml.safe_dump(data))
    session = Session()
    session.connect("local")
    spec = session.build_spec({"node": NODE, "time": "00:01:00", "secrets": {"TOKEN": "x"}})
    with pytest.raises(SpecError) as refused:
        session.submit("print(1)", spec)
    assert refused.value.flag == "--secret"
    assert "site check of 2026-12-01 found that secrets never reach a job" in str(refused.value)
    assert "--mount" in str(refused.value)
    session.submit("print(1)", OffloadSpec(node=NODE, time="00:01:00")).wait(120)
