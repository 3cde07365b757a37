/**
 * A job's log in a main-area panel. While the job runs it asks for the lines it does not have yet
 * (`log?since=N`) about once a second and appends them; a line not ended yet (a `\r` progress bar)
 * is drawn in place at the end and redrawn on each answer. Once the job has ended the panel stays,
 * with the exit status. Copy and Download take the whole log.
 */
import {
  Clipboard,
  Dialog,
  MainAreaWidget,
  Notification,
  showDialog,
  ToolbarButton
} from '@jupyterlab/apputils';
import { copyIcon, downloadIcon } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { fetchJobLog, IJob, IJobLog, ILogLine, IUsage } from './api';
import { el, setText } from './dom';
import {
  formatRunTime,
  formatWhen,
  IRunTimes,
  isActive,
  shortId,
  statusText,
  timeTooltip
} from './format';

/** How often a running job's log is asked for (ms). */
export const LOG_REFRESH_MS = 1000;
const MAX_BACKOFF_MS = 30000;
/** The most lines the server sends in one answer: a full answer means more are waiting. */
const SERVER_BATCH = 5000;
/** Lines kept on screen; older ones leave the screen (Copy and Download still have them). */
export const MAX_SHOWN_LINES = 20000;

export class LogView extends Widget {
  readonly poll: Poll;
  private readonly lines: ILogLine[] = [];
  private next = 0;
  private serverOmitted = 0;
  private partial: { stdout?: string; stderr?: string } = {};
  private finished = false;
  private status: string;
  private exitCode: number | null;
  private cancelledBy: string | null;
  private node_: string | null;
  /** The run time as the job list counts it: the runner's start and, once ended, the total. */
  private times: IRunTimes;
  /** What the job used, once ended, as the job list has it (measured on the cluster). */
  private usage: IUsage | null;
  private readonly usageLine: HTMLElement;
  private readonly facts: HTMLElement;
  private readonly badge: HTMLElement;
  private readonly statusText: HTMLElement;
  private readonly omittedNote: HTMLElement;
  private readonly error: HTMLElement;
  private readonly text: HTMLElement;
  private readonly partialBox: HTMLElement;
  private readonly placeholder: HTMLElement;

