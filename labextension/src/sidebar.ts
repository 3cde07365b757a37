/**
 * The left-area panel: Cluster (profile picker), Virtual nodes, Jobs. It polls the server
 * extension every few seconds while it is visible, and backs off while requests fail.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  cancelJob,
  fetchClusters,
  fetchJobLog,
  fetchJobs,
  fetchNodes,
  IClusters,
  IJob
} from './api';
import { el } from './dom';
import { JobsTable } from './jobs';
import { showErrorDialog, showLogDialog } from './logview';
import { renderNodes } from './nodes';

export const REFRESH_MS = 3000;
const MAX_BACKOFF_MS = 60000;

export class OscarSidebar extends Widget {
  readonly poll: Poll;
  private clusters: IClusters | null = null;
  private cluster: string | null = null;
  private readonly picker: HTMLSelectElement;
  private readonly endpoint: HTMLElement;
  private readonly message: HTMLElement;
  private readonly nodesBox: HTMLElement;
  private readonly jobs: JobsTable;

  constructor() {
    super();
    this.addClass('oj-sidebar');
    this.title.caption = 'OSCAR jobs';

    this.picker = el('select', 'jp-mod-styled oj-sidebar-picker');
    this.picker.setAttribute('aria-label', 'OSCAR cluster');
    this.picker.addEventListener('change', () => {
      this.switchCluster(this.picker.value || null);
    });
    this.endpoint = el('div', 'oj-sidebar-endpoint');
    this.message = el('div', 'oj-sidebar-error');
    this.message.hidden = true;
    this.nodesBox = el('div', 'oj-sidebar-nodelist');
    this.jobs = new JobsTable({
      cancel: job => void this.cancel(job),
      showLog: job => void this.showLog(job)
    });

    this.node.append(
      el('header', 'oj-sidebar-title', 'OSCAR'),
      section('Cluster', this.picker, this.endpoint, this.message),
      section('Virtual nodes', this.nodesBox),
      section('Jobs', this.jobs.node)
    );

    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: REFRESH_MS, backoff: true, max: MAX_BACKOFF_MS },
      name: 'oscar-jupyter:sidebar',
      // Only while the panel is shown (and the browser tab too).
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    void this.poll.refresh();
  }

  /** One refresh: the profile list (a local file, cheap), then the cluster's nodes and jobs. */
  async refresh(): Promise<void> {
    try {
      const clusters = await fetchClusters();
      if (JSON.stringify(clusters) !== JSON.stringify(this.clusters)) {
        this.clusters = clusters;
        this.fillPicker(clusters);
      }
      const chosen = this.cluster;
      const [nodes, jobs] = await Promise.all([fetchNodes(chosen), fetchJobs(chosen)]);
      if (this.cluster !== chosen) {
        return; // the user picked another cluster meanwhile: its own refresh is on the way
      }
      this.nodesBox.replaceChildren(renderNodes(nodes));
      this.jobs.update(jobs.jobs);
      this.showError(null);
    } catch (error) {
      this.showError(error instanceof Error ? error.message : String(error));
      throw error; // so that the poll backs off
    }
  }

  private switchCluster(name: string | null): void {
    this.cluster = name;
    this.nodesBox.replaceChildren(el('p', 'oj-sidebar-empty', 'Loading…'));
    this.jobs.update([]);
    this.showEndpoint();
    void this.poll.refresh();
  }

  private fillPicker(info: IClusters): void {
    this.picker.replaceChildren();
    if (info.clusters.length === 0) {
      this.picker.appendChild(el('option', '', 'default (from the environment)')).value = '';
    }
    for (const entry of info.clusters) {
      const label = entry.name + (entry.name === info.default ? ' (default)' : '');
      const option = el('option', '', label);
      option.value = entry.name;
      option.disabled = entry.error !== null;
      option.title = entry.error ?? entry.endpoint ?? '';
      this.picker.appendChild(option);
    }
    const known = info.clusters.some(c => c.name === this.cluster);
    this.cluster = known ? this.cluster : info.default;
    this.picker.value = this.cluster ?? '';
    this.showEndpoint();
  }

  private showEndpoint(): void {
    const chosen = this.clusters?.clusters.find(c => c.name === this.cluster);
    this.endpoint.textContent =
      chosen?.endpoint ?? (this.clusters ? `config: ${this.clusters.config_path}` : '');
  }

  private showError(text: string | null): void {
    this.message.hidden = text === null;
    this.message.textContent = text ?? '';
    this.toggleClass('oj-sidebar-mod-error', text !== null);
  }

  private async cancel(job: IJob): Promise<void> {
    const answer = await showDialog({
      title: 'Cancel job',
      body: `Cancel ${job.job}? Its Slurm job is stopped and its output is lost.`,
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
      await showErrorDialog(`Could not cancel ${job.job}`, String((error as Error).message));
      return;
    }
    void this.poll.refresh();
  }

  private async showLog(job: IJob): Promise<void> {
    try {
      const log = await fetchJobLog(this.cluster, job);
      await showLogDialog(job, log);
    } catch (error) {
      await showErrorDialog(`No log for ${job.job}`, String((error as Error).message));
    }
  }
}

function section(title: string, ...children: HTMLElement[]): HTMLElement {
  const box = el('section', 'oj-sidebar-section');
  box.appendChild(el('h3', 'oj-sidebar-heading', title));
  box.append(...children);
  return box;
}
