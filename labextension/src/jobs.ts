/**
 * The job list: the jobs of one cell run (a sweep) are one group row with counts by state that
 * opens to one compact row per job (by short id); any other job is one row of its own. Rows have
 * fixed heights and only the rows in view exist in the DOM (windowing), so 500 jobs cost what 15
 * do. Rows are keyed by what they show: a refresh that changes nothing touches no element, and a
 * button stays the same element while the user moves to click it. A checkbox on every row
 * selects jobs (a group's selects all its jobs) for the sidebar's Cancel and Clean up.
 */
import { IJob } from './api';
import { el, setText } from './dom';
import { IJobGroup, keyOf } from './filter';
import {
  cancelledPhrase,
  coreHoursText,
  countsText,
  formatRelative,
  formatRunTime,
  isActive,
  shortId,
  statusText,
  timeTooltip
} from './format';

/** Height of a job's or a group's row, gap included (px); style/base.css sizes them to match. */
export const ROW_HEIGHT = 50;
/** Height of one job's row in an open group (px). */
export const CHILD_HEIGHT = 30;
/** Pixels rendered above and below the view, so a fast scroll shows no blank. */
const OVERSCAN_PX = 4 * ROW_HEIGHT;

export interface IJobActions {
  cancel(job: IJob): void;
  showLog(job: IJob): void;
  openCell(job: IJob): void;
  copyId(job: IJob): void;
  /** The set of selected jobs changed (by a checkbox, or because jobs left the list). */
  selectionChanged(): void;
}

type RowKind = 'group' | 'job' | 'child';

interface IItem {
  kind: RowKind;
  key: string;
  group: IJobGroup;
  /** The job of a job or child row; a group row's first job. */
  job: IJob;
  top: number;
  height: number;
}

interface IRow {
  kind: RowKind;
  key: string;
  item: IItem | null;
  /** What the row was last drawn from; unchanged means nothing to redraw. */
  drawn: string;
  node: HTMLElement;
  check: HTMLInputElement;
  label: HTMLElement | null;
  start: HTMLElement | null;
  badge: HTMLElement | null;
  duration: HTMLElement | null;
  usage: HTMLElement | null;
  id: HTMLElement | null;
  where: HTMLElement | null;
  cancel: HTMLButtonElement | null;
  caret: HTMLButtonElement | null;
  counts: HTMLElement | null;
}

const ROW_DATA = [
  'job',
  'service',
  'status',
  'notebook',
  'cell',
  'count',
  'jobs'
] as const;

export class JobsList {
  /** The scrolling viewport. */
  readonly node: HTMLElement;
  private readonly spacer: HTMLElement;
  private readonly empty: HTMLElement;
  private groups: IJobGroup[] = [];
  private items: IItem[] = [];
  private rows = new Map<string, IRow>();
  private pools: Record<RowKind, IRow[]> = { group: [], job: [], child: [] };
  private cancelling = new Set<string>();
  private selected = new Set<string>();
  /** Groups the user opened (true) or closed (false); others follow `autoOpen`. */
  private expanded = new Map<string, boolean>();
  /** A text filter is on: groups of which it let only some jobs through open by themselves. */
  private autoOpen = false;
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

  /**
   * The groups to list, in order; `empty` is what to say when there is none. `oneNotebook`: all
   * are of one notebook, so labels leave its name out (more room for the code line).
   * `autoOpen`: a text filter is on, so a group it narrowed shows its jobs.
   */
  update(
    groups: IJobGroup[],
    empty: string,
    oneNotebook = false,
    autoOpen = false
  ): void {
    this.groups = groups;
    this.oneNotebook = oneNotebook;
    this.autoOpen = autoOpen;
    const shown = new Map<string, IJob>();
    for (const group of groups) {
      for (const job of group.jobs) {
        shown.set(keyOf(job), job);
      }
    }
    for (const key of this.cancelling) {
      const job = shown.get(key);
      if (!job || !isActive(job.status)) {
        this.cancelling.delete(key); // the server's own state took over
      }
    }
    let unselected = false;
    for (const key of this.selected) {
      if (!shown.has(key)) {
        this.selected.delete(key); // what is not shown cannot be acted on unseen
        unselected = true;
      }
    }
    if (empty !== this.emptyText) {
      this.emptyText = empty;
      this.empty.textContent = empty;
    }
    this.empty.hidden = groups.length > 0;
    this.layout();
    this.render();
    if (unselected) {
      this.actions.selectionChanged();
    }
  }

