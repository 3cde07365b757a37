/**
 * "Show log": the job's cell output (parsed by the server from OSCAR's whole log) in a dialog.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IJob, IJobLog } from './api';
import { el } from './dom';

export function renderLog(log: IJobLog): HTMLElement {
  const box = el('div', 'oj-sidebar-logview');
  const facts = [`service ${log.service}`];
  if (log.node) {
    facts.push(`node ${log.node}`);
  }
  facts.push(
    log.exit_code === null ? 'no exit status yet' : `exit status ${log.exit_code}`
  );
  box.appendChild(el('div', 'oj-sidebar-logfacts', facts.join(' · ')));
  if (log.omitted > 0) {
    box.appendChild(
      el('div', 'oj-sidebar-empty', `(${log.omitted} earlier lines not shown)`)
    );
  }
  const pre = el('pre', 'oj-sidebar-logtext');
  if (log.lines.length === 0) {
    pre.appendChild(el('span', 'oj-sidebar-empty', 'No output yet.'));
  }
  for (const line of log.lines) {
    pre.appendChild(
      el('span', `oj-sidebar-log-${line.stream}`, line.text + '\n')
    );
  }
  box.appendChild(pre);
  return box;
}

export async function showLogDialog(job: IJob, log: IJobLog): Promise<void> {
  const body = new Widget({ node: renderLog(log) });
  await showDialog({
    title: `Output of ${job.job}`,
    body,
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}

export async function showErrorDialog(title: string, message: string): Promise<void> {
  await showDialog({
    title,
    body: new Widget({ node: el('p', 'oj-sidebar-error', message) }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
