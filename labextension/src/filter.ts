/**
 * Which jobs the sidebar shows and in what order: This notebook / Mine / All, Hide finished, a
 * text filter, a sort (newest submission first, by state, by duration), and the jobs of one cell
 * run (same notebook, cell id and execution count: a sweep) gathered in one group.
 */
import { IJob, JobScope } from './api';
import {
  isFinished,
  runSeconds,
  shortId,
  stateRank,
  statusText
} from './format';

export type JobFilter = 'notebook' | 'mine' | 'all';
export type JobSort = 'newest' | 'state' | 'duration';

export const SORTS: { sort: JobSort; label: string; title: string }[] = [
  {
    sort: 'newest',
    label: 'Newest first',
    title: 'By submission, newest first, whatever the queue did'
  },
  {
    sort: 'state',
    label: 'By state',
    title: 'Running, then waiting, then Failed, Cancelled, Succeeded'
  },
  {
    sort: 'duration',
    label: 'By duration',
    title: 'Longest run time first'
  }
];

export interface IFilterState {
  filter: JobFilter;
  /** The focused notebook's path (relative to the Jupyter root); null when none is open. */
  notebook: string | null;
  hideFinished: boolean;
  /** Words every shown job must contain (label, code line, notebook, id, state, node). */
  text?: string;
}

/** The jobs of one cell run, in the sort's order; a job without a known cell is alone. */
export interface IJobGroup {
  key: string;
  jobs: IJob[];
  /** The cell run's jobs in the listing, before Hide finished and the text filter. */
  total: number;
}

/** The server listing a filter needs: a notebook's jobs are its user's own. */
export function scopeOf(filter: JobFilter): JobScope {
  return filter === 'all' ? 'all' : 'mine';
}

export function keyOf(job: IJob): string {
  return `${job.service}/${job.job}`;
}

/** Jobs of one cell run share this key: notebook, cell id and execution count. */
export function groupKeyOf(job: IJob): string {
  const label = job.label;
  const count = label?.execution_count;
  const hasCount = count !== null && count !== undefined;
  if (!label?.notebook || (!label.cell_id && !hasCount)) {
    return `job\u0000${keyOf(job)}`;
  }
  return `cell\u0000${label.notebook}\u0000${label.cell_id ?? ''}\u0000${hasCount ? count : ''}`;
}

/** When the job was submitted: what "newest first" sorts by, never when the queue started it. */
export function submittedTime(job: IJob): number {
  const time = Date.parse(job.submitted_time ?? job.creation_time ?? '');
  // A job without any time yet has just been submitted: the newest of all.
  return isNaN(time) ? Infinity : time;
}

const searchText = new WeakMap<IJob, string>();

function haystack(job: IJob): string {
  let text = searchText.get(job);
  if (text === undefined) {
    const label = job.label;
    text = [
      label?.text,
      label?.first_line,
      label?.notebook,
      job.job,
      shortId(job.job),
      job.service,
      job.node,
      statusText(job.status, job.exit_code, job.cancelled_by)
    ]
      .filter(Boolean)
      .join('\n')
      .toLowerCase();
    searchText.set(job, text);
  }
  return text;
}

/** Does the job hold every word of `text` (any case)? */
export function matchesText(job: IJob, text: string): boolean {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) {
    return true;
  }
  const hay = haystack(job);
  return words.every(word => hay.includes(word));
}

/** The jobs in scope (notebook or mine), before Hide finished and the text filter. */
function inScope(job: IJob, state: IFilterState): boolean {
  if (state.filter === 'notebook') {
    return state.notebook !== null && job.label?.notebook === state.notebook;
  }
  if (state.filter === 'mine') {
    return job.mine !== false;
  }
  return true;
}

/** Sorted by `sort`, ties newest submission first, then in the server's order (stable). */
export function sortJobs(
  jobs: IJob[],
  sort: JobSort,
  now: Date = new Date()
): IJob[] {
  const entries = jobs.map((job, index) => ({
    job,
    index,
    time: submittedTime(job),
    rank: sort === 'state' ? stateRank(job.status) : 0,
    seconds: sort === 'duration' ? (runSeconds(job, now) ?? -1) : 0
  }));
  entries.sort(
    (a, b) =>
      a.rank - b.rank ||
      b.seconds - a.seconds ||
      (a.time === b.time ? 0 : b.time > a.time ? 1 : -1) ||
      a.index - b.index
  );
  return entries.map(entry => entry.job);
}

/**
 * The shown jobs in groups of one cell run each, the groups in the order of their first job
 * (so a group sorts where its newest, most urgent or longest job does) and each group's jobs in
 * the same order. `total` counts each cell run's jobs in scope before the other filters.
 */
export function groupJobs(
  jobs: IJob[],
  state: IFilterState,
  sort: JobSort,
  now: Date = new Date()
): IJobGroup[] {
  const text = state.text?.trim() ?? '';
  const totals = new Map<string, number>();
  const shown: IJob[] = [];
  for (const job of jobs) {
    if (!inScope(job, state)) {
      continue;
    }
    const key = groupKeyOf(job);
    totals.set(key, (totals.get(key) ?? 0) + 1);
    if (state.hideFinished && isFinished(job.status)) {
      continue;
    }
    if (text && !matchesText(job, text)) {
      continue;
    }
    shown.push(job);
  }
  const groups = new Map<string, IJobGroup>();
  for (const job of sortJobs(shown, sort, now)) {
    const key = groupKeyOf(job);
    let group = groups.get(key);
    if (!group) {
      group = { key, jobs: [], total: totals.get(key) ?? 1 };
      groups.set(key, group);
    }
    group.jobs.push(job);
  }
  return [...groups.values()];
}
