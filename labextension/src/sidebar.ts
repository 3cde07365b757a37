/**
 * The left-area panel: Cluster (profile picker), Virtual nodes, Jobs (filters and the job list).
 * It polls the server extension every `refreshInterval` seconds while it is visible, and backs
 * off while requests fail.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  cancelJob,
  cleanupJobs,
  fetchClusters,
  fetchJobs,
  fetchNodes,
  IClusters,
  IJob,
  IJobs,
  JobScope
} from './api';
import { el } from './dom';
import { filterJobs, JobFilter, scopeOf } from './filter';
import { isActive } from './format';
import { JobsList } from './jobs';
import { showErrorDialog } from './logview';
import { renderNodes } from './nodes';

export const DEFAULT_REFRESH_SECONDS = 5;
const MAX_BACKOFF_MS = 60000;

export interface ISidebarOptions {
  /** The focused notebook's path relative to the Jupyter root, or null. */
  notebookPath: () => string | null;
  /** Opens (or focuses) the job's notebook at its cell. */
  openCell: (job: IJob) => Promise<void>;
  /** Opens the job's log panel. */
  openLog: (job: IJob, cluster: string | null) => void;
}

const FILTERS: { filter: JobFilter; label: string; title: string }[] = [
  {
    filter: 'notebook',
    label: 'This notebook',
    title: 'Jobs of the notebook you worked in last'
  },
  { filter: 'mine', label: 'Mine', title: 'Jobs in your own runner services' },
  { filter: 'all', label: 'All', title: 'Every job you are allowed to list' }
];

export class OscarSidebar extends Widget {
  readonly poll: Poll;
  private clusters: IClusters | null = null;
  /** The cluster picked in the picker; null until the user picks one. */
  private picked: string | null = null;
  private cluster: string | null = null;
  private defaultCluster = '';
  private filter: JobFilter = 'mine';
  private hideFinished = false;
  private listings = new Map<JobScope, IJobs>();
  private lastNodes = '';
  private readonly picker: HTMLSelectElement;
  private readonly endpoint: HTMLElement;
  private readonly message: HTMLElement;
  private readonly nodesBox: HTMLElement;
  private readonly filterButtons = new Map<JobFilter, HTMLButtonElement>();
  private readonly hideBox: HTMLInputElement;
  private readonly cleanupButton: HTMLButtonElement;
  private readonly summary: HTMLElement;
  readonly jobs: JobsList;

  constructor(private readonly options: ISidebarOptions) {
    super();
    this.addClass('oj-sidebar');
    this.title.caption = 'OSCAR jobs';

    this.picker = el('select', 'jp-mod-styled oj-sidebar-picker');
    this.picker.setAttribute('aria-label', 'OSCAR cluster');
    this.picker.addEventListener('change', () => {
      this.picked = this.picker.value || null;
      this.switchCluster(this.picked);
    });
    this.endpoint = el('div', 'oj-sidebar-endpoint');
    this.message = el('div', 'oj-sidebar-error');
    this.message.hidden = true;
    this.nodesBox = el('div', 'oj-sidebar-nodelist');

    const filters = el('div', 'oj-sidebar-filters');
    filters.setAttribute('role', 'group');
    filters.setAttribute('aria-label', 'Which jobs');
    for (const { filter, label, title } of FILTERS) {
      const button = el('button', 'jp-Button oj-sidebar-filter', label);
      button.title = title;
      button.dataset.filter = filter;
      button.addEventListener('click', () => this.setFilter(filter));
      this.filterButtons.set(filter, button);
      filters.appendChild(button);
    }
    const hide = el('label', 'oj-sidebar-hide');
    this.hideBox = el('input');
    this.hideBox.type = 'checkbox';
    this.hideBox.addEventListener('change', () => {
      this.hideFinished = this.hideBox.checked;
      this.showJobs();
    });
    hide.append(this.hideBox, document.createTextNode(' Hide finished'));
    this.cleanupButton = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-cleanup',
      'Clean up finished'
    );
    this.cleanupButton.addEventListener('click', () => void this.cleanup());
    const tools = el('div', 'oj-sidebar-tools');
    tools.append(hide, this.cleanupButton);
    this.summary = el('div', 'oj-sidebar-summary');

    this.jobs = new JobsList({
      cancel: job => void this.cancel(job),
      showLog: job => this.options.openLog(job, this.cluster),
      openCell: job => void this.openCell(job)
    });

    const jobsSection = section(
      'Jobs',
      filters,
      tools,
      this.summary,
      this.jobs.node
    );
    jobsSection.classList.add('oj-sidebar-jobsection');
    const nodesSection = section('Virtual nodes', this.nodesBox);
    nodesSection.classList.add('oj-sidebar-nodesection');
    this.node.append(
      el('header', 'oj-sidebar-title', 'OSCAR'),
      section('Cluster', this.picker, this.endpoint, this.message),
      nodesSection,
      jobsSection
    );
    this.drawFilters();

    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: {
        interval: DEFAULT_REFRESH_SECONDS * 1000,
        backoff: true,
        max: MAX_BACKOFF_MS
      },
      name: 'oscar-jupyter:sidebar',
      // Only while the panel is shown (and the browser tab too).
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  /** The `refreshInterval` setting (seconds). */
  setRefreshInterval(seconds: number): void {
    const interval = Math.max(1, seconds) * 1000;
    if (this.poll.frequency.interval !== interval) {
      this.poll.frequency = { ...this.poll.frequency, interval };
    }
  }