  constructor(
    readonly job: IJob,
    private readonly cluster: string | null
  ) {
    super();
    this.addClass('oj-logview');
    this.status = job.status;
    this.exitCode = job.exit_code;
    this.cancelledBy = job.cancelled_by ?? null;
    this.node_ = job.node;
    this.times = {
      status: job.status,
      runner_start: job.runner_start,
      duration: job.duration
    };
    this.usage = job.usage ?? null;

    const head = el('div', 'oj-logview-head');
    this.badge = el('span', 'oj-sidebar-badge');
    const label = el('span', 'oj-logview-label', job.label?.text || job.job);
    const title = el('div', 'oj-logview-title');
    title.append(this.badge, label);
    this.statusText = el('span', 'oj-logview-status');
    const id = el('div', 'oj-logview-id');
    const jobId = el('code', 'oj-logview-jobid', job.job);
    jobId.title = `Short id ${shortId(job.job)}: every magic that takes a job accepts it`;
    id.append(
      el('span', 'oj-sidebar-label', 'Job '),
      jobId,
      el('span', 'oj-sidebar-label', '  service '),
      el('code', '', job.service)
    );
    this.facts = el('div', 'oj-logview-facts');
    this.usageLine = el('div', 'oj-logview-usage');
    this.usageLine.hidden = true;
    head.append(title, id, this.facts, this.usageLine, this.statusText);

    this.omittedNote = el('div', 'oj-sidebar-empty');
    this.omittedNote.hidden = true;
    this.error = el('div', 'oj-sidebar-error');
    this.error.hidden = true;
    this.text = el('pre', 'oj-logview-text');
    this.placeholder = el('span', 'oj-sidebar-empty', 'No output yet.');
    this.partialBox = el('span', 'oj-logview-partial');
    this.text.append(this.placeholder, this.partialBox);
    this.node.append(head, this.omittedNote, this.error, this.text);
    this.drawState();

    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: {
        interval: LOG_REFRESH_MS,
        backoff: true,
        max: MAX_BACKOFF_MS
      },
      name: `oscar-jupyter:log:${job.job}`,
      // Not while another tab hides the panel (nor while the browser tab is hidden).
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterAttach(): void {
    void this.poll.refresh();
  }

  /** The whole log as a terminal shows it (lines not ended yet included). */
  get logText(): string {
    const all = this.lines.map(line => line.text);
    for (const stream of ['stdout', 'stderr'] as const) {
      const text = this.partial[stream];
      if (text) {
        all.push(text);
      }
    }
    return all.join('\n') + (all.length ? '\n' : '');
  }

  get fileName(): string {
    return `${this.job.job}.log`;
  }

  /** One request for the lines not here yet; stops the poll once the job has ended. */
  async refresh(): Promise<void> {
    if (this.finished) {
      return;
    }
    let log: IJobLog;
    try {
      log = await fetchJobLog(this.cluster, this.job, this.next);
    } catch (error) {
      this.error.hidden = false;
      setText(
        this.error,
        error instanceof Error ? error.message : String(error)
      );
      throw error; // so that the poll backs off
    }
    if (this.isDisposed) {
      return;
    }
    this.error.hidden = true;
    this.apply(log);
    if (this.finished) {
      void this.poll.stop();
    }
  }

  /** The job's row in a new listing: the run time as the list counts it. */
  listed(entry: IJob): void {
    const duration = typeof entry.duration === 'number' ? entry.duration : null;
    const usage = entry.usage ?? this.usage;
    if (
      entry.runner_start === this.times.runner_start &&
      duration === this.times.duration &&
      usage === this.usage
    ) {
      return;
    }
    this.usage = usage;
    this.times = {
      status: this.status,
      runner_start: entry.runner_start ?? this.times.runner_start,
      duration: duration ?? this.times.duration
    };
    this.drawState();
  }

  private apply(log: IJobLog): void {
    const atBottom =
      this.text.scrollTop + this.text.clientHeight >=
      this.text.scrollHeight - 4;
    const fresh = log.lines;
    if (fresh.length) {
      const lines = document.createDocumentFragment();
      for (const line of fresh) {
        lines.appendChild(
          el('span', `oj-sidebar-log-${line.stream}`, line.text + '\n')
        );
      }
      this.text.insertBefore(lines, this.partialBox);
      for (const line of fresh) {
        this.lines.push(line);
      }
      this.trimScreen();
    }
    // A server without `next` sends the whole log each time: then it is all we have.
    this.next =
      typeof log.next === 'number' ? log.next : this.next + fresh.length;
    this.partial = log.partial ?? {};
    this.drawPartial();
    this.placeholder.hidden =
      this.lines.length > 0 || this.partialBox.childElementCount > 0;
    if (log.omitted > 0) {
      this.serverOmitted += log.omitted;
      this.drawNote();
    }
    this.status = log.status ?? this.status;
    this.exitCode = log.exit_code;
    this.cancelledBy = log.cancelled_by ?? this.cancelledBy;
    this.node_ = log.node ?? this.node_;
    this.times = {
      status: this.status,
      runner_start: log.runner_start ?? this.times.runner_start,
      duration:
        typeof log.duration === 'number' ? log.duration : this.times.duration
    };
    this.finished =
      (log.finished ??
        (log.exit_code !== null && log.exit_code !== undefined)) &&
      fresh.length < SERVER_BATCH;
    this.drawState();
    if (atBottom) {
      this.text.scrollTop = this.text.scrollHeight;
    }
  }

  /** Keeps at most MAX_SHOWN_LINES lines in the DOM, so a chatty job does not slow the page. */
  private trimScreen(): void {
    const shown = this.text.querySelectorAll(
      ':scope > .oj-sidebar-log-stdout, :scope > .oj-sidebar-log-stderr'
    );
    const extra = shown.length - MAX_SHOWN_LINES;
    for (let index = 0; index < extra; index++) {
      shown[index].remove();
    }
    if (extra > 0) {
      this.drawNote();
    }
  }

  private drawNote(): void {
    const notes: string[] = [];
    if (this.serverOmitted > 0) {
      notes.push(
        `${this.serverOmitted} lines were left out by the server, which sends at most ` +
          `${SERVER_BATCH} at a time`
      );
    }
    const offScreen =
      this.lines.length - Math.min(this.lines.length, MAX_SHOWN_LINES);
    if (offScreen > 0) {
      notes.push(
        `${offScreen} earlier lines are not shown here (Copy and Download have them)`
      );
    }
    this.omittedNote.hidden = notes.length === 0;
    setText(this.omittedNote, notes.length ? `(${notes.join('; ')})` : '');
  }

  /** The lines not ended yet, one per stream, redrawn in place. */
  private drawPartial(): void {
    const spans = Array.from(this.partialBox.children) as HTMLElement[];
    const wanted = (['stdout', 'stderr'] as const).filter(s => this.partial[s]);
    wanted.forEach((stream, index) => {
      let span = spans[index];
      if (!span) {
        span = el('span');
        this.partialBox.appendChild(span);
      }
      span.className = `oj-sidebar-log-${stream} oj-logview-partialline`;
      setText(span, this.partial[stream]! + '\n');
    });
    spans.slice(wanted.length).forEach(span => span.remove());
  }

  private drawState(): void {
    const job = this.job;
    const running = !this.finished && isActive(this.status);
    this.badge.className = `oj-sidebar-badge oj-sidebar-status-${this.status}`;
    const status = statusText(this.status, this.exitCode, this.cancelledBy);
    setText(this.badge, status);
    const facts: string[] = [];
    if (this.node_) {
      facts.push(`node ${this.node_}`);
    }
    const started = this.times.runner_start ?? null;
    const submitted = job.submitted_time ?? job.creation_time;
    facts.push(`submitted ${formatWhen(submitted)}`);
    if (started) {
      facts.push(`started ${formatWhen(started)}`);
    }
    // The run time as the job list and the Python views count it; "—" until the cell starts.
    const times = {
      ...this.times,
      status: this.finished ? this.status : 'Running'
    };
    facts.push(`ran ${formatRunTime(times)}`);
    setText(this.facts, facts.join(' · '));
    this.facts.title = [
      timeTooltip('Submitted', submitted),
      timeTooltip('Started', started)
    ].join('\n');
    let state: string;
    if (running) {
      state = 'Following the job live…';
    } else if (!this.finished) {
      state = `${this.status}: waiting for the job`;
    } else {
      const exit =
        this.exitCode === null || this.exitCode === undefined
          ? 'no exit status'
          : `exit status ${this.exitCode}`;
      state = `Ended: ${status}, ${exit}`;
    }
    setText(this.statusText, state);
    this.statusText.dataset.finished = String(this.finished);
    // What it used, in the words of every other view, and the hint on its own line.
    const usage = this.finished ? this.usage : null;
    this.usageLine.hidden = usage === null;
    this.usageLine.replaceChildren(
      ...(usage
        ? [
            el('div', 'oj-logview-usage-text', `Used: ${usage.text}`),
            ...(usage.hint
              ? [el('div', 'oj-logview-usage-hint', `⚠ ${usage.hint}`)]
              : [])
          ]
        : [])
    );
    this.toggleClass('oj-mod-finished', this.finished);
  }
}

/** Opens the job's log panel in the main area, or shows the one already open. */
export class LogPanels {
  private panels = new Map<string, MainAreaWidget<LogView>>();

