/**
 * Numbers and times as the sidebar shows them.
 */

export const ACTIVE_STATUSES = ['Suspended', 'Pending', 'Queued', 'Running'];
export const FINISHED_STATUSES = ['Succeeded', 'Failed', 'Cancelled'];

export function isActive(status: string): boolean {
  return ACTIVE_STATUSES.includes(status);
}

/** Ended for good: what "Hide finished" hides and "Clean up finished" deletes. */
export function isFinished(status: string): boolean {
  return FINISHED_STATUSES.includes(status);
}

export function formatBytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = count;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function formatCores(cores: number): string {
  return Number.isInteger(cores) ? `${cores}` : cores.toFixed(1);
}

export function parseTime(value: string | null): Date | null {
  if (!value) {
    return null;
  }
  const date = new Date(value);
  return isNaN(date.getTime()) ? null : date;
}

/** "14:03:27" today, "2024-05-02 14:03" on another day. */
export function formatStart(
  value: string | null,
  now: Date = new Date()
): string {
  const date = parseTime(value);
  if (!date) {
    return '—';
  }
  const pad = (n: number) => `${n}`.padStart(2, '0');
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  if (date.toDateString() === now.toDateString()) {
    return `${time}:${pad(date.getSeconds())}`;
  }
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

/** A duration as Slurm writes a walltime: "00:00:42", "00:03:05", "1-04:00:00"; "—" for null. */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null) {
    return '—';
  }
  const total = Math.max(0, Math.floor(seconds));
  const pad = (n: number) => `${n}`.padStart(2, '0');
  const days = Math.floor(total / 86400);
  const rest = total % 86400;
  const clock = `${pad(Math.floor(rest / 3600))}:${pad(Math.floor((rest % 3600) / 60))}:${pad(rest % 60)}`;
  return days > 0 ? `${days}-${clock}` : clock;
}

/** What a run time is counted from: a job as the server lists it. */
export interface IRunTimes {
  status: string;
  runner_start?: string | null;
  duration?: number | null;
}

/**
 * Seconds a job has run, as every view counts them (job_status.JobState.duration): a finished
 * job's from the server (the runner's start line to the job's end, the same start and end the
 * Python views use), a running job's from the runner's start line to now; null before the runner
 * started (OSCAR's own start time includes Slurm's queue: it is no run time).
 */
export function runSeconds(
  job: IRunTimes,
  now: Date = new Date()
): number | null {
  if (isFinished(job.status)) {
    return typeof job.duration === 'number' ? job.duration : null;
  }
  const start = parseTime(job.runner_start ?? null);
  if (!start) {
    return null;
  }
  return Math.max(0, (now.getTime() - start.getTime()) / 1000);
}

/** `runSeconds` as `formatSeconds` writes it: "00:03:05", "—" before the runner started. */
export function formatRunTime(job: IRunTimes, now: Date = new Date()): string {
  return formatSeconds(runSeconds(job, now));
}

/** The order states are counted and sorted in: what needs a look first. */
export const STATE_ORDER = [
  'Running',
  'Pending',
  'Queued',
  'Suspended',
  'Failed',
  'Cancelled',
  'Succeeded'
];

/** Where a status sorts "by state": Running first, Succeeded last. */
export function stateRank(status: string): number {
  const rank = STATE_ORDER.indexOf(status);
  return rank < 0 ? STATE_ORDER.length : rank;
}

/** "2 running, 31 pending, 7 succeeded": how many jobs are in each state, in STATE_ORDER. */
export function countsText(statuses: string[]): string {
  const counts = new Map<string, number>();
  for (const status of statuses) {
    counts.set(status, (counts.get(status) ?? 0) + 1);
  }
  const known = [
    ...STATE_ORDER,
    ...[...counts.keys()].filter(s => !STATE_ORDER.includes(s)).sort()
  ];
  return known
    .filter(status => counts.has(status))
    .map(status => `${counts.get(status)} ${status.toLowerCase()}`)
    .join(', ');
}

/** A job's own part of its name (12 hex digits), which every magic that takes a job accepts. */
export function shortId(job: string): string {
  const parts = job.split('-');
  return parts[parts.length - 1];
}

/** "from this kernel", "by the sidebar", "by Slurm (scancel on the cluster)"; "" unknown. */
export function cancelledPhrase(by: string | null | undefined): string {
  if (!by) {
    return '';
  }
  return by === 'this kernel' || by.startsWith('another view')
    ? `from ${by}`
    : `by ${by}`;
}

/** "Failed (exit 1)", "Cancelled by the sidebar", "Running". */
export function statusText(
  status: string,
  exitCode: number | null | undefined,
  cancelledBy: string | null | undefined
): string {
  if (status === 'Cancelled' && cancelledBy) {
    return `Cancelled ${cancelledPhrase(cancelledBy)}`;
  }
  if (
    (status === 'Succeeded' || status === 'Failed') &&
    exitCode !== null &&
    exitCode !== undefined &&
    exitCode !== 0
  ) {
    return `${status} (exit ${exitCode})`;
  }
  return status;
}

/** "just now", "42 s ago", "3 min ago", "2 h ago", "3 d ago" (or "in ..." for a skewed clock). */
export function formatRelative(
  value: string | null,
  now: Date = new Date()
): string {
  const date = parseTime(value);
  if (!date) {
    return '—';
  }
  const delta = Math.round((now.getTime() - date.getTime()) / 1000);
  const seconds = Math.abs(delta);
  let text: string;
  if (seconds < 5) {
    return 'just now';
  } else if (seconds < 60) {
    text = `${seconds} s`;
  } else if (seconds < 3600) {
    text = `${Math.floor(seconds / 60)} min`;
  } else if (seconds < 86400) {
    text = `${Math.floor(seconds / 3600)} h`;
  } else {
    text = `${Math.floor(seconds / 86400)} d`;
  }
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

/** The tooltip of a shown time: local clock time and ISO UTC. */
export function timeTooltip(what: string, value: string | null): string {
  const date = parseTime(value);
  if (!date) {
    return `${what}: not yet`;
  }
  const pad = (n: number) => `${n}`.padStart(2, '0');
  const local =
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return `${what}: ${local} local\n${date.toISOString()} UTC`;
}

/** "14:03:27 (3 min ago)": local clock time and the relative form. */
export function formatWhen(
  value: string | null,
  now: Date = new Date()
): string {
  if (!parseTime(value)) {
    return '—';
  }
  return `${formatStart(value, now)} (${formatRelative(value, now)})`;
}

/** "0.42 core-hours", "1.00 core-hour", "12.3 core-hours" (usage.core_hours_text). */
export function coreHoursText(hours: number): string {
  const shown = hours < 10 ? hours.toFixed(2) : hours.toFixed(1);
  return `${shown} core-hour${shown === '1.00' || shown === '1.0' ? '' : 's'}`;
}

/** "Total for this notebook: 1.25 core-hours (cores asked × wall time)" (usage.total_line). */
export function totalLine(hours: number, whose: string): string {
  return `Total for ${whose}: ${coreHoursText(hours)} (cores asked × wall time)`;
}
