/**
 * The "Jobs" section: one card per job. Cards are kept by service and job name across
 * refreshes, so a button stays the same element while the user moves to click it; only texts
 * and badges change.
 */
import { IJob } from './api';
import { el, setText } from './dom';
import { formatDuration, formatStart, isActive } from './format';

export interface IJobActions {
  cancel(job: IJob): void;
  showLog(job: IJob): void;
}

interface IJobCard {
  job: IJob;
  card: HTMLElement;
  badge: HTMLElement;
  node: HTMLElement;
  start: HTMLElement;
  duration: HTMLElement;
  cancel: HTMLButtonElement;
}

export class JobsTable {
  readonly node: HTMLElement;
  private readonly list: HTMLElement;
  private readonly empty: HTMLElement;
  private cards = new Map<string, IJobCard>();
  private cancelling = new Set<string>();

  constructor(private readonly actions: IJobActions) {
    this.node = el('div', 'oj-sidebar-jobs');
    this.list = el('div', 'oj-sidebar-list');
    this.empty = el(
      'p',
      'oj-sidebar-empty',
      'No offloaded jobs. Run a cell with %%oscar_offload to start one.'
    );
    this.node.append(this.list, this.empty);
  }

  update(jobs: IJob[], now: Date = new Date()): void {
    const keep = new Set<string>();
    jobs.forEach((job, index) => {
      const key = keyOf(job);
      keep.add(key);
      const entry = this.cards.get(key) ?? this.createCard(job);
      entry.job = job;
      this.fill(entry, now);
      const here = this.list.children[index] ?? null;
      if (here !== entry.card) {
        this.list.insertBefore(entry.card, here);
      }
    });
    for (const [key, entry] of this.cards) {
      if (!keep.has(key)) {
        entry.card.remove();
        this.cards.delete(key);
        this.cancelling.delete(key);
      }
    }
    this.empty.hidden = jobs.length > 0;
  }

  markCancelling(job: IJob): void {
    this.cancelling.add(keyOf(job));
    this.refill(job);
  }

  /** The cancel request failed: the button may be used again. */
  cancelFailed(job: IJob): void {
    this.cancelling.delete(keyOf(job));
    this.refill(job);
  }

  private refill(job: IJob): void {
    const entry = this.cards.get(keyOf(job));
    if (entry) {
      this.fill(entry, new Date());
    }
  }

  private createCard(job: IJob): IJobCard {
    const card = el('div', 'oj-sidebar-card oj-sidebar-job');
    card.dataset.job = job.job;
    card.dataset.service = job.service;
    const head = el('div', 'oj-sidebar-card-head');
    const badge = el('span', 'oj-sidebar-badge');
    const name = el('span', 'oj-sidebar-name oj-sidebar-jobname', job.job);
    name.title = `${job.job}\nservice: ${job.service}`;
    head.append(badge, name);

    const facts = el('div', 'oj-sidebar-facts');
    const node = el('span', 'oj-sidebar-fact oj-sidebar-node-name');
    node.title = 'Virtual node';
    const start = el('span', 'oj-sidebar-fact oj-sidebar-start');
    start.title = 'Started (or submitted, while it waits)';
    const duration = el('span', 'oj-sidebar-fact oj-sidebar-duration');
    duration.title = 'Run time';
    const actions = el('span', 'oj-sidebar-actions');
    const log = el('button', 'jp-Button jp-mod-minimal oj-sidebar-log', 'Log');
    log.title = 'Show the cell output of this job';
    const cancel = el('button', 'jp-Button jp-mod-minimal oj-sidebar-cancel', 'Cancel');
    cancel.title = 'Cancel this job on the cluster';
    actions.append(log, cancel);
    facts.append(node, start, duration, actions);
    card.append(head, facts);

    const entry: IJobCard = { job, card, badge, node, start, duration, cancel };
    log.addEventListener('click', () => this.actions.showLog(entry.job));
    cancel.addEventListener('click', () => this.actions.cancel(entry.job));
    this.cards.set(keyOf(job), entry);
    return entry;
  }

  private fill(entry: IJobCard, now: Date): void {
    const { job } = entry;
    const cancelling = this.cancelling.has(keyOf(job));
    const status = cancelling ? 'Cancelling' : job.status;
    setText(entry.badge, status);
    entry.badge.title =
      job.exit_code === null || job.exit_code === undefined
        ? status
        : `${status}: the cell exited with ${job.exit_code}`;
    entry.badge.className = `oj-sidebar-badge oj-sidebar-status-${status}`;
    entry.card.dataset.status = status;
    setText(entry.node, job.node ?? 'any node');
    setText(entry.start, formatStart(job.start_time ?? job.creation_time, now));
    setText(entry.duration, formatDuration(job.start_time, job.finish_time, now));
    entry.cancel.hidden = !isActive(job.status);
    entry.cancel.disabled = cancelling;
  }
}

function keyOf(job: IJob): string {
  return `${job.service}/${job.job}`;
}
