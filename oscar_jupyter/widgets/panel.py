"""The offload panel: resource widgets whose values become this kernel's `%%oscar_offload` defaults.

The panel turns its text into offload settings with the magic's own conversion
(`spec.settings_from_options`) and checks them with `OffloadSpec.validate_all()` and against the
chosen node's capacity (`capacity.capacity_problems`), so a field is marked with exactly the
message the magic would raise for the same value.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from ..capacity import CLUSTER_DEFAULT, capacity_notes, capacity_problems, default_node_notes
from ..config import ConfigError, JupyterSettings
from ..nodes import VirtualNode, format_bytes
from ..options import BY_FIELD, BY_FLAG, OPTIONS, render
from ..session import Session, current
from ..spec import DEFAULT_IMAGE, OffloadSpec, SpecError, settings_from_options
from .rows import RowList
from .style import style_widget

# Fields with a widget of their own; every other labelled option is a single-line text field.
OWN_WIDGETS = ("node", "image", "pre_exec", "mounts", "env")
# Single-line text fields: label and placeholder, from the one table of options.
TEXT_FIELDS: dict[str, tuple[str, str]] = {
    o.field: (o.label, o.placeholder)
    for o in OPTIONS
    if o.field and o.label and o.field not in OWN_WIDGETS
}
NO_NODE = CLUSTER_DEFAULT


@dataclass
class Problem:
    """A value the magic would refuse: `flag` as in the magic ("--time"), `message` its error."""

    flag: str
    message: str


def field_for_flag(flag: str | None) -> str | None:
    """`--cpus-per-task` -> `cpus_per_task`; None when the flag is no OffloadSpec field."""
    option = BY_FLAG.get(flag or "")
    return option.field if option is not None else None


def node_label(node: VirtualNode) -> str:
    """e.g. 'vega — Ready · 12/64 CPUs · 100.0 GiB/256.0 GiB free · 4 GPUs'"""
    return (
        f"{node.name} — {node.status} · {node.cpu_free:g}/{node.cpu_total:g} CPUs · "
        f"{format_bytes(node.memory_free_bytes)}/{format_bytes(node.memory_total_bytes)} free · "
        f"{node.gpus} GPU{'' if node.gpus == 1 else 's'}"
    )


class Panel(w.VBox):
    """Resource form for this kernel's offloaded cells.

    Every change rewrites `session.defaults` (the layer the magic puts under a cell's own flags) and
    the previewed `%%oscar_offload` line. `problems` maps field names to what the magic would say.
    """

    def __init__(self, session: Session | None = None, *, load_nodes: bool = True) -> None:
        super().__init__()
        self.session = session if session is not None else current()
        self.problems: dict[str, Problem] = {}
        self.general_problems: list[str] = []
        self.offload_line = "%%oscar_offload"
        self.nodes: list[VirtualNode] | None = None
        self._loading = True
        self._managed: set[str] = set()
        self._build()
        self.load_defaults(self.session.defaults)
        if load_nodes:
            self.refresh_nodes()
        self._loading = False
        self.update()

    # -- building ------------------------------------------------------------------------------

    def _build(self) -> None:
        self.node = w.Dropdown(options=[(NO_NODE, None)], value=None)
        self.refresh_button = w.Button(
            description="Refresh", icon="refresh", tooltip="Ask the cluster for its virtual nodes"
        )
        self.refresh_button.layout.width = "auto"
        self.refresh_button.on_click(lambda _: self.refresh())
        self.node_info = w.HTML()
        self.node_info.add_class("oj-muted")

        self.text: dict[str, w.Text] = {
            name: w.Text(placeholder=placeholder) for name, (_, placeholder) in TEXT_FIELDS.items()
        }
        self.image = w.Combobox(placeholder=DEFAULT_IMAGE, ensure_option=False)
        self.offer_recent_images()
        self.pre_exec = w.Textarea(placeholder=BY_FIELD["pre_exec"].placeholder)
        self.pre_exec.layout.height = "3.5em"
        self.mounts = RowList(["source:target[:ro]"], "Add mount", self._changed)
        self.env = RowList(["NAME", "value"], "Add variable", self._changed)

        controls: dict[str, w.DOMWidget] = {
            "node": self.node,
            **self.text,
            "image": self.image,
            "pre_exec": self.pre_exec,
            "mounts": self.mounts,
            "env": self.env,
        }
        self.controls = {k: v for k, v in controls.items() if k in BY_FIELD}
        self._managed = set(self.controls)
        for name in ("node", "image", "pre_exec", *self.text):
            controls[name].observe(lambda _: self._changed(), names="value")

        self.errors = {name: w.HTML() for name in self.controls}
        for html_widget in self.errors.values():
            html_widget.add_class("oj-error")
        self.cells = {name: self._cell(name) for name in self.controls}

        node_row = w.HBox([self.node, self.refresh_button])
        node_row.layout.width = "100%"
        self.node.layout.flex = "1 1 auto"
        self.node.layout.width = "auto"
        node_cell = w.VBox([_label("Virtual node"), node_row, self.node_info, self.errors["node"]])
        node_cell.add_class("oj-field")

        resources = self._grid(
            [
                "time",
                "cpus_per_task",
                "mem",
                "nodes",
                "ntasks",
                "ntasks_per_node",
                "mpi",
                "gpus",
                "partition",
                "account",
                "job_name",
            ]
        )
        self.capacity_note = w.HTML()  # the request fits the node but would wait (capacity.py)
        self.capacity_note.add_class("oj-muted")
        container = self._grid(["image", "singularity_options"])
        wide = [self.cells[name] for name in ("mounts", "env", "secrets", "pre_exec", "sbatch")]

        self.preview = w.HTML()
        self.preview.add_class("oj-preview")
        self.problem_summary = w.HTML()
        self.problem_summary.add_class("oj-error")
        self.service_view = w.HTML()
        self.service_fold = w.Accordion(children=[self.service_view], selected_index=None)
        self.service_fold.set_title(0, "Service definition")

        title = w.HTML(
            '<span class="oj-title">OSCAR offload settings</span> '
            '<span class="oj-muted">defaults of every %%oscar_offload in this kernel; '
            "a cell's own flags still win</span>"
        )
        self.session_name = w.Text(placeholder="s1")
        self.session_name.layout.width = "10em"
        self.session_button = w.Button(
            description="Start session",
            icon="play",
            tooltip="Start a persistent session with these settings "
            "(%oscar_session start NAME; its cells: %%oscar_offload --session NAME)",
        )
        self.session_button.layout.width = "auto"
        self.session_button.on_click(lambda _: self.start_session())
        self.session_status = w.HTML()
        self.session_status.add_class("oj-muted")
        session_row = w.HBox([self.session_name, self.session_button])
        session_cell = w.VBox(
            [_label("Persistent session (one allocation, many cells)"), session_row]
            + [self.session_status]
        )
        session_cell.add_class("oj-field")

        self.children = [
            style_widget(),
            title,
            node_cell,
            resources,
            self.capacity_note,
            container,
            *wide,
            _label("Equivalent cell magic (copy it into a cell)"),
            self.preview,
            self.problem_summary,
            self.service_fold,
            session_cell,
        ]
        self.add_class("oj-root")
        self.add_class("oj-card")
        self.add_class("oj-panel")
        self.layout.width = "100%"

    def start_session(self) -> None:
        """The Start session button: a session with the panel's settings (blocks until its
        Python waits for cells); what happened, or why not, in the line under it."""
        from .. import remote_session

        name = self.session_name.value.strip()
        self.session_button.disabled = True
        self.session_status.value = f"Starting session {html.escape(name)}…"
        try:
            spec = self.session.build_spec({})
            remote = remote_session.start(name, spec, connection=self.session)
        except Exception as err:  # shown under the button: the panel stays usable
            message = getattr(err, "message", None) or str(err)
            self.session_status.value = f'<span class="oj-error">{html.escape(message)}</span>'
        else:
            self.session_status.value = html.escape(
                f"Session {name} ready on {remote.job.node or spec.node} (job "
                f"{remote.job.name}): %%oscar_offload --session {name}"
            )
        finally:
            self.session_button.disabled = False

    def _cell(self, name: str) -> w.VBox:
        cell = w.VBox([_label(BY_FIELD[name].label), self.controls[name], self.errors[name]])
        cell.add_class("oj-field")
        return cell

    def _grid(self, names: list[str]) -> w.GridBox:
        grid = w.GridBox([self.cells[n] for n in names])
        grid.layout.grid_template_columns = "repeat(auto-fill, minmax(170px, 1fr))"
        grid.layout.width = "100%"
        grid.add_class("oj-form")
        return grid

    # -- nodes ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """The Refresh button: nodes from the cluster, images from this kernel's recent jobs."""
        self.refresh_nodes()
        self.offer_recent_images()

    def refresh_nodes(self) -> None:
        """Ask the cluster for its nodes (on demand: the button, or a call)."""
        try:
            nodes = list(self.session.nodes())
        except Exception as err:  # no profile, cluster down, ...: say why, keep the form usable
            self.node_info.value = html.escape(f"Could not list the cluster's nodes: {err}")
            self._set_node_options(self.nodes or [])
            return
        self.nodes = nodes
        source = getattr(self.session, "nodes_source", None)
        virtual = [n for n in nodes if n.is_interlink] if source else []
        if source == "profile":
            self.node_info.value = html.escape(
                f"{len(virtual)} interLink virtual node(s) named by your cluster profile "
                "(neither OSCAR nor Kubernetes lists them here); their resources are unknown."
            )
        elif virtual:
            self.node_info.value = html.escape(
                f"{len(virtual)} interLink virtual node(s) from {source}; free resources as "
                f"{source} reports them."
            )
        else:
            self.node_info.value = html.escape(
                "No source lists this cluster's interLink virtual nodes (OSCAR shows only nodes "
                "with metrics; no kubeconfig reaches the cluster): type the node's name, or list "
                "them in the profile (jupyter: {nodes: [vega]})."
            )
        self._set_node_options(virtual)

    def _set_node_options(self, virtual: list[VirtualNode]) -> None:
        selected = self.node.value
        options: list[tuple[str, str | None]] = [(NO_NODE, None)]
        options += [(node_label(n), n.name) for n in virtual]
        if selected is not None and selected not in {n.name for n in virtual}:
            options.append((f"{selected} — not listed by the cluster", selected))
        with self.hold_trait_notifications():
            self.node.options = options
            self.node.value = selected

    def offer_recent_images(self) -> None:
        """Offer the images this kernel used lately (newest first), then the default."""
        recent = list(getattr(self.session, "recent_images", []) or [])
        self.image.options = tuple(dict.fromkeys([*recent, DEFAULT_IMAGE]))

    # -- values --------------------------------------------------------------------------------

    def load_defaults(self, defaults: dict[str, Any]) -> None:
        """Show `defaults` (OffloadSpec field -> value) in the widgets; other fields are cleared."""
        cleared: dict[str, Any] = {name: None for name in self.controls}
        self.set(**{**cleared, **{k: v for k, v in defaults.items() if k in self.controls}})

    def set(self, **values: Any) -> None:
        """Set fields from code as a user would type them; None clears a field.

        e.g. `panel.set(time="01:00:00", cpus_per_task=4, env={"OMP_NUM_THREADS": "4"})`.
        """
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise TypeError(
                f"Panel.set() got unknown fields {', '.join(unknown)}; "
                f"fields are {', '.join(self.controls)}"
            )
        loading, self._loading = self._loading, True
        try:
            for name, value in values.items():
                self._set_field(name, value)
        finally:
            self._loading = loading
        self._changed()

    def _set_field(self, name: str, value: Any) -> None:
        if name == "node":
            if value and value not in [v for _, v in self.node.options]:
                self.node.options = [*self.node.options, (f"{value} — not listed", value)]
            self.node.value = value or None
        elif name == "mounts":
            self.mounts.set_values([(m,) for m in value or []])
        elif name == "env":
            self.env.set_values([(k, str(v)) for k, v in (value or {}).items()])
        elif name == "secrets":  # names only, whatever is given
            names = value.keys() if isinstance(value, dict) else (value or [])
            self.text["secrets"].value = " ".join(names)
        else:
            box = {"image": self.image, "pre_exec": self.pre_exec}.get(name) or self.text[name]
            box.value = "" if value is None else str(value)

    def raw_values(self) -> dict[str, Any]:
        """What the widgets hold, as the magic's flags would carry it (strings, lists)."""
        values: dict[str, Any] = {"node": self.node.value}
        for name, box in self.text.items():
            values[name] = box.value.strip() or None
        values["secrets"] = (values["secrets"] or "").replace(",", " ").split()
        values["image"] = self.image.value.strip() or None
        values["pre_exec"] = self.pre_exec.value.strip() or None
        values["mount"] = [m.strip() for (m,) in self.mounts.values() if m.strip()]
        values["env"] = [
            f"{name.strip()}={value}" for name, value in self.env.values() if name.strip() or value
        ]
        return values

    def values(self) -> dict[str, Any]:
        """The settings that convert (OffloadSpec field -> value); see `problems` for the rest."""
        return self._convert(self.raw_values())[0]

    def _convert(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Problem]]:
        settings: dict[str, Any] = {}
        problems: dict[str, Problem] = {}
        for key, value in raw.items():
            if value is None or value == []:
                continue
            try:
                if key == "secrets":
                    settings["secrets"] = secrets_from_environment(value)
                    continue
                settings.update(settings_from_options({key: value}))
            except SpecError as err:
                field = field_for_flag(err.flag) or key
                problems[field] = Problem(err.flag, str(err))
        return settings, problems

    # -- checking and publishing ---------------------------------------------------------------

    def _changed(self) -> None:
        if not getattr(self, "_loading", True):
            self.update()

    def update(self) -> None:
        """Check the values, mark the fields, refresh the preview, write the kernel's defaults."""
        raw = self.raw_values()
        settings, problems = self._convert(raw)
        general: list[str] = []
        spec = None
        try:
            spec = OffloadSpec(**settings)
        except SpecError as err:
            problems.setdefault(field_for_flag(err.flag) or "", Problem(err.flag, str(err)))
        except (TypeError, ValueError) as err:
            general.append(str(err))
        if spec is not None:
            known = getattr(self.session, "known_node_names", lambda: None)()
            for problem in spec.validate_all(known_nodes=known):
                field = field_for_flag(problem.flag) or ""
                problems.setdefault(field, Problem(problem.flag, str(problem)))
            node = self._chosen_node(spec.node)
            sited = self._with_site_facts(spec)
            for refusal in capacity_problems(sited, node):
                problems.setdefault(
                    field_for_flag(refusal.flag) or "", Problem(refusal.flag, str(refusal))
                )
            notes = [] if problems else capacity_notes(sited, node)
            if not problems:
                notes += default_node_notes(sited, self._virtual_nodes())
        else:
            notes = []
        self.capacity_note.value = "<br>".join(html.escape(f"Note: {n}") for n in notes)
        for name, unplaced in list(problems.items()):
            if name not in self.controls:
                general.append(unplaced.message)
                del problems[name]
        self.problems, self.general_problems = problems, general
        self._mark(problems, general)
        self._preview(spec, raw, bool(problems or general))
        self._write_defaults(settings, problems)

    def _with_site_facts(self, spec: OffloadSpec) -> OffloadSpec:
        """`spec` with the profile's site facts (gpu_scheduling), as the magic's spec has them."""
        try:
            return dataclasses.replace(
                spec, site=JupyterSettings.of(getattr(self.session, "profile", None)).site
            )
        except ConfigError:  # the magic says what is wrong with the profile
            return spec

    def _virtual_nodes(self) -> list[VirtualNode] | None:
        """The interLink nodes the dropdown offers (None before the cluster was asked)."""
        return None if self.nodes is None else [n for n in self.nodes if n.is_interlink]

    def _chosen_node(self, name: str | None) -> VirtualNode | None:
        """The node's facts as the dropdown shows them, else as the session last heard them."""
        if not name:
            return None
        if self.nodes is not None:
            return next((n for n in self.nodes if n.is_interlink and n.name == name), None)
        node_named = getattr(self.session, "node_named", None)
        return node_named(name) if node_named else None

    def _mark(self, problems: dict[str, Problem], general: list[str]) -> None:
        for name, cell in self.cells.items():
            problem = problems.get(name)
            self.errors[name].value = html.escape(problem.message) if problem else ""
            if problem:
                cell.add_class("oj-invalid")
            else:
                cell.remove_class("oj-invalid")
        self.problem_summary.value = "<br>".join(html.escape(m) for m in general)

    def _preview(self, spec: OffloadSpec | None, raw: dict[str, Any], invalid: bool) -> None:
        if spec is not None and not invalid:
            line = spec.to_flags().strip()
            if not line.startswith("%%oscar_offload"):
                line = f"%%oscar_offload {line}"
        else:
            line = _raw_flags(raw)
        self.offload_line = line.rstrip()
        note = ""
        if invalid:
            note = (
                '<div class="oj-error">Fix the marked values: a bare %%oscar_offload '
                "would fail with the same message.</div>"
            )
        self.preview.value = f'<pre class="oj-code">{html.escape(self.offload_line)}</pre>{note}'
        if spec is None or invalid:
            self.service_view.value = '<span class="oj-muted">Fix the marked values first.</span>'
            return
        definition = spec.service_definition()
        secrets = definition.get("environment", {}).get("secrets")
        if secrets:  # widget state is saved in the notebook: blank, as OSCAR shows them
            definition["environment"]["secrets"] = {name: "" for name in secrets}
        script_lines = len(str(definition.get("script", "")).splitlines())
        # The runner script is the same for every service; its text would bury the rest.
        definition["script"] = f"<the runner script, {script_lines} lines>"
        shown = json.dumps(definition, indent=2)
        self.service_view.value = (
            f'<div class="oj-muted">Runner service {html.escape(self._service_name(spec))}'
            "</div>"
            f'<pre class="oj-log">{html.escape(shown)}</pre>'
        )

    def _service_name(self, spec: OffloadSpec) -> str:
        try:
            return self.session.runner_service_name(spec)
        except Exception:  # not connected, or the cluster is down: the owner-less name
            return spec.service_name()

    def _write_defaults(self, settings: dict[str, Any], problems: dict[str, Problem]) -> None:
        defaults = self.session.defaults
        for name in self._managed:
            if name in problems:
                # Keep the text the user typed, so a bare %%oscar_offload fails with this message
                # instead of silently running without the setting.
                defaults[name] = self._raw_for_field(name)
            elif name in settings:
                defaults[name] = settings[name]
            else:
                defaults.pop(name, None)

    def _raw_for_field(self, name: str) -> Any:
        raw = self.raw_values()
        if name == "mounts":
            return raw["mount"]
        if name == "env":
            return {k: v for k, _, v in (item.partition("=") for item in raw["env"])}
        return raw.get(name)

    def __repr__(self) -> str:  # never show environment values (they may be tokens)
        names = ", ".join(sorted(self.values())) or "nothing"
        return f"<oscar_jupyter Panel: sets {names}; {len(self.problems)} problem(s)>"


def secrets_from_environment(names: list[str]) -> dict[str, str]:
    """The kernel's values of the named secrets; SpecError naming a missing one."""
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise SpecError(
            "--secret",
            f"--secret {missing[0]}: this kernel has no ${missing[0]}; "
            f"set it without writing it in the notebook: "
            f"oscar_jupyter.ask_secret({missing[0]!r})",
        )
    return {name: os.environ[name] for name in names}


def _raw_flags(raw: dict[str, Any]) -> str:
    """The magic's line for the text the widgets hold, valid or not (to show what fails)."""
    pairs = []
    for key, value in raw.items():
        option = BY_FIELD.get("mounts" if key == "mount" else key)
        for item in value if isinstance(value, list) else [value]:
            if option is not None and item is not None:
                pairs.append((option.flag, str(item)))
    return render(pairs)


def _label(text: str) -> w.HTML:
    label = w.HTML(html.escape(text))
    label.add_class("oj-label")
    return label
