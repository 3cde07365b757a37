/**
 * The left-area panel: Cluster (profile picker), Virtual nodes, Sessions (the user's persistent
 * sessions, with Stop), Jobs (filters and the job list).
 * It polls the server extension every `refreshInterval` seconds while it is visible, and backs
 * off while requests fail.
 */
import {
  Clipboard,
  Dialog,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  cancelJob,
  cleanupJobs,
  fetchClusters,
  fetchConnection,
  fetchJobs,
  fetchNodes,
  fetchSessions,
  IClusters,
  IConnection,
  IJob,
  IJobs,
  ISession,
  ISessions,
  JobScope,
  stopSession
} from './api';
import { el, setText } from './dom';
import { groupJobs, JobFilter, JobSort, scopeOf, SORTS } from './filter';
import {
  coreHoursText,
  isActive,
  isFinished,
  shortId,
  timeTooltip,
  totalLine
} from './format';
import { JobsList } from './jobs';
import { showErrorDialog } from './logview';
import { renderNodes } from './nodes';
import { renderSessions } from './sessions';

export const DEFAULT_REFRESH_SECONDS = 5;
const MAX_BACKOFF_MS = 60000;
/** Cancel requests in flight at once when many jobs are cancelled together. */
const CANCEL_CONCURRENCY = 4;

