/**
 * Which jobs the sidebar shows: This notebook / Mine / All, Hide finished, newest first.
 */
import { IJob, JobScope } from './api';
import { isFinished } from './format';

export type JobFilter = 'notebook' | 'mine' | 'all';

export interface IFilterState {
  filter: JobFilter;
  /** The focused notebook's path (relative to the Jupyter root); null when none is open. */
  notebook: string | null;
  hideFinished: boolean;
}

/** The server listing a filter needs: a notebook's jobs are its user's own. */
export function scopeOf(filter: JobFilter): JobScope {
  return filter === 'all' ? 'all' : 'mine';
}

export function keyOf(job: IJob): string {
  return `${job.service}/${job.job}`;
}

/** When the job was submitted (or started): what "newest first" sorts by. */
function sortTime(job: IJob): number {
  const time = Date.parse(job.creation_time ?? job.start_time ?? '');
  // A job without any time yet has just been submitted: the newest of all.
  return isNaN(time) ? Infinity : time;
}

export function filterJobs(jobs: IJob[], state: IFilterState): IJob[] {
  const shown = jobs.filter(job => {
    if (state.hideFinished && isFinished(job.status)) {
      return false;
    }
    if (state.filter === 'notebook') {
      return state.notebook !== null && job.label?.notebook === state.notebook;
    }
    if (state.filter === 'mine') {
      return job.mine !== false;
    }
    return true;
  });
  // Stable: equal times keep the server's order.
  return shown
    .map((job, index) => ({ job, index, time: sortTime(job) }))
    .sort((a, b) => b.time - a.time || a.index - b.index)
    .map(entry => entry.job);
}
