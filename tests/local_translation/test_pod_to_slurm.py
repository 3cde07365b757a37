"""build_pod for an OSCAR runner service, translated end to end; bad input, clear errors."""

from __future__ import annotations

import base64
import copy
import subprocess

import pytest
import yaml

from oscar_jupyter.local.interlink import PluginConfig, TranslationError, prepare
from oscar_jupyter.local.pod import build_pod, configmap_data

TOKEN = "f" * 64
SERVICE = {
    "name": "oj-3f9a2c1d",
    "image": "docker://python:3.11-slim",
    "script": '#!/bin/sh\r\npython3 -u "$INPUT_FILE_PATH"\r\n',
    "cpu": "4",
    "memory": "8Gi",
    "log_level": "DEBUG",
    "interlink_node_name": "local-vk",
    "token": TOKEN,
    "annotations": {
        "slurm-job.vk.io/flags": "--job-name=oj --time=00:30:00 -c 2",
        "slurm-job.vk.io/pre-exec": "export A=1",
    },
    "environment": {"variables": {"PYTHONUNBUFFERED": "1", "QUOTE": "it's"}},
    "labels": {"oscar_service": "oj-3f9a2c1d", "nb": "abc"},
}
JOB = "oj-3f9a2c1d-0d1e2f3a"
UID = "9b0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3"
BODY = b"print('hello')\n"


def build(service: dict | None = None, **overrides) -> dict:
    arguments = {"job_name": JOB, "body": BODY, "pod_uid": UID} | overrides
    return build_pod(copy.deepcopy(service or SERVICE), **arguments)


def env_of(pod: dict) -> list[tuple[str, str]]:
    return [(e["name"], e["value"]) for e in pod["spec"]["containers"][0]["env"]]


def test_pod_shape_follows_oscar():
    pod = build()
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"].startswith(JOB + "-") and len(meta["name"]) == len(JOB) + 6
    assert meta["name"] == build()["metadata"]["name"]  # same input, same pod
    assert (meta["uid"], meta["namespace"]) == (UID, "oscar-svc")
    assert meta["labels"]["job-name"] == JOB and meta["labels"]["nb"] == "abc"
    assert meta["annotations"] == SERVICE["annotations"]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "local-vk"}
    assert spec["tolerations"] == [
        {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"}
    ]
    assert spec["restartPolicy"] == "Never"
    [init] = spec["initContainers"]
    assert (init["name"], init["args"]) == ("supervisor-container", ["cp -r /supervisor/* /data"])
    assert init["image"] == "docker://ghcr.io/grycap/faas-supervisor-kit:latest"
    [main] = spec["containers"]
    assert main["name"] == "oscar-container"
    assert main["command"] == ["/bin/sh", "-c"]
    assert main["args"] == ["echo $EVENT | base64 -d | /data/supervisor"]
    assert main["resources"] == {"limits": {"cpu": "4", "memory": "8Gi"}}
    assert [m["mountPath"] for m in main["volumeMounts"]] == ["/oscar/config", "/data"]
    assert spec["volumes"][0]["configMap"]["name"] == "oj-3f9a2c1d"
    assert spec["volumes"][1] == {"name": "supervisor-share-data", "emptyDir": {}}


def test_environment_in_oscar_order():
    names = [name for name, _ in env_of(build())]
    assert names[:5] == [
        "PYTHONUNBUFFERED",
        "QUOTE",
        "OSCAR_SERVICE_NAME",
        "OSCAR_SERVICE_TOKEN",
        "OSCAR_SERVICE_BASE_PATH",
    ]
    assert names[-3:] == ["EVENT", "JOB_UUID", "RESOURCE_ID"]
    env = dict(env_of(build()))
    assert base64.b64decode(env["EVENT"]) == BODY
    assert (env["JOB_UUID"], env["RESOURCE_ID"]) == (JOB, "local-vk")


def test_defaults_gpu_and_secrets():
    service = {k: v for k, v in SERVICE.items() if k not in ("cpu", "memory")}
    service |= {
        "enable_gpu": True,
        "environment": {"variables": {"A": "1"}, "secrets": {"API_KEY": "s3cr3t"}},
    }
    pod = build(service, interlink_release="0.6.2")
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "0.2",
        "memory": "256Mi",
        "nvidia.com/gpu": "1",
    }
    assert env_of(pod)[-1] == ("API_KEY", "s3cr3t")
    assert "envFrom" not in pod["spec"]["containers"][0]
    fdl = yaml.safe_load(configmap_data(service)["function_config.yaml"])
    assert fdl["environment"]["secrets"] == {"API_KEY": ""}