export interface ISidebarOptions {
  /** The focused notebook's path relative to the Jupyter root, or null. */
  notebookPath: () => string | null;
  /** Opens (or focuses) the job's notebook at its cell. */
  openCell: (job: IJob) => Promise<void>;
  /** Opens the job's log panel. */
  openLog: (job: IJob, cluster: string | null) => void;
  /** A new listing of `cluster` arrived (open log panels take their jobs' run times). */
  listed?: (cluster: string | null, jobs: IJob[]) => void;
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
  private sort: JobSort = 'newest';
  private text = '';
  /** The connection of the notebook in front last followed: notebook, cluster and time. */
  private followed: string | null = null;
  private connection: IConnection | null = null;
  private listings = new Map<JobScope, IJobs>();
  private lastNodes = '';
  private sessions: ISessions | null = null;
  private lastSessions = '';
  /** Jobs of the sessions being stopped: their Stop stays disabled until they are gone. */
  private readonly stopping = new Set<string>();
  private readonly picker: HTMLSelectElement;
  private readonly endpoint: HTMLElement;
  private readonly follow: HTMLElement;
  private readonly message: HTMLElement;
  private readonly nodesBox: HTMLElement;
  private readonly sessionsBox: HTMLElement;
  private readonly filterButtons = new Map<JobFilter, HTMLButtonElement>();
  private readonly hideBox: HTMLInputElement;
  private readonly cleanupButton: HTMLButtonElement;
  private readonly search: HTMLInputElement;
  private readonly sortPicker: HTMLSelectElement;
  private readonly selectionBar: HTMLElement;
  private readonly selectionText: HTMLElement;
  private readonly cancelSelected: HTMLButtonElement;
  private readonly cleanSelected: HTMLButtonElement;
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
      this.drawFollow();
    });
    this.endpoint = el('div', 'oj-sidebar-endpoint');
    this.follow = el('div', 'oj-sidebar-follow');
    this.follow.hidden = true;
    this.message = el('div', 'oj-sidebar-error');
    this.message.hidden = true;
    this.nodesBox = el('div', 'oj-sidebar-nodelist');
    this.sessionsBox = el('div', 'oj-sidebar-sessionlist');

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

    this.search = el('input', 'oj-sidebar-search');
    this.search.type = 'search';
    this.search.placeholder = 'Filter jobs';
    this.search.setAttribute('aria-label', 'Filter jobs');
    this.search.title =
      'Show only the jobs whose label, code line, notebook, id, state or node ' +
      'holds all these words';
    this.search.addEventListener('input', () => {
      this.text = this.search.value;
      this.jobs.filterChanged();
      this.jobs.node.scrollTop = 0;
      this.showJobs();
    });
    this.sortPicker = el('select', 'oj-sidebar-sort');
    this.sortPicker.setAttribute('aria-label', 'Sort jobs');
    for (const { sort, label, title } of SORTS) {
      const option = el('option', '', label);
      option.value = sort;
      option.title = title;
      this.sortPicker.appendChild(option);
    }
    this.sortPicker.addEventListener('change', () => {
      this.sort = this.sortPicker.value as JobSort;
      this.jobs.node.scrollTop = 0;
      this.showJobs();
    });
    const find = el('div', 'oj-sidebar-find');
    find.append(this.search, this.sortPicker);

    this.selectionText = el('span', 'oj-sidebar-selection-text');
    this.cancelSelected = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-cancel-selected'
    );
    this.cancelSelected.addEventListener(
      'click',
      () => void this.cancelMany(this.jobs.selectedJobs())
    );
    this.cleanSelected = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-clean-selected'
    );
    this.cleanSelected.addEventListener(
      'click',
      () => void this.cleanupSelected(this.jobs.selectedJobs())
    );
    const clear = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-clear-selection',
      'Clear'
    );
    clear.title = 'Select none';
    clear.addEventListener('click', () => this.jobs.clearSelection());
    this.selectionBar = el('div', 'oj-sidebar-selection');
    this.selectionBar.setAttribute('role', 'toolbar');
    this.selectionBar.setAttribute('aria-label', 'Selected jobs');
    this.selectionBar.hidden = true;
    this.selectionBar.append(
      this.selectionText,
      this.cancelSelected,
      this.cleanSelected,
      clear
    );
    this.summary = el('div', 'oj-sidebar-summary');

    this.jobs = new JobsList({
      cancel: job => void this.cancelMany([job]),
      showLog: job => this.options.openLog(job, this.cluster),
      openCell: job => void this.openCell(job),
      copyId: job => this.copyId(job),
      selectionChanged: () => this.drawSelection()
    });

    const jobsSection = section(
      'Jobs',
      filters,
      tools,
      find,
      this.selectionBar,
      this.summary,
      this.jobs.node
    );
    jobsSection.classList.add('oj-sidebar-jobsection');
    const nodesSection = section('Virtual nodes', this.nodesBox);
    nodesSection.classList.add('oj-sidebar-nodesection');
    const sessionsSection = section('Sessions', this.sessionsBox);
    sessionsSection.classList.add('oj-sidebar-sessionsection');
    this.node.append(
      el('header', 'oj-sidebar-title', 'OSCAR'),
      section('Cluster', this.picker, this.endpoint, this.follow, this.message),
      nodesSection,
      sessionsSection,
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

  /** The focused notebook cell (its JupyterLab id), whose jobs are highlighted. */
  cellChanged(cellId: string | null): void {
    this.jobs.setCurrentCell(cellId);
  }

  /** The focused notebook changed: "This notebook" and the cluster follow it. */
  notebookChanged(): void {
    this.drawFilters();
    if (this.filter === 'notebook') {
      this.showJobs();
    }
    // The cluster follows the notebook in front: its own connection, even if another was
    // picked for the notebook before.
    this.followed = null;
    this.drawFollow();
    void this.followConnection(true);
  }

  /** The kernel of the notebook in front ran a cell: maybe `%oscar_connect`, so look again. */
  kernelIdle(): void {
    void this.followConnection(true);
  }

  /**
   * Asks which cluster the notebook in front is connected as and, when that connection is new
   * (another notebook came to the front, or it connected again), shows that cluster. Returns
   * whether the cluster changed; `refresh`: ask for its nodes and jobs at once (not needed from
   * within a refresh, which goes on with the new cluster).
   */
  private async followConnection(refresh: boolean): Promise<boolean> {
    const notebook = this.options.notebookPath();
    if (!notebook || !this.isVisible) {
      return false;
    }
    let found: IConnection;
    try {
      found = await fetchConnection(notebook);
    } catch {
      return false; // an older server extension; the picker stays the user's
    }
    if (this.options.notebookPath() !== notebook) {
      return false; // another notebook came to the front meanwhile: its own look is on the way
    }
    this.connection = found.cluster ? found : null;
    const key = `${notebook}\u0000${found.cluster}\u0000${found.connected_at}`;
    if (key === this.followed) {
      this.drawFollow();
      return false;
    }
    this.followed = key;
    const name = found.cluster;
    const changed = name !== null && found.profile && name !== this.cluster;
    if (changed) {
      this.picked = name;
      if (refresh) {
        this.switchCluster(name);
      } else {
        this.setCluster(name);
      }
      this.picker.value = name ?? '';
    }
    this.drawFollow();
    return changed;
  }

  /** "a.ipynb is connected as local-bob", and whether the picker shows another cluster. */
  private drawFollow(): void {
    const found = this.connection;
    const notebook = this.options.notebookPath();
    if (!found || !found.cluster || found.notebook !== notebook) {
      this.follow.hidden = true;
      setText(this.follow, '');
      return;
    }
    const name = basename(found.notebook);
    let text = `${name} is connected as ${found.cluster}`;
    if (!found.profile) {
      text += ', which is no profile of the oscar-cli config here';
    } else if (found.cluster !== this.cluster) {
      text += ` (you picked ${this.cluster ?? 'the default'})`;
    }
    this.follow.hidden = false;
    setText(this.follow, text);
    this.follow.title = timeTooltip(
      `%oscar_connect ${found.cluster}`,
      found.connected_at
    );
    this.follow.classList.toggle(
      'oj-mod-other',
      found.cluster !== this.cluster
    );
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
      // The notebook in front may have connected (as another user) since the last refresh.
      await this.followConnection(false);
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
        fetchSessions(chosen).then(sessions => {
          if (this.cluster === chosen) {
            this.sessions = sessions;
            this.showSessions();
          }
        }),
        fetchJobs(chosen, scope).then(jobs => {
          if (this.cluster === chosen) {
            this.listings.set(scope, jobs);
            this.showJobs();
            this.options.listed?.(chosen, jobs.jobs);
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
    const text = this.text.trim();
    const groups = groupJobs(
      all,
      {
        filter: this.filter,
        notebook,
        hideFinished: this.hideFinished,
        text
      },
      this.sort
    );
    const shown: IJob[] = [];
    for (const group of groups) {
      shown.push(...group.jobs);
    }
    let empty: string;
    if (!listing) {
      empty = 'Loading…';
    } else if (this.filter === 'notebook' && !notebook) {
      empty = 'Open a notebook to see its jobs.';
    } else if (all.length === 0) {
      empty =
        'No offloaded jobs. Run a cell with %%oscar_offload to start one.';
    } else if (text) {
      empty = `No ${this.hideFinished ? 'unfinished ' : ''}jobs match “${text}”.`;
    } else if (this.filter === 'notebook') {
      empty = `No ${this.hideFinished ? 'unfinished ' : ''}jobs from ${notebook}.`;
    } else {
      empty = 'No unfinished jobs.';
    }
    this.jobs.update(
      groups,
      empty,
      this.filter === 'notebook' && notebook !== null,
      text !== ''
    );
    const running = shown.filter(job => isActive(job.status)).length;
    const where =
      this.filter === 'notebook' && notebook ? ` of ${basename(notebook)}` : '';
    // Cores asked × wall time of the jobs shown: what this notebook's jobs cost the cluster.
    const hours = shown.reduce((sum, job) => sum + (job.core_hours ?? 0), 0);
    const summary = listing
      ? `${shown.length} job${shown.length === 1 ? '' : 's'}${where} · ${running} active · ${coreHoursText(hours)}`
      : '';
    setText(this.summary, summary);
    this.summary.title = [
      ...(listing?.refreshed_at
        ? [timeTooltip('Listed by the cluster', listing.refreshed_at)]
        : []),
      ...(listing
        ? [totalLine(hours, where ? basename(notebook ?? '') : 'these jobs')]
        : [])
    ].join('\n');
  }

  private switchCluster(name: string | null): void {
    this.setCluster(name);
    void this.poll.refresh();
  }

  /** Shows another cluster: what was listed of the previous one goes. */
  private setCluster(name: string | null): void {
    this.cluster = name;
    this.lastNodes = '';
    this.listings.clear();
    this.nodesBox.replaceChildren(el('p', 'oj-sidebar-empty', 'Loading…'));
    this.sessions = null;
    this.lastSessions = '';
    this.sessionsBox.replaceChildren(el('p', 'oj-sidebar-empty', 'Loading…'));
    this.jobs.clearSelection();
    this.showJobs();
    this.showEndpoint();
  }

  /** The sessions as last listed; redrawn only when something shown changed. */
  private showSessions(): void {
    const listing = this.sessions;
    if (!listing) {
      return;
    }
    const shown = JSON.stringify([listing, [...this.stopping]]);
    if (shown === this.lastSessions) {
      return;
    }
    this.lastSessions = shown;
    this.sessionsBox.replaceChildren(
      renderSessions(listing, session => void this.stopSession(session))
    );
    for (const job of this.stopping) {
      const button = this.sessionsBox.querySelector<HTMLButtonElement>(
        `.oj-sidebar-session[data-job="${CSS.escape(job)}"] .oj-sidebar-session-stop`
      );
      if (button) {
        button.disabled = true;
        setText(button, 'Stopping…');
      }
    }
  }

  /** Stops a session after one confirmation; its kernel learns it on its next cell. */
  private async stopSession(session: ISession): Promise<void> {
    const ended = session.state === 'ended';
    const answer = await showDialog({
      title: ended ? 'Remove session' : 'Stop session',
      body: ended
        ? `Session ${session.name} has ended. Remove what it left on the cluster?`
        : `Stop session ${session.name}? Its Slurm job ends and the variables it holds are ` +
          'lost; its notebook is told so on its next cell.',
      buttons: [
        Dialog.cancelButton({ label: 'Keep it' }),
        Dialog.warnButton({ label: ended ? 'Remove' : 'Stop session' })
      ]
    });
    if (!answer.button.accept) {
      return;
    }
    const cluster = this.cluster;
    this.stopping.add(session.job);
    this.showSessions();
    try {
      await stopSession(cluster, session.job);
      Notification.success(`Session ${session.name} stopped.`, {
        autoClose: 4000
      });
    } catch (error) {
      await showErrorDialog(
        `Could not stop session ${session.name}`,
        String((error as Error).message)
      );
    } finally {
      this.stopping.delete(session.job);
    }
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

  private copyId(job: IJob): void {
    Clipboard.copyToSystem(job.job);
    Notification.info(`Copied the job id ${job.job}`, { autoClose: 2500 });
  }

  /** "3 selected: Cancel 2 · Clean up 1 · Clear". */
  private drawSelection(): void {
    const chosen = this.jobs.selectedJobs();
    this.selectionBar.hidden = chosen.length === 0;
    if (!chosen.length) {
      return;
    }
    const active = chosen.filter(job => isActive(job.status)).length;
    const finished = chosen.filter(job => isFinished(job.status)).length;
    setText(this.selectionText, `${chosen.length} selected`);
    setText(this.cancelSelected, `Cancel ${active}`);
    this.cancelSelected.disabled = active === 0;
    this.cancelSelected.title = active
      ? `Cancel the ${active} selected jobs that still run or wait`
      : 'None of the selected jobs runs or waits';
    setText(this.cleanSelected, `Clean up ${finished}`);
    this.cleanSelected.disabled = finished === 0;
    this.cleanSelected.title = finished
      ? `Delete the ${finished} selected finished jobs with their logs`
      : 'None of the selected jobs has finished';
  }

  /** Cancels the jobs among `jobs` that still run or wait, after one confirmation. */
  private async cancelMany(jobs: IJob[]): Promise<void> {
    const active = jobs.filter(job => isActive(job.status));
    if (!active.length) {
      return;
    }
    const one = active.length === 1;
    const what = one
      ? `${active[0].label?.text || active[0].job} (${shortId(active[0].job)})`
      : `${active.length} jobs`;
    const answer = await showDialog({
      title: one ? 'Cancel job' : `Cancel ${active.length} jobs`,
      body:
        `Cancel ${what}? ${one ? 'Its Slurm job is' : 'Their Slurm jobs are'} stopped; ` +
        `the output so far stays in ${one ? 'its log' : 'their logs'}.`,
      buttons: [
        Dialog.cancelButton({ label: one ? 'Keep running' : 'Keep them' }),
        Dialog.warnButton({
          label: one ? 'Cancel job' : `Cancel ${active.length} jobs`
        })
      ]
    });
    if (!answer.button.accept) {
      return;
    }
    const cluster = this.cluster;
    this.jobs.markCancelling(active);
    const failed: { job: IJob; message: string }[] = [];
    const queue = [...active];
    const worker = async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        try {
          await cancelJob(cluster, job);
        } catch (error) {
          failed.push({ job, message: String((error as Error).message) });
        }
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(CANCEL_CONCURRENCY, queue.length) }, worker)
    );
    if (failed.length) {
      this.jobs.cancelFailed(failed.map(f => f.job));
      await showErrorDialog(
        failed.length === 1
          ? `Could not cancel ${failed[0].job.job}`
          : `Could not cancel ${failed.length} of ${active.length} jobs`,
        failed.map(f => `${shortId(f.job.job)}: ${f.message}`).join('\n')
      );
    } else if (!one) {
      Notification.success(`Cancelled ${active.length} jobs.`, {
        autoClose: 4000
      });
    }
    this.jobs.clearSelection();
    void this.poll.refresh();
  }

  /** Deletes the finished jobs among the selected ones, after the server counted them. */
  private async cleanupSelected(jobs: IJob[]): Promise<void> {
    const names = jobs
      .filter(job => isFinished(job.status))
      .map(job => job.job);
    if (!names.length) {
      return;
    }
    const cluster = this.cluster;
    try {
      const dry = await cleanupJobs(cluster, {
        scope: 'jobs',
        notebook: null,
        jobs: names,
        dry_run: true
      });
      if (dry.count === 0) {
        Notification.info(
          'None of the selected finished jobs is yours to clean up.',
          { autoClose: 4000 }
        );
        return;
      }
      const plural = dry.count === 1 ? 'job' : 'jobs';
      const others = names.length - dry.count;
      const answer = await showDialog({
        title: 'Clean up selected jobs',
        body:
          `Delete ${dry.count} selected finished ${plural} from the cluster, with their ` +
          'logs? This cannot be undone.' +
          (others > 0
            ? ` (${others} selected are another user's and stay.)`
            : ''),
        buttons: [
          Dialog.cancelButton({ label: 'Keep them' }),
          Dialog.warnButton({ label: `Delete ${dry.count} ${plural}` })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
      const done = await cleanupJobs(cluster, {
        scope: 'jobs',
        notebook: null,
        jobs: names,
        dry_run: false
      });
      Notification.success(
        `Deleted ${done.count} finished job${done.count === 1 ? '' : 's'}.`,
        { autoClose: 4000 }
      );
      this.jobs.clearSelection();
    } catch (error) {
      await showErrorDialog(
        'Could not clean up',
        String((error as Error).message)
      );
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