  /** The `defaultCluster` setting: used while the user has not picked a cluster. */
  setDefaultCluster(name: string): void {
    if (name === this.defaultCluster) {
      return;
    }
    this.defaultCluster = name;
    if (this.picked === null && this.clusters) {
      this.fillPicker(this.clusters);
      this.switchCluster(this.cluster);
    }
  }

  /** The focused notebook changed: "This notebook" follows it. */
  /** The focused notebook cell (its JupyterLab id), whose jobs are highlighted. */
  cellChanged(cellId: string | null): void {
    this.jobs.setCurrentCell(cellId);
  }

  notebookChanged(): void {
    this.drawFilters();
    if (this.filter === 'notebook') {
      this.showJobs();
    }
  }

  protected onAfterShow(msg: Message): void {
    void this.poll.refresh();
    this.jobs.render();
  }

  /** One refresh: the profile list (a local file, cheap), then the cluster's nodes and jobs. */
  async refresh(): Promise<void> {
    try {
      const profiles = fetchClusters().then(clusters => {
        if (JSON.stringify(clusters) !== JSON.stringify(this.clusters)) {
          this.clusters = clusters;
          this.fillPicker(clusters);
        }
      });
      if (!this.clusters) {
        await profiles; // the first time: which cluster is the default
      }
      const chosen = this.cluster;
      const scope = scopeOf(this.filter);
      // Each shown as soon as it arrives: a slow node source does not hold the jobs back.
      await Promise.all([
        profiles,
        fetchNodes(chosen).then(nodes => {
          const nodesText = JSON.stringify(nodes);
          if (this.cluster === chosen && nodesText !== this.lastNodes) {
            this.lastNodes = nodesText;
            this.nodesBox.replaceChildren(renderNodes(nodes));
          }
        }),
        fetchJobs(chosen, scope).then(jobs => {
          if (this.cluster === chosen) {
            this.listings.set(scope, jobs);
            this.showJobs();
          }
        })
      ]);
      if (this.cluster !== chosen) {
        return; // the user picked another cluster meanwhile: its own refresh is on the way
      }
      this.showError(null);
    } catch (error) {
      this.showError(error instanceof Error ? error.message : String(error));
      throw error; // so that the poll backs off
    }
  }

  private setFilter(filter: JobFilter): void {
    if (filter === this.filter) {
      return;
    }
    const scope = scopeOf(filter);
    const before = scopeOf(this.filter);
    this.filter = filter;
    this.drawFilters();
    this.jobs.node.scrollTop = 0;
    this.showJobs(); // at once from what is here; a fresh listing follows for a new scope
    if (scope !== before || !this.listings.has(scope)) {
      void this.poll.refresh();
    }
  }

  private drawFilters(): void {
    const notebook = this.options.notebookPath();
    for (const [filter, button] of this.filterButtons) {
      const on = filter === this.filter;
      button.classList.toggle('oj-mod-active', on);
      button.setAttribute('aria-pressed', String(on));
    }
    const nbButton = this.filterButtons.get('notebook')!;
    nbButton.title = notebook
      ? `Jobs of ${notebook}, the notebook you worked in last`
      : 'Jobs of the notebook you work in (none is open)';
    this.cleanupButton.title =
      this.filter === 'notebook'
        ? `Delete the finished jobs of ${notebook ?? 'this notebook'}`
        : 'Delete your finished jobs';
    this.cleanupButton.disabled = this.filter === 'notebook' && !notebook;
  }

  /** Filters the listing of the current scope into the list; touches only what changed. */
  private showJobs(): void {
    const listing = this.listings.get(scopeOf(this.filter));
    const notebook = this.options.notebookPath();
    const all = listing?.jobs ?? [];
    const shown = filterJobs(all, {
      filter: this.filter,
      notebook,
      hideFinished: this.hideFinished
    });
    let empty: string;
    if (!listing) {
      empty = 'Loading…';
    } else if (this.filter === 'notebook' && !notebook) {
      empty = 'Open a notebook to see its jobs.';
    } else if (all.length === 0) {
      empty =
        'No offloaded jobs. Run a cell with %%oscar_offload to start one.';
    } else if (this.filter === 'notebook') {
      empty = `No ${this.hideFinished ? 'unfinished ' : ''}jobs from ${notebook}.`;
    } else {
      empty = 'No unfinished jobs.';
    }
    this.jobs.update(
      shown,
      empty,
      this.filter === 'notebook' && notebook !== null
    );
    const running = shown.filter(job => isActive(job.status)).length;
    const where =
      this.filter === 'notebook' && notebook ? ` of ${basename(notebook)}` : '';
    const text = listing
      ? `${shown.length} job${shown.length === 1 ? '' : 's'}${where} · ${running} active`
      : '';
    if (this.summary.textContent !== text) {
      this.summary.textContent = text;
    }
    this.summary.title = listing?.refreshed_at
      ? `Listed by the cluster at ${new Date(listing.refreshed_at).toLocaleTimeString()}` +
        ` (${listing.refreshed_at})`
      : '';
  }

