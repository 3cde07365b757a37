/**
 * The job list: one fixed-height row per job, and only the rows in view exist in the DOM
 * (windowing), so 500 jobs cost what 15 do. Rows are keyed by service and job: a refresh that
 * changes nothing touches no element, and a button stays the same element while the user moves
 * to click it.
 */
import { IJob } from './api';
import { el, setText } from './dom';
import { keyOf } from './filter';
import {
  cancelledPhrase,
  formatDuration,
  formatRelative,
  isActive,
  timeTooltip
} from './format';

/** Height of one row, gap included (px); style/base.css sizes .oj-sidebar-job to match. */
export const ROW_HEIGHT = 50;
/** Rows rendered above and below the visible ones, so a fast scroll shows no blank. */
const OVERSCAN = 4;

export interface IJobActions {
  cancel(job: IJob): void;
  showLog(job: IJob): void;
  openCell(job: IJob): void;
}

interface IRow {
  key: string;
  /** The job and the state it was last drawn from; unchanged means nothing to redraw. */
  job: IJob | null;
  drawn: string;
  node: HTMLElement;
  badge: HTMLElement;
  label: HTMLElement;
  where: HTMLElement;
  start: HTMLElement;
  duration: HTMLElement;
  cancel: HTMLButtonElement;
}

export class JobsList {
  /** The scrolling viewport. */
  readonly node: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly empty: HTMLElement;
  private jobs: IJob[] = [];
  private rows = new Map<string, IRow>();
  private pool: IRow[] = [];
  private cancelling = new Set<string>();
  private frame = 0;
  private emptyText = '';
  private oneNotebook = false;
  /** The notebook cell in focus: its jobs are highlighted (cell -> job). */
  private currentCell: string | null = null;

  constructor(private readonly actions: IJobActions) {
    this.node = el('div', 'oj-sidebar-jobs');
    this.node.tabIndex = -1;
    this.spacer = el('div', 'oj-sidebar-jobs-spacer');
    this.empty = el('p', 'oj-sidebar-empty');
    this.node.append(this.spacer, this.empty);
    // Browsers fire scroll events once per frame, before painting it: drawing the rows right
    // there never shows a frame with blank rows.
    this.node.addEventListener('scroll', () => this.render(), {
      passive: true
    });
    if (typeof ResizeObserver !== 'undefined') {
      new ResizeObserver(() => this.schedule()).observe(this.node);
    }
  }

  /** The jobs to list, in order; `empty` is what to say when there is none. `oneNotebook`:
   * all are of one notebook, so labels leave its name out (more room for the code line). */
  update(jobs: IJob[], empty: string, oneNotebook = false): void {
    this.jobs = jobs;
    this.oneNotebook = oneNotebook;
    const live = new Set(jobs.map(keyOf));
    for (const key of this.cancelling) {
      const job = jobs.find(j => keyOf(j) === key);
      if (!live.has(key) || (job && !isActive(job.status))) {
        this.cancelling.delete(key); // the server's own state took over
      }
    }
    if (empty !== this.emptyText) {
      this.emptyText = empty;
      this.empty.textContent = empty;
    }
    this.empty.hidden = jobs.length > 0;
    this.spacer.style.height = `${jobs.length * ROW_HEIGHT}px`;
    this.render();
  }

  /** Highlights the jobs the focused cell submitted, scrolled into view if need be. */
  setCurrentCell(cellId: string | null): void {
    if (cellId === this.currentCell) {
      return;
    }
    this.currentCell = cellId;
    const index = cellId
      ? this.jobs.findIndex(job => job.label?.cell_id === cellId)
      : -1;
    if (index >= 0) {
      const top = index * ROW_HEIGHT;
      const height = this.node.clientHeight;
      if (
        top < this.node.scrollTop ||
        top + ROW_HEIGHT > this.node.scrollTop + height
      ) {
        this.node.scrollTop = Math.max(0, top - ROW_HEIGHT);
      }
    }
    this.render();
  }