SECRET_SERVICE = SERVICE | {
    "environment": {
        "variables": {"A": "1", "B_KEY": "explicit"},
        "secrets": {"API_KEY": "s3cr3t", "B_KEY": "from-secret", "C": "it's"},
    }
}


def test_b4_interlink_0_6_2_resolves_envfrom_after_the_explicit_variables(tmp_path):
    """interLink 0.6.2 execute.go 1168-1235: the Secret's keys appended, an explicit variable
    of the same name wins, envFrom dropped."""
    pod = build(SECRET_SERVICE, interlink_release="0.6.2")
    [main] = pod["spec"]["containers"]
    assert "envFrom" not in main
    env = env_of(pod)
    assert env[-2:] == [("API_KEY", "s3cr3t"), ("C", "it's")]
    assert ("B_KEY", "explicit") in env and ("B_KEY", "from-secret") not in env
    directory = prepare(
        pod,
        configmaps={SERVICE["name"]: configmap_data(SERVICE)},
        config=PluginConfig(f"{tmp_path}/"),
    )
    envfile = (directory / "oscar-container_envfile.properties").read_text()
    assert envfile.endswith("API_KEY=s3cr3t\nC='it'\"'\"'s'\n")


def test_b4_interlink_0_6_1_passes_envfrom_on_and_the_plugin_drops_the_secrets(tmp_path):
    """OSCAR job.go 193-204 sends the secrets as envFrom; interLink 0.6.1 does not resolve it
    and the plugin's createEnvFile (prepare.go 485-537) writes only env: they are missing."""
    pod = build(SECRET_SERVICE)  # interLink 0.6.1 is the default, as on sites
    [main] = pod["spec"]["containers"]
    assert main["envFrom"] == [{"secretRef": {"name": SERVICE["name"]}}]
    assert [name for name, _ in env_of(pod) if name in ("API_KEY", "C")] == []
    directory = prepare(
        pod,
        configmaps={SERVICE["name"]: configmap_data(SERVICE)},
        config=PluginConfig(f"{tmp_path}/"),
    )
    envfile = (directory / "oscar-container_envfile.properties").read_text()
    assert "s3cr3t" not in envfile and "API_KEY" not in envfile
    assert "B_KEY=explicit\n" in envfile


def test_a_service_without_secrets_has_no_envfrom():
    for release in ("0.6.1", "0.6.2"):
        assert "envFrom" not in build(interlink_release=release)["spec"]["containers"][0]


def test_configmap_data_is_script_plus_fdl_without_script():
    data = configmap_data(copy.deepcopy(SERVICE))
    assert data["script.sh"] == '#!/bin/sh\npython3 -u "$INPUT_FILE_PATH"\n'
    fdl = yaml.safe_load(data["function_config.yaml"])
    assert "script" not in fdl
    assert fdl["token"] == TOKEN and fdl["log_level"] == "DEBUG" and fdl["name"] == "oj-3f9a2c1d"