  private switchCluster(name: string | null): void {
    this.cluster = name;
    this.lastNodes = '';
    this.listings.clear();
    this.nodesBox.replaceChildren(el('p', 'oj-sidebar-empty', 'Loading…'));
    this.showJobs();
    this.showEndpoint();
    void this.poll.refresh();
  }

  private fillPicker(info: IClusters): void {
    this.picker.replaceChildren();
    if (info.clusters.length === 0) {
      this.picker.appendChild(
        el('option', '', 'default (from the environment)')
      ).value = '';
    }
    for (const entry of info.clusters) {
      const label =
        entry.name + (entry.name === info.default ? ' (default)' : '');
      const option = el('option', '', label);
      option.value = entry.name;
      option.disabled = entry.error !== null;
      option.title = entry.error ?? entry.endpoint ?? '';
      this.picker.appendChild(option);
    }
    const wanted = this.picked ?? (this.defaultCluster || null);
    if (wanted && !info.clusters.some(c => c.name === wanted)) {
      // The setting names a profile the config file lacks: pick it, the server says why not.
      const option = el('option', '', `${wanted} (not in the config file)`);
      option.value = wanted;
      this.picker.appendChild(option);
    }
    this.cluster = wanted ?? info.default;
    this.picker.value = this.cluster ?? '';
    this.showEndpoint();
  }

  private showEndpoint(): void {
    const chosen = this.clusters?.clusters.find(c => c.name === this.cluster);
    this.endpoint.textContent =
      chosen?.endpoint ??
      (this.clusters ? `config: ${this.clusters.config_path}` : '');
  }

  private showError(text: string | null): void {
    this.message.hidden = text === null;
    this.message.textContent = text ?? '';
    this.toggleClass('oj-sidebar-mod-error', text !== null);
  }

  private async openCell(job: IJob): Promise<void> {
    try {
      await this.options.openCell(job);
    } catch (error) {
      Notification.warning(
        error instanceof Error ? error.message : String(error),
        {
          autoClose: 6000
        }
      );
    }
  }

  private async cancel(job: IJob): Promise<void> {
    const answer = await showDialog({
      title: 'Cancel job',
      body: `Cancel ${job.label?.text || job.job}? Its Slurm job is stopped; the output so far stays in its log.`,
      buttons: [
        Dialog.cancelButton({ label: 'Keep running' }),
        Dialog.warnButton({ label: 'Cancel job' })
      ]
    });
    if (!answer.button.accept) {
      return;
    }
    this.jobs.markCancelling(job);
    try {
      await cancelJob(this.cluster, job);
    } catch (error) {
      this.jobs.cancelFailed(job);
      await showErrorDialog(
        `Could not cancel ${job.job}`,
        String((error as Error).message)
      );
      return;
    }
    void this.poll.refresh();
  }

  /** Asks the server how many finished jobs are in scope, confirms, then deletes them. */
  private async cleanup(): Promise<void> {
    const notebook =
      this.filter === 'notebook' ? this.options.notebookPath() : null;
    const scope = notebook ? 'notebook' : 'mine';
    const whose = notebook ? `of ${notebook}` : 'of yours';
    const cluster = this.cluster;
    try {
      const dry = await cleanupJobs(cluster, {
        scope,
        notebook,
        dry_run: true
      });
      if (dry.count === 0) {
        Notification.info(`No finished jobs ${whose} to clean up.`, {
          autoClose: 4000
        });
        return;
      }
      const plural = dry.count === 1 ? 'job' : 'jobs';
      const answer = await showDialog({
        title: 'Clean up finished jobs',
        body:
          `Delete ${dry.count} finished ${plural} ${whose} (Succeeded, Failed and ` +
          'Cancelled) from the cluster, with their logs? This cannot be undone.',
        buttons: [
          Dialog.cancelButton({ label: 'Keep them' }),
          Dialog.warnButton({ label: `Delete ${dry.count} ${plural}` })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
      const done = await cleanupJobs(cluster, {
        scope,
        notebook,
        dry_run: false
      });
      Notification.success(
        `Deleted ${done.count} finished job${done.count === 1 ? '' : 's'} ${whose}.`,
        { autoClose: 4000 }
      );
    } catch (error) {
      await showErrorDialog(
        'Could not clean up',
        String((error as Error).message)
      );
    }
    void this.poll.refresh();
  }
}

function section(title: string, ...children: HTMLElement[]): HTMLElement {
  const box = el('section', 'oj-sidebar-section');
  box.appendChild(el('h3', 'oj-sidebar-heading', title));
  box.append(...children);
  return box;
}

function basename(path: string): string {
  return path.split('/').pop() || path;
}
