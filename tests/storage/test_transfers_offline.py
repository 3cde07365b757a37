"""--upload/--download refused before anything is sent, the options table, and the sealed
manifest the job opens (no Slurm, no server)."""

from __future__ import annotations

import pytest

from oscar_jupyter import cell_program, options
from oscar_jupyter.spec import SpecError, settings_from_options
from oscar_jupyter.transfers import check_transfers, parse_download, parse_upload


def test_upload_defaults_to_tmp_and_keeps_an_absolute_remote(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("x")
    assert parse_upload(str(data)).remote == "/tmp/data.csv"
    assert parse_upload(f"{data}:/scratch/in.csv").remote == "/scratch/in.csv"
    assert parse_upload(str(tmp_path)).folder


@pytest.mark.parametrize(
    "uploads, downloads, says",
    [
        (["/no/such/file"], [], "there is no file or folder"),
        (["{data}:relative/path"], [], "must be absolute"),
        (["{data}:/tmp/../etc/x"], [], "'..'"),
        (["{data}:/tmp/a", "{data}:/tmp/a"], [], "two uploads go to /tmp/a"),
        ([], ["relative"], "must be absolute"),
        ([], ["/"], "name a file or folder"),
        ([], ["/tmp/x:/no/such/folder/x"], "there is no folder"),
        ([], ["/tmp/a:same", "/tmp/b:same"], "two downloads land at"),
        ("{data}", [], "give a list"),
    ],
)
def test_bad_transfers_are_refused_with_the_flag(tmp_path, uploads, downloads, says):
    data = tmp_path / "data.csv"
    data.write_text("x")

    def fill(value):
        return value.format(data=data)

    uploads = fill(uploads) if isinstance(uploads, str) else [fill(u) for u in uploads]
    with pytest.raises(SpecError) as refused:
        check_transfers(uploads, downloads)
    assert says in str(refused.value)


def test_flags_parse_repeat_and_reach_the_spec(tmp_path):
    parsed = options.parse_line("--upload a.csv --upload b:/x/b --download /tmp/m.pt")
    settings = settings_from_options(parsed)
    assert settings["uploads"] == ["a.csv", "b:/x/b"]
    assert settings["downloads"] == ["/tmp/m.pt"]
    # the panel's text field: one entry a word
    assert settings_from_options({"uploads": "a b:/x"})["uploads"] == ["a", "b:/x"]
    assert "--upload LOCAL[:REMOTE] (repeatable)" in options.flag_help()
    assert "`--download REMOTE[:LOCAL]`" in options.readme_table()


def test_download_lands_in_the_current_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(parse_download("/tmp/model.pt").local) == "model.pt"
    assert parse_download(f"/tmp/model.pt:{tmp_path}/m.pt").local == tmp_path / "m.pt"


def test_the_sealed_manifest_opens_with_its_key_only():
    key, other = b"k" * 32, b"o" * 32
    manifest = {"uploads": [{"url": "http://h/b/k?X-Amz-Signature=abc", "size": 3}]}
    sealed = cell_program.seal(key, manifest)
    assert sealed.startswith(cell_program.SEALED_PREFIX)
    assert "X-Amz" not in sealed and "abc" not in sealed
    assert cell_program.unseal(key, sealed) == manifest
    with pytest.raises(ValueError):
        cell_program.unseal(other, sealed)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(ValueError):
        cell_program.unseal(key, tampered)


def test_errors_name_the_storage_host_never_the_url():
    url = "http://127.0.0.1:1/bucket/key?X-Amz-Credential=AKIA&X-Amz-Signature=secret"
    channel = cell_program.StorageChannel({})
    with pytest.raises(cell_program.OffloadValuesError) as failed:
        channel.fetch({"url": url, "size": 1, "sha256": ""}, open("/dev/null", "wb"))
    text = str(failed.value)
    assert "http://127.0.0.1:1" in text and "--mount" in text
    assert "X-Amz" not in text and "AKIA" not in text and "secret" not in text