  /** The selected jobs, in the list's order. */
  selectedJobs(): IJob[] {
    const jobs: IJob[] = [];
    for (const group of this.groups) {
      for (const job of group.jobs) {
        if (this.selected.has(keyOf(job))) {
          jobs.push(job);
        }
      }
    }
    return jobs;
  }

  clearSelection(): void {
    if (this.selected.size) {
      this.selected.clear();
      this.render();
      this.actions.selectionChanged();
    }
  }

  /** Highlights the jobs the focused cell submitted, scrolled into view if need be. */
  setCurrentCell(cellId: string | null): void {
    if (cellId === this.currentCell) {
      return;
    }
    this.currentCell = cellId;
    const item = cellId
      ? this.items.find(i => i.job.label?.cell_id === cellId)
      : undefined;
    if (item) {
      const height = this.node.clientHeight;
      if (
        item.top < this.node.scrollTop ||
        item.top + item.height > this.node.scrollTop + height
      ) {
        this.node.scrollTop = Math.max(0, item.top - ROW_HEIGHT);
      }
    }
    this.render();
  }

  markCancelling(jobs: IJob[]): void {
    for (const job of jobs) {
      this.cancelling.add(keyOf(job));
    }
    this.render();
  }

  /** The cancel request failed: the button may be used again. */
  cancelFailed(jobs: IJob[]): void {
    for (const job of jobs) {
      this.cancelling.delete(keyOf(job));
    }
    this.render();
  }

  /** The text filter changed: groups closed by hand open again where it narrows them. */
  filterChanged(): void {
    for (const [key, open] of this.expanded) {
      if (!open) {
        this.expanded.delete(key);
      }
    }
  }

  /** Opens or closes a group's rows. */
  toggle(group: IJobGroup): void {
    this.expanded.set(group.key, !this.isOpen(group));
    this.layout();
    this.render();
  }

  private isOpen(group: IJobGroup): boolean {
    return (
      this.expanded.get(group.key) ??
      (this.autoOpen && group.jobs.length < group.total)
    );
  }

