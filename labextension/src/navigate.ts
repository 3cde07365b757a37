/**
 * From a job to its cell: open (or focus) the notebook by its path, find the cell by its id (or,
 * when the notebook was reloaded without ids, by its execution count), make it the active cell,
 * scroll it into view and highlight it briefly.
 */
import { IDocumentManager } from '@jupyterlab/docmanager';
import { Notebook, NotebookPanel } from '@jupyterlab/notebook';

import { IJob } from './api';

const HIGHLIGHT_MS = 2000;
export const HIGHLIGHT_CLASS = 'oj-cell-highlight';

/** Resolves once the cell is shown; rejects with a message a user can act on. */
export async function showJobCell(
  docManager: IDocumentManager,
  job: IJob
): Promise<void> {
  const label = job.label;
  const path = label?.notebook;
  if (!label || !path) {
    throw new Error(`${job.job} was not submitted from a known notebook cell.`);
  }
  const widget = docManager.openOrReveal(path);
  if (!widget) {
    throw new Error(
      `Cannot open ${path}: it is not a file under the Jupyter root any more.`
    );
  }
  await widget.context.ready;
  await widget.revealed;
  if (!(widget instanceof NotebookPanel)) {
    throw new Error(`${path} did not open as a notebook.`);
  }
  const notebook = widget.content;
  const index = findCell(notebook, label.cell_id, label.execution_count);
  if (index < 0) {
    const which =
      label.execution_count !== null
        ? `cell [${label.execution_count}]`
        : 'its cell';
    throw new Error(
      `${path} no longer has ${which} (it was deleted or run again).`
    );
  }
  notebook.deselectAll();
  notebook.activeCellIndex = index;
  notebook.mode = 'command';
  const cell = notebook.widgets[index];
  await notebook.scrollToCell(cell, 'center');
  cell.node.classList.add(HIGHLIGHT_CLASS);
  setTimeout(() => cell.node.classList.remove(HIGHLIGHT_CLASS), HIGHLIGHT_MS);
}

function findCell(
  notebook: Notebook,
  cellId: string | null,
  executionCount: number | null
): number {
  const cells = notebook.widgets;
  if (cellId) {
    const byId = cells.findIndex(cell => cell.model.id === cellId);
    if (byId >= 0) {
      return byId;
    }
  }
  if (executionCount !== null && executionCount !== undefined) {
    return cells.findIndex(
      cell =>
        cell.model.type === 'code' &&
        (cell.model.sharedModel as { execution_count?: number | null })
          .execution_count === executionCount
    );
  }
  return -1;
}