  constructor(private readonly addToShell: (widget: Widget) => void) {}

  /** A new listing of `cluster`: open panels of its jobs take their run time from it. */
  listed(cluster: string | null, jobs: IJob[]): void {
    if (!this.panels.size) {
      return;
    }
    for (const job of jobs) {
      const panel = this.panels.get(
        `${cluster ?? ''}/${job.service}/${job.job}`
      );
      if (panel && !panel.isDisposed) {
        panel.content.listed(job);
      }
    }
  }

  open(job: IJob, cluster: string | null): MainAreaWidget<LogView> {
    const key = `${cluster ?? ''}/${job.service}/${job.job}`;
    const open = this.panels.get(key);
    if (open && !open.isDisposed) {
      this.addToShell(open);
      return open;
    }
    const content = new LogView(job, cluster);
    const panel = new MainAreaWidget({ content });
    panel.id = `oscar-log-${job.service}-${job.job}`;
    panel.addClass('oj-logpanel');
    panel.title.label = `Log: ${shorten(job.label?.text || job.job, 40)}`;
    panel.title.caption = `${job.job}\nservice ${job.service}`;
    panel.title.closable = true;
    panel.toolbar.addItem(
      'copy',
      new ToolbarButton({
        icon: copyIcon,
        label: 'Copy',
        tooltip: 'Copy the whole log to the clipboard',
        onClick: () => {
          Clipboard.copyToSystem(content.logText);
          Notification.success('The log is in the clipboard.', {
            autoClose: 2000
          });
        }
      })
    );
    panel.toolbar.addItem(
      'download',
      new ToolbarButton({
        icon: downloadIcon,
        label: 'Download',
        tooltip: 'Save the whole log as a .log file',
        onClick: () => download(content.fileName, content.logText)
      })
    );
    panel.disposed.connect(() => this.panels.delete(key));
    this.panels.set(key, panel);
    this.addToShell(panel);
    return panel;
  }
}

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
  const link = el('a');
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function shorten(text: string, length: number): string {
  return text.length <= length ? text : text.slice(0, length - 1) + '…';
}

export async function showErrorDialog(
  title: string,
  message: string
): Promise<void> {
  await showDialog({
    title,
    body: new Widget({ node: el('p', 'oj-sidebar-error', message) }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
