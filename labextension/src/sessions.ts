/**
 * The "Sessions" section: the persistent sessions (%oscar_session) of the cluster's user, one
 * card each with its state, node, time left and idle time, and a Stop button.
 */
import { ISession, ISessions } from './api';
import { el } from './dom';
import { formatSeconds } from './format';

const STATE_TITLE: Record<string, string> = {
  starting: 'Its job waits in the queue',
  loading: 'Its job runs; its Python is getting ready',
  idle: 'Ready for a cell: %%oscar_offload --session NAME',
  busy: 'A cell is running in it',
  ended: 'It ended: Stop removes what it left'
};

const STATE_CLASS: Record<string, string> = {
  starting: 'oj-sidebar-status-Pending',
  loading: 'oj-sidebar-status-Pending',
  idle: 'oj-sidebar-status-Succeeded',
  busy: 'oj-sidebar-status-Running',
  ended: 'oj-sidebar-status-Failed'
};

export function renderSessions(
  listing: ISessions,
  stop: (session: ISession, button: HTMLButtonElement) => void
): HTMLElement {
  if (listing.sessions.length === 0) {
    const empty = el(
      'p',
      'oj-sidebar-empty',
      listing.note
        ? 'No sessions: this cluster offers you no object storage.'
        : 'No sessions. Start one with %oscar_session start NAME.'
    );
    if (listing.note) {
      empty.title = listing.note;
    }
    return empty;
  }
  const list = el('div', 'oj-sidebar-list');
  for (const session of listing.sessions) {
    const card = el('div', 'oj-sidebar-card oj-sidebar-session');
    card.dataset.session = session.name;
    card.dataset.job = session.job;
    card.dataset.state = session.state;
    const badge = el(
      'span',
      `oj-sidebar-badge ${STATE_CLASS[session.state] ?? ''}`,
      session.state
    );
    badge.title = session.ended ?? STATE_TITLE[session.state] ?? '';
    const name = el('span', 'oj-sidebar-name', session.name);
    name.title = `Session ${session.name} · job ${session.job} · kernel ${session.kernel}`;
    const button = el(
      'button',
      'jp-Button jp-mod-minimal oj-sidebar-cancel oj-sidebar-session-stop',
      'Stop'
    );
    button.title =
      session.state === 'ended'
        ? `Remove what session ${session.name} left on the cluster`
        : `Stop session ${session.name}: its Slurm job ends, its variables are lost`;
    button.addEventListener('click', () => stop(session, button));
    const actions = el('span', 'oj-sidebar-actions');
    actions.appendChild(button);
    const head = el('div', 'oj-sidebar-card-head');
    head.append(badge, name, actions);

    const facts = el('div', 'oj-sidebar-facts');
    facts.append(fact('node', session.node ?? '—', 'oj-sidebar-session-node'));
    facts.append(
      fact(
        'left',
        session.time_left === null
          ? 'no walltime'
          : formatSeconds(session.time_left),
        'oj-sidebar-session-left'
      )
    );
    if (session.idle !== null) {
      facts.append(
        fact('idle', formatSeconds(session.idle), 'oj-sidebar-session-idle')
      );
    }
    facts.append(
      fact('cells', String(session.cells), 'oj-sidebar-session-cells')
    );
    card.append(head, facts);
    if (session.ended) {
      card.append(el('div', 'oj-sidebar-node-reason', session.ended));
    }
    list.appendChild(card);
  }
  return list;
}

function fact(label: string, value: string, kind: string): HTMLElement {
  const box = el('span', `oj-sidebar-fact ${kind}`);
  box.append(
    el('span', 'oj-sidebar-label', label + ' '),
    el('span', 'oj-sidebar-value', value)
  );
  return box;
}
