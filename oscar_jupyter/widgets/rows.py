"""Editable lists of text rows (mounts, environment variables) with add and remove buttons."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as w


class RowList(w.VBox):
    """Rows of one or more text boxes; `values()` gives one tuple per row, empty rows included.

    `columns` are the placeholders of each row's boxes. `on_change()` is called after any edit,
    addition or removal.
    """

    def __init__(
        self,
        columns: Sequence[str],
        add_label: str,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.columns = tuple(columns)
        self._on_change = on_change or (lambda: None)
        self._rows: list[tuple[w.HBox, list[w.Text]]] = []
        self.add_button = w.Button(description=add_label, icon="plus", tooltip=add_label)
        self.add_button.layout.width = "auto"
        self.add_button.layout.align_self = "flex-start"
        self.add_button.on_click(lambda _: self.add_row())
        self.add_class("oj-rows")
        self._render()

    def add_row(self, values: Sequence[str] = ()) -> list[w.Text]:
        boxes: list[w.Text] = []
        for index, placeholder in enumerate(self.columns):
            value = values[index] if index < len(values) else ""
            box = w.Text(value=str(value), placeholder=placeholder)
            box.observe(lambda _: self._on_change(), names="value")
            boxes.append(box)
        remove = w.Button(icon="trash", tooltip="Remove this row")
        remove.layout.width = "36px"
        row = w.HBox([*boxes, remove])
        row.add_class("oj-row")
        entry = (row, boxes)
        remove.on_click(lambda _: self.remove_row(entry))
        self._rows.append(entry)
        self._render()
        self._on_change()
        return boxes

    def remove_row(self, entry: tuple[w.HBox, list[w.Text]]) -> None:
        if entry in self._rows:
            self._rows.remove(entry)
            self._render()
            self._on_change()

    def set_values(self, rows: Sequence[Sequence[str]]) -> None:
        """Replace every row (one change notification at the end)."""
        notify, self._on_change = self._on_change, (lambda: None)
        try:
            self._rows.clear()
            for values in rows:
                self.add_row(values)
            self._render()
        finally:
            self._on_change = notify
        self._on_change()

    def values(self) -> list[tuple[str, ...]]:
        return [tuple(box.value for box in boxes) for _, boxes in self._rows]

    def row_boxes(self) -> list[list[w.Text]]:
        return [list(boxes) for _, boxes in self._rows]

    def _render(self) -> None:
        self.children = [row for row, _ in self._rows] + [self.add_button]