  private schedule(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  /** Where each row goes: a group of one job is that job's row. */
  private layout(): void {
    const items: IItem[] = [];
    let top = 0;
    const add = (
      kind: RowKind,
      key: string,
      group: IJobGroup,
      job: IJob,
      height: number
    ) => {
      items.push({ kind, key, group, job, top, height });
      top += height;
    };
    for (const group of this.groups) {
      if (group.jobs.length === 1 && group.total === 1) {
        const job = group.jobs[0];
        add('job', `j:${keyOf(job)}`, group, job, ROW_HEIGHT);
        continue;
      }
      add('group', `g:${group.key}`, group, group.jobs[0], ROW_HEIGHT);
      if (this.isOpen(group)) {
        for (const job of group.jobs) {
          add('child', `c:${keyOf(job)}`, group, job, CHILD_HEIGHT);
        }
      }
    }
    this.items = items;
    this.spacer.style.height = `${top}px`;
  }

  /** The first item whose bottom is below `y` (binary search on the tops). */
  private firstBelow(y: number): number {
    let low = 0;
    let high = this.items.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      const item = this.items[mid];
      if (item.top + item.height <= y) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    return low;
  }

  /** Draws the rows in view (plus a margin), reusing rows by key, then rows from the pool. */
  render(now: Date = new Date()): void {
    const height = this.node.clientHeight || 10 * ROW_HEIGHT;
    const top = this.node.scrollTop;
    const bottom = top + height + OVERSCAN_PX;
    const wanted = new Map<string, IItem>();
    for (
      let index = this.firstBelow(Math.max(0, top - OVERSCAN_PX));
      index < this.items.length && this.items[index].top < bottom;
      index++
    ) {
      wanted.set(this.items[index].key, this.items[index]);
    }
    for (const [key, row] of this.rows) {
      if (!wanted.has(key)) {
        this.rows.delete(key);
        row.node.hidden = true;
        row.item = null;
        row.drawn = '';
        for (const name of ROW_DATA) {
          delete row.node.dataset[name]; // a spare row names no job
        }
        this.pools[row.kind].push(row);
      }
    }
    for (const [key, item] of wanted) {
      let row = this.rows.get(key);
      if (!row) {
        row = this.pools[item.kind].pop() ?? this.createRow(item.kind);
        row.key = key;
        row.drawn = '';
        this.rows.set(key, row);
      }
      row.item = item;
      const offset = `${item.top}px`;
      if (row.node.style.top !== offset) {
        row.node.style.top = offset;
      }
      row.node.hidden = false;
      if (item.kind === 'group') {
        this.fillGroup(row, item, now);
      } else {
        this.fillJob(row, item, now);
      }
    }
  }

  // -- rows ------------------------------------------------------------------------------------

  private createRow(kind: RowKind): IRow {
    const row: IRow = {
      kind,
      key: '',
      item: null,
      drawn: '',
      node: el('div'),
      check: el('input', 'oj-sidebar-select'),
      label: null,
      start: null,
      badge: null,
      duration: null,
      usage: null,
      id: null,
      where: null,
      cancel: null,
      caret: null,
      counts: null
    };
    row.check.type = 'checkbox';
    row.check.addEventListener('change', () => {
      if (row.item) {
        this.select(row, row.check.checked);
      }
    });
    if (kind === 'group') {
      this.buildGroupRow(row);
    } else {
      this.buildJobRow(row, kind === 'child');
    }
    this.node.appendChild(row.node);
    return row;
  }

  private buildGroupRow(row: IRow): void {
    row.node.className = 'oj-sidebar-card oj-sidebar-group';
    const head = el('div', 'oj-sidebar-card-head');
    const caret = el('button', 'oj-sidebar-caret');
    caret.type = 'button';
    const label = this.makeLabel(row);
    const start = el('span', 'oj-sidebar-fact oj-sidebar-start');
    head.append(row.check, caret, label, start);
    const facts = el('div', 'oj-sidebar-facts');
    const counts = el('span', 'oj-sidebar-fact oj-sidebar-counts');
    facts.append(counts);
    row.node.append(head, facts);
    Object.assign(row, { caret, label, start, counts });
    caret.addEventListener('click', () => {
      if (row.item) {
        this.toggle(row.item.group);
      }
    });
    // A click anywhere else on the row but its controls opens or closes it too.
    row.node.addEventListener('click', event => {
      const target = event.target as Element;
      if (row.item && !target.closest('a, button, input')) {
        this.toggle(row.item.group);
      }
    });
  }

  private buildJobRow(row: IRow, child: boolean): void {
    row.node.className = child
      ? 'oj-sidebar-card oj-sidebar-job oj-sidebar-child'
      : 'oj-sidebar-card oj-sidebar-job';
    const badge = el('span', 'oj-sidebar-badge');
    const duration = el('span', 'oj-sidebar-fact oj-sidebar-duration');
    const id = el('code', 'oj-sidebar-fact oj-sidebar-jobid');
    id.tabIndex = 0;
    id.setAttribute('role', 'button');
    const actions = el('span', 'oj-sidebar-actions');
    const log = el('button', 'jp-Button jp-mod-minimal oj-sidebar-log', 'Log');
    log.title = "Open this job's output in a panel that follows it live";
    const cancel = el('button', 'jp-Button jp-mod-minimal oj-sidebar-cancel');
    // "Cancel", or "✕" where the sidebar is narrow; its name is "Cancel" either way.
    cancel.append(
      el('span', 'oj-mod-wide', 'Cancel'),
      el('span', 'oj-mod-narrow', '✕')
    );
    cancel.setAttribute('aria-label', 'Cancel');
    cancel.title = 'Cancel this job on the cluster';
    actions.append(log, cancel);
    // What it used, once it has ended: one line cut to the row's width, whole in its tooltip.
    const usage = el('span', 'oj-sidebar-fact oj-sidebar-usage');
    usage.hidden = true;
    Object.assign(row, { badge, duration, id, cancel, usage });
    if (child) {
      row.node.append(row.check, id, badge, duration, usage, actions);
    } else {
      const head = el('div', 'oj-sidebar-card-head');
      const label = this.makeLabel(row);
      const start = el('span', 'oj-sidebar-fact oj-sidebar-start');
      head.append(row.check, label, start);
      const facts = el('div', 'oj-sidebar-facts');
      const where = el('span', 'oj-sidebar-fact oj-sidebar-node-name');
      facts.append(badge, duration, id, where, usage, actions);
      row.node.append(head, facts);
      Object.assign(row, { label, start, where });
    }
    const act = (action: (job: IJob) => void) => () => {
      if (row.item) {
        action(row.item.job);
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
    id.addEventListener(
      'click',
      act(job => this.actions.copyId(job))
    );
    id.addEventListener('keydown', event => {
      if ((event.key === 'Enter' || event.key === ' ') && row.item) {
        event.preventDefault();
        this.actions.copyId(row.item.job);
      }
    });
  }

  /** A job's or group's label: a link to the cell it came from. */
  private makeLabel(row: IRow): HTMLElement {
    const label = el('a', 'oj-sidebar-joblabel');
    label.addEventListener('click', event => {
      event.preventDefault();
      if (row.item?.job.label?.notebook) {
        this.actions.openCell(row.item.job);
      }
    });
    label.addEventListener('keydown', event => {
      if (
        (event.key === 'Enter' || event.key === ' ') &&
        row.item?.job.label?.notebook
      ) {
        event.preventDefault();
        this.actions.openCell(row.item.job);
      }
    });
    return label;
  }

  private select(row: IRow, on: boolean): void {
    const item = row.item!;
    const jobs = item.kind === 'group' ? item.group.jobs : [item.job];
    for (const job of jobs) {
      if (on) {
        this.selected.add(keyOf(job));
      } else {
        this.selected.delete(keyOf(job));
      }
    }
    this.render();
    this.actions.selectionChanged();
  }

  private isCurrent(job: IJob): boolean {
    return this.currentCell !== null && job.label?.cell_id === this.currentCell;
  }

  private fillGroup(row: IRow, item: IItem, now: Date): void {
    const group = item.group;
    const open = this.isOpen(group);
    const statuses = group.jobs.map(job =>
      this.cancelling.has(keyOf(job)) && isActive(job.status)
        ? 'Cancelling'
        : job.status
    );
    const chosen = group.jobs.filter(job =>
      this.selected.has(keyOf(job))
    ).length;
    const newest = newestSubmitted(group.jobs);
    const drawn = JSON.stringify([
      statuses,
      group.total,
      open,
      chosen,
      this.oneNotebook,
      item.job.label,
      newest
    ]);
    if (drawn !== row.drawn) {
      row.drawn = drawn;
      const job = item.job;
      const node = row.node;
      node.dataset.notebook = job.label?.notebook ?? '';
      node.dataset.cell = job.label?.cell_id ?? '';
      node.dataset.count = `${job.label?.execution_count ?? ''}`;
      node.dataset.jobs = `${group.jobs.length}`;
      node.classList.toggle('oj-mod-open', open);
      drawLabel(row.label!, job, this.oneNotebook, group);
      const caret = row.caret!;
      setText(caret, open ? '▾' : '▸');
      caret.setAttribute('aria-expanded', String(open));
      caret.setAttribute(
        'aria-label',
        open
          ? `Hide the ${group.jobs.length} jobs`
          : `Show the ${group.jobs.length} jobs`
      );
      caret.title = open
        ? 'Hide the jobs of this cell run'
        : `Show the ${group.jobs.length} jobs of this cell run, by short id`;
      const filtered = group.jobs.length < group.total;
      setText(
        row.counts!,
        countsText(statuses) +
          (filtered ? ` (${group.jobs.length} of ${group.total} shown)` : '')
      );
      row.counts!.title = `${group.total} jobs from this cell run`;
      row.check.checked = chosen > 0 && chosen === group.jobs.length;
      row.check.indeterminate = chosen > 0 && chosen < group.jobs.length;
      row.check.title = `Select the ${group.jobs.length} jobs of this cell run`;
      row.check.setAttribute('aria-label', row.check.title);
      row.start!.title = timeTooltip('Newest submitted', newest);
    }
    const current = group.jobs.some(job => this.isCurrent(job));
    if (row.node.classList.contains('oj-sidebar-job-current') !== current) {
      row.node.classList.toggle('oj-sidebar-job-current', current);
    }
    setText(row.start!, formatRelative(newest, now));
  }

  private fillJob(row: IRow, item: IItem, now: Date): void {
    const job = item.job;
    const cancelling = this.cancelling.has(keyOf(job)) && isActive(job.status);
    const chosen = this.selected.has(keyOf(job));
    const drawn =
      JSON.stringify(job) +
      (cancelling ? '!' : '') +
      (chosen ? '+' : '') +
      (this.oneNotebook ? '1' : '');
    if (drawn !== row.drawn) {
      row.drawn = drawn;
      this.drawJob(row, job, cancelling, chosen);
    }
    const current = this.isCurrent(job);
    if (row.node.classList.contains('oj-sidebar-job-current') !== current) {
      row.node.classList.toggle('oj-sidebar-job-current', current);
    }
    // Relative times and run times move on with the clock even when the job does not change.
    if (row.start) {
      setText(row.start, formatRelative(submitted(job), now));
    }
    setText(row.duration!, formatRunTime(job, now));
  }

  private drawJob(
    row: IRow,
    job: IJob,
    cancelling: boolean,
    chosen: boolean
  ): void {
    const status = cancelling ? 'Cancelling' : job.status;
    const node = row.node;
    node.dataset.job = job.job;
    node.dataset.service = job.service;
    node.dataset.status = status;
    node.dataset.notebook = job.label?.notebook ?? '';
    node.classList.toggle('oj-mod-selected', chosen);
    row.check.checked = chosen;
    row.check.title = `Select ${shortId(job.job)}`;
    row.check.setAttribute('aria-label', row.check.title);

    const badge = row.badge!;
    const text = statusText(job.status, job.exit_code, job.cancelled_by);
    setText(badge, cancelling ? 'Cancelling…' : text);
    badge.className = `oj-sidebar-badge oj-sidebar-status-${status}`;
    badge.title = statusTooltip(job, cancelling);

    const id = row.id!;
    setText(id, shortId(job.job));
    id.title = `${job.job}\nClick to copy the whole id`;
    id.setAttribute('aria-label', `Copy the job id ${job.job}`);

    const lines = [
      `Job ${job.job}`,
      `Service ${job.service}`,
      `Node ${job.node ?? '(any)'}`
    ];
    const label = job.label;
    if (label?.notebook) {
      lines.push(`Notebook ${label.notebook}`);
      if (
        label.execution_count !== null &&
        label.execution_count !== undefined
      ) {
        lines.push(`Cell [${label.execution_count}]`);
      }
    }
    if (row.kind === 'child') {
      lines.unshift(statusText(job.status, job.exit_code, job.cancelled_by));
    }
    if (row.label) {
      drawLabel(row.label, job, this.oneNotebook, null);
      row.label.title = [
        ...lines,
        label?.notebook
          ? 'Click to show the cell'
          : 'Not submitted from a known notebook cell'
      ].join('\n');
    } else {
      node.title = lines.join('\n');
    }
    if (row.where) {
      setText(row.where, job.node ?? 'any node');
      row.where.title = job.node
        ? `Virtual node ${job.node}`
        : 'No node asked for';
    }
    if (row.start) {
      row.start.title = [
        timeTooltip('Submitted', submitted(job)),
        timeTooltip('Started', job.runner_start ?? job.start_time ?? null)
      ].join('\n');
    }
    row.duration!.title = job.runner_start
      ? timeTooltip('Run time counted from the cell’s start', job.runner_start)
      : 'Run time: the cell has not started yet';
    row.cancel!.hidden = !isActive(job.status);
    row.cancel!.disabled = cancelling;
    drawUsage(row.usage!, job);
  }
}

/** What an ended job used, as the Python views word it, and the hint on its own line. */
function drawUsage(node: HTMLElement, job: IJob): void {
  const usage = job.usage ?? null;
  node.hidden = usage === null;
  if (usage === null) {
    node.replaceChildren();
    return;
  }
  // The hint, when there is one, says more in a narrow row than the figures.
  node.replaceChildren(
    ...(usage.hint
      ? [
          el('span', 'oj-sidebar-usage-hint', '⚠ '),
          el('span', 'oj-sidebar-usage-text', usage.hint)
        ]
      : [el('span', 'oj-sidebar-usage-text', usage.text)])
  );
  node.classList.toggle('oj-mod-hint', Boolean(usage.hint));
  node.title = [
    usage.text,
    ...(usage.hint ? [usage.hint] : []),
    `${coreHoursText(job.core_hours ?? 0)} (cores asked × wall time), measured on the cluster`
  ].join('\n');
}

/** When the job was submitted (ISO), as "newest first" sorts it. */
function submitted(job: IJob): string | null {
  return job.submitted_time ?? job.creation_time ?? null;
}

function newestSubmitted(jobs: IJob[]): string | null {
  let best: string | null = null;
  let bestTime = -Infinity;
  for (const job of jobs) {
    const time = Date.parse(submitted(job) ?? '');
    if (!isNaN(time) && time > bestTime) {
      best = submitted(job);
      bestTime = time;
    }
  }
  return best;
}

/** "nb.ipynb · [3] · train()", or "[3] · train()" when only one notebook's jobs are listed. */
function drawLabel(
  node: HTMLElement,
  job: IJob,
  oneNotebook: boolean,
  group: IJobGroup | null
): void {
  const label = job.label;
  setText(node, (oneNotebook && shortLabel(job)) || label?.text || job.job);
  if (group) {
    node.title = [
      label?.notebook ? `Notebook ${label.notebook}` : '',
      label?.execution_count !== null && label?.execution_count !== undefined
        ? `Cell [${label.execution_count}]`
        : '',
      `${group.total} jobs from this cell run`,
      label?.notebook ? 'Click to show the cell' : ''
    ]
      .filter(Boolean)
      .join('\n');
  }
  const linked = Boolean(label?.notebook);
  node.classList.toggle('oj-mod-link', linked);
  if (linked) {
    node.setAttribute('role', 'link');
    node.tabIndex = 0;
  } else {
    node.removeAttribute('role');
    node.removeAttribute('tabindex');
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
  const parts = [statusText(job.status, job.exit_code, job.cancelled_by)];
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
