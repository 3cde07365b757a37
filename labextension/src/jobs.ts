/**
 * The "Jobs" section. Rows are kept by service and job name across refreshes, so a button
 * stays the same element while the user moves to click it; only texts and badges change.
 */
import { IJob } from './api';
import { el, setText } from './dom';
import { formatDuration, formatStart, isActive } from './format';

export interface IJobActions {
  cancel(job: IJob): void;
  showLog(job: IJob): void;
}

interface IJobRow {
  job: IJob;
  row: HTMLTableRowElement;
  badge: HTMLSpanElement;
  node: HTMLTableCellElement;
  start: HTMLTableCellElement;
  duration: HTMLTableCellElement;
  cancel: HTMLButtonElement;
}

const COLUMNS = ['Status', 'Job', 'Node', 'Start', 'Duration', ''];

export class JobsTable {
  readonly node: HTMLElement;
  private readonly table: HTMLTableElement;
  private readonly body: HTMLTableSectionElement;
  private readonly empty: HTMLElement;
  private rows = new Map<string, IJobRow>();
  private cancelling = new Set<string>();

  constructor(private readonly actions: IJobActions) {
    this.node = el('div', 'oj-sidebar-jobs');
    this.table = el('table', 'oj-sidebar-table');
    const head = this.table.createTHead().insertRow();
    for (const title of COLUMNS) {
      head.appendChild(el('th', '', title));
    }
    this.body = this.table.createTBody();
    this.empty = el(
      'p',
      'oj-sidebar-empty',
      'No offloaded jobs. Run a cell with %%oscar_offload to start one.'
    );
    this.node.append(this.table, this.empty);
  }

  update(jobs: IJob[], now: Date = new Date()): void {
    const keep = new Set<string>();
    jobs.forEach((job, index) => {
      const key = keyOf(job);
      keep.add(key);
      const entry = this.rows.get(key) ?? this.createRow(job);
      entry.job = job;
      this.fill(entry, now);
      if (this.body.rows[index] !== entry.row) {
        this.body.insertBefore(entry.row, this.body.rows[index] ?? null);
      }
    });
    for (const [key, entry] of this.rows) {
      if (!keep.has(key)) {
        entry.row.remove();
        this.rows.delete(key);
        this.cancelling.delete(key);
      }
    }
    this.table.hidden = jobs.length === 0;
    this.empty.hidden = jobs.length > 0;
  }

  /** The cancel request failed: the button may be used again. */
  cancelFailed(job: IJob): void {
    this.cancelling.delete(keyOf(job));
    const entry = this.rows.get(keyOf(job));
    if (entry) {
      this.fill(entry, new Date());
    }
  }

  markCancelling(job: IJob): void {
    this.cancelling.add(keyOf(job));
    const entry = this.rows.get(keyOf(job));
    if (entry) {
      this.fill(entry, new Date());
    }
  }

  private createRow(job: IJob): IJobRow {
    const row = el('tr', 'oj-sidebar-job');
    row.dataset.job = job.job;
    row.dataset.service = job.service;
    const badgeCell = el('td');
    const badge = el('span', 'oj-sidebar-badge');
    badgeCell.appendChild(badge);
    const name = el('td', 'oj-sidebar-name', job.job);
    name.title = `${job.job}\nservice: ${job.service}`;
    const node = el('td', 'oj-sidebar-name');
    const start = el('td', 'oj-sidebar-number');
    const duration = el('td', 'oj-sidebar-number');
    const buttons = el('td', 'oj-sidebar-actions');
    const log = el('button', 'jp-Button jp-mod-minimal oj-sidebar-log', 'Log');
    log.title = 'Show the cell output of this job';
    const cancel = el('button', 'jp-Button jp-mod-minimal oj-sidebar-cancel', 'Cancel');
    cancel.title = 'Cancel this job on the cluster';
    const entry: IJobRow = { job, row, badge, node, start, duration, cancel };
    log.addEventListener('click', () => this.actions.showLog(entry.job));
    cancel.addEventListener('click', () => this.actions.cancel(entry.job));
    buttons.append(log, cancel);
    row.append(badgeCell, name, node, start, duration, buttons);
    this.rows.set(keyOf(job), entry);
    return entry;
  }

  private fill(entry: IJobRow, now: Date): void {
    const { job } = entry;
    const cancelling = this.cancelling.has(keyOf(job));
    const status = cancelling ? 'Cancelling' : job.status;
    setText(entry.badge, status);
    entry.badge.className = `oj-sidebar-badge oj-sidebar-status-${status}`;
    entry.row.dataset.status = status;
    setText(entry.node, job.node ?? 'any');
    setText(entry.start, formatStart(job.start_time ?? job.creation_time, now));
    setText(entry.duration, formatDuration(job.start_time, job.finish_time, now));
    entry.cancel.hidden = !isActive(job.status);
    entry.cancel.disabled = cancelling;
  }
}

function keyOf(job: IJob): string {
  return `${job.service}/${job.job}`;
}
