/**
 * When a notebook's kernel stops or restarts, the persistent sessions it started keep their
 * Slurm allocation (a session outlives its kernel, as any job does). Asks, once per session,
 * whether to keep it (to attach again) or stop it and free the allocation.
 */
import { Notification } from '@jupyterlab/apputils';

import { fetchConnection, fetchSessions, ISession, stopSession } from './api';
import { formatSeconds } from './format';

export type KernelEnd = 'stopped' | 'restarted';

/** The sentence a notification says of one session left running by its kernel's end (short:
 * a toast shows about 140 characters). */
export function sessionLeftText(
  notebook: string,
  session: ISession,
  end: KernelEnd
): string {
  const where = session.node ? ` on ${session.node}` : '';
  const left =
    session.time_left === null
      ? ''
      : ` (${formatSeconds(session.time_left)} left)`;
  return (
    `${notebook.split('/').pop()}'s kernel ${end}: session ${session.name} still ` +
    `holds its allocation${where}${left}. Keep it or stop it?`
  );
}

/**
 * Finds the sessions the kernel `kernelId` of `notebook` (a path relative to the Jupyter root)
 * started and asks about each one still running; `changed` runs after a stop.
 */
export async function askAboutSessionsLeft(
  notebook: string,
  kernelId: string,
  end: KernelEnd,
  changed: () => void
): Promise<void> {
  let sessions: ISession[];
  let cluster: string | null;
  try {
    cluster = (await fetchConnection(notebook)).cluster;
    if (!cluster) {
      return; // never connected: it started no session
    }
    const listing = await fetchSessions(cluster, kernelId);
    sessions = listing.sessions.filter(session => session.state !== 'ended');
  } catch (error) {
    console.warn('oscar-jupyter: cannot list the sessions of a kernel', error);
    return;
  }
  for (const session of sessions) {
    Notification.warning(sessionLeftText(notebook, session, end), {
      autoClose: false,
      actions: [
        {
          label: 'Keep',
          callback: () =>
            Notification.info(
              `Session ${session.name} kept: %oscar_session attach ${session.name} ` +
                'in the notebook uses it again.',
              { autoClose: 8000 }
            )
        },
        {
          label: `Stop ${session.name}`,
          displayType: 'warn',
          callback: () => {
            stopSession(cluster, session.job)
              .then(() => {
                Notification.success(`Session ${session.name} stopped.`, {
                  autoClose: 4000
                });
                changed();
              })
              .catch(error =>
                Notification.error(
                  `Could not stop session ${session.name}: ${(error as Error).message}`
                )
              );
          }
        }
      ]
    });
  }
}