  markCancelling(job: IJob): void {
    this.cancelling.add(keyOf(job));
    this.render();
  }

  /** The cancel request failed: the button may be used again. */
  cancelFailed(job: IJob): void {
    this.cancelling.delete(keyOf(job));
    this.render();
  }

  private schedule(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  /** Draws the rows in view (plus a few), reusing rows by key, then rows from the pool. */
  render(now: Date = new Date()): void {
    const height = this.node.clientHeight || 10 * ROW_HEIGHT;
    const top = this.node.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(
      this.jobs.length,
      Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN
    );
    const wanted = new Map<string, number>();
    for (let index = first; index < last; index++) {
      wanted.set(keyOf(this.jobs[index]), index);
    }
    for (const [key, row] of this.rows) {
      if (!wanted.has(key)) {
        this.rows.delete(key);
        row.node.hidden = true;
        row.job = null;
        row.drawn = '';
        for (const name of ['job', 'service', 'status', 'notebook']) {
          delete row.node.dataset[name]; // a spare row names no job
        }
        this.pool.push(row);
      }
    }
    for (const [key, index] of wanted) {
      const job = this.jobs[index];
      let row = this.rows.get(key);
      if (!row) {
        row = this.pool.pop() ?? this.createRow();
        row.key = key;
        row.drawn = '';
        this.rows.set(key, row);
      }
      row.job = job;
      const offset = `${index * ROW_HEIGHT}px`;
      if (row.node.style.top !== offset) {
        row.node.style.top = offset;
      }
      row.node.hidden = false;
      this.fill(row, now);
    }
  }

  private createRow(): IRow {
    const node = el('div', 'oj-sidebar-card oj-sidebar-job');
    const head = el('div', 'oj-sidebar-card-head');
    const label = el('a', 'oj-sidebar-joblabel');
    const start = el('span', 'oj-sidebar-fact oj-sidebar-start');
    head.append(label, start);

    const facts = el('div', 'oj-sidebar-facts');
    const badge = el('span', 'oj-sidebar-badge');
    const where = el('span', 'oj-sidebar-fact oj-sidebar-node-name');
    const duration = el('span', 'oj-sidebar-fact oj-sidebar-duration');
    const actions = el('span', 'oj-sidebar-actions');
    const log = el('button', 'jp-Button jp-mod-minimal oj-sidebar-log', 'Log');
    log.title = "Open this job's output in a panel that follows it live";
    const cancel = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-cancel',
      'Cancel'
    );
    cancel.title = 'Cancel this job on the cluster';
    actions.append(log, cancel);
    facts.append(badge, duration, where, actions);
    node.append(head, facts);
    this.node.appendChild(node);

    const row: IRow = {
      key: '',
      job: null,
      drawn: '',
      node,
      badge,
      label,
      where,
      start,
      duration,
      cancel
    };
    const act = (action: (job: IJob) => void) => () => {
      if (row.job) {
        action(row.job);
      }
    };
    log.addEventListener(
      'click',
      act(job => this.actions.showLog(job))
    );
    cancel.addEventListener(
      'click',
      act(job => this.actions.cancel(job))
    );
    label.addEventListener('click', event => {
      event.preventDefault();
      if (row.job?.label?.notebook) {
        this.actions.openCell(row.job);
      }
    });
    label.addEventListener('keydown', event => {
      if (
        (event.key === 'Enter' || event.key === ' ') &&
        row.job?.label?.notebook
      ) {
        event.preventDefault();
        this.actions.openCell(row.job);
      }
    });
    return row;
  }

