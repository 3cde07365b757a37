"""The interLink and interLink Slurm plugin releases the local OSCAR models.

A site runs whatever release its admins installed, typically 0.6.1 or older for both; the
plugin's development head differs from it in ways a user sees (reference OSCAR.md section 13).
`oscar-jupyter local start --plugin-version V --interlink-version V` picks the releases (0.6.1 by
default) and the server records them in its `state.json`.

"plugin 0.6.2" is the plugin's tag `0.6.2-pre5` (commit f83c10a): the plugin has no final 0.6.2
tag, and every 0.6.2 build a site can install is one of the `0.6.2-pre*` tags. interLink has a
`0.6.2` tag. Line numbers in the comments below and in the modules are those of these tags.

| what | plugin / interLink 0.6.1 | 0.6.2 | module |
|---|---|---|---|
| B1 pre-exec | `prefix + " " + job.sh` on ONE line (plugin `prepare.go` 1102-1108) | on its own line (`prepare.go` 1234-1247) | interlink.py |
| B2 sbatch flags | regexes over the raw annotation, split on single spaces (`prepare.go` 929-959; dedup 259-299) | shell words with short aliases (`prepare.go` 259-402, 1071-1090) | interlink.py |
| image prefix | put in front unless already there (`prepare.go` 1838-1860) | any `scheme://` kept (`prepare.go` 1973-2000) | interlink.py |
| ConfigMap text | written as is (`prepare.go` 1671) | literal `\\n` turned into newlines (`prepare.go` 515-520, 1806) | interlink.py |
| B4 `envFrom` | dropped: interLink 0.6.1 never resolves it, the plugin reads only `env` | resolved by interLink (`execute.go` 1168-1235, 1285-1290) | pod.py |

Same on both releases (B3, B6, B7, B8, B9, B11, B13, B14): see oscar.py, kubernetes_api.py,
singularity.py.
"""  # noqa: E501

from __future__ import annotations

PLUGIN_RELEASES = ("0.6.1", "0.6.2")
INTERLINK_RELEASES = ("0.6.1", "0.6.2")
# What sites run (reference OSCAR.md section 13: "assume 0.6.1 or older for both").
DEFAULT_PLUGIN_RELEASE = "0.6.1"
DEFAULT_INTERLINK_RELEASE = "0.6.1"


def check_release(kind: str, value: str) -> str:
    """`value` if it is a modelled release of `kind` ("plugin" or "interlink"), else ValueError
    naming the choices."""
    choices = PLUGIN_RELEASES if kind == "plugin" else INTERLINK_RELEASES
    if value not in choices:
        raise ValueError(
            f"the local OSCAR models {kind} releases {', '.join(choices)}, not {value!r}; "
            f"choose one with --{kind}-version"
        )
    return value


def at_least(release: str, version: str) -> bool:
    """Whether `release` ("0.6.1") is `version` or newer."""
    return tuple(int(part) for part in release.split(".")) >= tuple(
        int(part) for part in version.split(".")
    )