@pytest.mark.parametrize("release", ["0.6.1", "0.6.2"])
def test_service_pod_translates_end_to_end(tmp_path, release):
    pod = build()
    directory = prepare(
        pod,
        configmaps={SERVICE["name"]: configmap_data(SERVICE)},
        config=PluginConfig(f"{tmp_path}/", release=release),
    )
    assert directory == tmp_path / f"oscar-svc-{UID}"
    job_slurm = (directory / "job.slurm").read_text()
    if release == "0.6.1":
        # B2: "-c 2" is no --cpus-per-task to the regex and splits in two; B1: one line.
        tail = ["#SBATCH -c", "#SBATCH 2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8192"]
        tail += ["", f"export A=1 {directory}/job.sh"]
    else:
        tail = ["#SBATCH --cpus-per-task=4", "#SBATCH --mem=8192", "", "export A=1"]
        tail += [f"{directory}/job.sh"]
    assert job_slurm.splitlines()[3:] == ["#SBATCH --job-name=oj", "#SBATCH --time=00:30:00"] + tail
    script = directory / "configMaps" / "oscar-config" / "script.sh"
    assert script.read_text() == configmap_data(SERVICE)["script.sh"]
    assert (directory / "configMaps/oscar-config/function_config.yaml").is_file()
    assert (directory / "emptyDirs" / "supervisor-share-data").is_dir()
    envfile = (directory / "oscar-container_envfile.properties").read_text()
    # The env file holds the service token and values: private, in a private pod folder.
    assert (directory / "oscar-container_envfile.properties").stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    assert "QUOTE='it'\"'\"'s'\n" in envfile and "RESOURCE_ID=local-vk\n" in envfile
    job_sh = (directory / "job.sh").read_text()
    assert (directory / "job.sh").stat().st_mode & 0o777 == 0o774
    init_line, main_line = [
        line for line in job_sh.split("\n") if line.startswith(("runInitCtn ", "runCtn "))
    ]
    assert init_line.startswith("runInitCtn supervisor-container singularity exec ")
    assert f"{directory}/emptyDirs/supervisor-share-data:/data:rw" in init_line
    assert main_line.endswith(
        " docker://python:3.11-slim /bin/sh -c 'echo $EVENT | base64 -d | /data/supervisor'"
    )
    assert (
        f" --bind {directory}/configMaps/oscar-config/script.sh:/oscar/config/script.sh:ro "
        in main_line
    )
    assert subprocess.run(["bash", "-n", str(directory / "job.sh")]).returncode == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"interlink_node_name": ""}, "interlink_node_name"),
        ({"image": ""}, r"service\['image'\]"),
        ({"cpu": "two"}, "service cpu.*'two'"),
        ({"memory": "-1Gi"}, "service memory must be positive"),
    ],
)
def test_build_pod_rejects_bad_services(change, message):
    with pytest.raises(ValueError, match=message):
        build(SERVICE | change)


def test_prepare_refuses_a_volume_the_plugin_cannot_mount(tmp_path):
    pod = build(SERVICE | {"volume": {"size": "1Gi", "mount_path": "/mnt/data"}})
    with pytest.raises(TranslationError, match="persistentVolumeClaim is not supported"):
        prepare(
            pod,
            configmaps={SERVICE["name"]: configmap_data(SERVICE)},
            config=PluginConfig(f"{tmp_path}/"),
        )
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_prepare_names_a_missing_configmap(tmp_path):
    with pytest.raises(TranslationError, match="ConfigMap 'oj-3f9a2c1d' was not provided"):
        prepare(build(), configmaps={}, config=PluginConfig(f"{tmp_path}/"))


def test_prepare_wants_resolved_env_values(tmp_path):
    pod = build()
    pod["spec"]["containers"][0]["env"].append(
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    )
    with pytest.raises(TranslationError, match="NODE uses valueFrom"):
        prepare(
            pod,
            configmaps={SERVICE["name"]: configmap_data(SERVICE)},
            config=PluginConfig(f"{tmp_path}/"),
        )


def test_data_root_must_end_with_a_slash():
    with pytest.raises(ValueError, match="data_root must end with '/'.*'/jobs/'"):
        PluginConfig("/jobs")


def test_errors_never_show_the_token(tmp_path):
    pod = build()
    pod["spec"]["containers"][0]["resources"]["limits"]["memory"] = "lots"
    with pytest.raises(TranslationError) as caught:
        prepare(
            pod,
            configmaps={SERVICE["name"]: configmap_data(SERVICE)},
            config=PluginConfig(f"{tmp_path}/"),
        )
    assert TOKEN not in str(caught.value)