  private fill(row: IRow, now: Date): void {
    const job = row.job!;
    const cancelling = this.cancelling.has(row.key) && isActive(job.status);
    const drawn =
      JSON.stringify(job) +
      (cancelling ? '!' : '') +
      (this.oneNotebook ? '1' : '');
    if (drawn !== row.drawn) {
      row.drawn = drawn;
      this.draw(row, job, cancelling);
    }
    const current =
      this.currentCell !== null && job.label?.cell_id === this.currentCell;
    if (row.node.classList.contains('oj-sidebar-job-current') !== current) {
      row.node.classList.toggle('oj-sidebar-job-current', current);
    }
    // Relative times move on with the clock even when the job does not change.
    setText(
      row.start,
      formatRelative(job.start_time ?? job.creation_time, now)
    );
    setText(
      row.duration,
      formatDuration(job.runner_start ?? job.start_time, job.finish_time, now)
    );
  }

  /** "nb.ipynb · [3] · train()", or "[3] · train()" when only one notebook's jobs are listed. */
  private labelText(job: IJob): string {
    return (this.oneNotebook && shortLabel(job)) || job.label?.text || job.job;
  }

  private draw(row: IRow, job: IJob, cancelling: boolean): void {
    const status = cancelling ? 'Cancelling' : job.status;
    const node = row.node;
    node.dataset.job = job.job;
    node.dataset.service = job.service;
    node.dataset.status = status;
    node.dataset.notebook = job.label?.notebook ?? '';

    setText(row.badge, cancelling ? 'Cancelling…' : status);
    row.badge.className = `oj-sidebar-badge oj-sidebar-status-${status}`;
    row.badge.title = statusTooltip(job, cancelling);

    const label = job.label;
    setText(row.label, this.labelText(job));
    const lines = [
      `Job ${job.job}`,
      `Service ${job.service}`,
      `Node ${job.node ?? '(any)'}`
    ];
    if (label?.notebook) {
      lines.push(`Notebook ${label.notebook}`);
      if (
        label.execution_count !== null &&
        label.execution_count !== undefined
      ) {
        lines.push(`Cell [${label.execution_count}]`);
      }
      lines.push('Click to show the cell');
    } else {
      lines.push('Not submitted from a known notebook cell');
    }
    row.label.title = lines.join('\n');
    const linked = Boolean(label?.notebook);
    row.label.classList.toggle('oj-mod-link', linked);
    if (linked) {
      row.label.setAttribute('role', 'link');
      row.label.tabIndex = 0;
    } else {
      row.label.removeAttribute('role');
      row.label.removeAttribute('tabindex');
    }

    setText(row.where, job.node ?? 'any node');
    row.where.title = job.node
      ? `Virtual node ${job.node}`
      : 'No node asked for';
    row.start.title = job.start_time
      ? timeTooltip('Started', job.start_time)
      : timeTooltip('Submitted (not started yet)', job.creation_time);
    row.duration.title = job.runner_start
      ? timeTooltip('Run time since the cell started', job.runner_start)
      : timeTooltip('Run time since the job started', job.start_time);
    row.cancel.hidden = !isActive(job.status);
    row.cancel.disabled = cancelling;
  }
}

function shortLabel(job: IJob): string | null {
  const label = job.label;
  if (!label?.notebook) {
    return null;
  }
  const parts: string[] = [];
  if (label.execution_count !== null && label.execution_count !== undefined) {
    parts.push(`[${label.execution_count}]`);
  }
  if (label.first_line) {
    parts.push(label.first_line);
  }
  return parts.length ? parts.join(' · ') : null;
}

function statusTooltip(job: IJob, cancelling: boolean): string {
  if (cancelling) {
    return 'Cancel requested; waiting for the cluster';
  }
  const parts = [job.status];
  if (job.exit_code !== null && job.exit_code !== undefined) {
    parts.push(`the cell exited with ${job.exit_code}`);
  }
  if (job.cancelled_by) {
    parts.push(`cancelled ${cancelledPhrase(job.cancelled_by)}`);
  }
  if (job.recorded) {
    parts.push('kept from the local job records until cleaned up');
  }
  if (job.finish_time) {
    parts.push(timeTooltip('finished', job.finish_time).replace('\n', ', '));
  }
  return parts.join('; ');
}
