/**
 * Cancel buttons inside cell outputs that work while the kernel is busy.
 *
 * A job's live view (`%%oscar_offload --no-wait`, oscar_jupyter/widgets/jobview.py) is drawn by the
 * kernel; an ipywidgets button's click waits until the kernel is idle. So the view renders its
 * Cancel button as plain HTML that names the job:
 *
 *     <button type="button" class="oj-cancel-via-server" data-oj-cluster="local"
 *             data-oj-service="oj-runner-..." data-oj-job="oj-runner-...-9827865a7cfd">Cancel</button>
 *
 * and one click listener on the document (here) sends the server extension's
 * `DELETE jobs/<service>/<job>?cluster=<cluster>` at once, shows "Cancelling…" on the button at
 * once, then the outcome. Only buttons inside a cell's output count. The notebook's sanitizer
 * strips `data-*` attributes from untrusted outputs, so a button of an untrusted notebook does
 * nothing. `data-oj-cluster` empty or missing: the config's default cluster.
 *
 * While the listener is installed the page's body has the class `oj-server-cancel`, so a view can
 * show this button only where it works (and its kernel-side button elsewhere: Jupyter Notebook,
 * VS Code, JupyterLab without this extension).
 */
import { cancelJob, ICancelAnswer } from './api';
import { shortId } from './format';

export const CANCEL_CLASS = 'oj-cancel-via-server';
/** On the body while the listener works. */
export const BODY_CLASS = 'oj-server-cancel';
const RESULT_CLASS = 'oj-cancel-via-server-result';
const OUTPUT_SELECTOR = '.jp-OutputArea-output';
/** DNS-1123 names, as OSCAR's services and jobs are. */
const NAME = /^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$/;
/** How long a cancel's outcome is redrawn on a view that re-renders its button. */
const REMEMBER_MS = 120000;

type Phase = 'cancelling' | 'cancelled' | 'ended' | 'failed';

interface ICancelState {
  phase: Phase;
  /** The button's text and the line next to it. */
  label: string;
  result: string;
  at: number;
}

interface ITarget {
  cluster: string | null;
  service: string;
  job: string;
}

/** What was asked of each job (cluster/service/job), for buttons the view draws again. */
const states = new Map<string, ICancelState>();
let observer: MutationObserver | null = null;

function keyOf(target: ITarget): string {
  return `${target.cluster ?? ''}/${target.service}/${target.job}`;
}

function targetOf(button: HTMLElement): ITarget | null {
  const service = button.dataset.ojService ?? '';
  const job = button.dataset.ojJob ?? '';
  if (!NAME.test(service) || !NAME.test(job)) {
    return null;
  }
  return { cluster: button.dataset.ojCluster || null, service, job };
}

/** Draws `state` on the button and on the line after it. */
function draw(button: HTMLButtonElement, state: ICancelState): void {
  if (!button.dataset.ojLabel) {
    button.dataset.ojLabel = button.textContent ?? 'Cancel';
  }
  button.dataset.ojState = state.phase;
  button.textContent =
    state.phase === 'failed' ? button.dataset.ojLabel : state.label;
  button.disabled = state.phase !== 'failed';
  button.setAttribute('aria-busy', String(state.phase === 'cancelling'));
  let result = button.nextElementSibling as HTMLElement | null;
  if (!result || !result.classList.contains(RESULT_CLASS)) {
    result = document.createElement('span');
    result.className = RESULT_CLASS;
    result.setAttribute('role', 'status');
    button.insertAdjacentElement('afterend', result);
  }
  result.dataset.ojState = state.phase;
  result.textContent = state.result;
}

function remember(target: ITarget, state: ICancelState): void {
  states.set(keyOf(target), state);
  for (const button of document.querySelectorAll<HTMLButtonElement>(
    `button.${CANCEL_CLASS}`
  )) {
    const other = targetOf(button);
    if (other && keyOf(other) === keyOf(target)) {
      draw(button, state);
    }
  }
  watch();
}

/**
 * A view that draws its button again (a widget's HTML redrawn) gets the state back; watched only
 * while some cancel was asked for in the last minutes.
 */
function watch(): void {
  if (observer || typeof MutationObserver === 'undefined') {
    return;
  }
  observer = new MutationObserver(mutations => {
    const now = Date.now();
    for (const [key, state] of states) {
      if (state.phase !== 'cancelling' && now - state.at > REMEMBER_MS) {
        states.delete(key);
      }
    }
    if (!states.size) {
      observer?.disconnect();
      observer = null;
      return;
    }
    for (const mutation of mutations) {
      for (const added of mutation.addedNodes) {
        if (!(added instanceof Element)) {
          continue;
        }
        const buttons = added.matches(`button.${CANCEL_CLASS}`)
          ? [added as HTMLButtonElement]
          : Array.from(
              added.querySelectorAll<HTMLButtonElement>(
                `button.${CANCEL_CLASS}`
              )
            );
        for (const button of buttons) {
          const target = targetOf(button);
          const state = target && states.get(keyOf(target));
          if (state && button.dataset.ojState !== state.phase) {
            draw(button, state);
          }
        }
      }
    }
  });
  observer.observe(document.body, { childList: true, subtree: true });
}

function outcome(answer: ICancelAnswer): ICancelState {
  if (answer.cancelled) {
    return {
      phase: 'cancelled',
      label: 'Cancelled',
      result: `Job ${shortId(answer.job)} cancelled on the cluster.`,
      at: Date.now()
    };
  }
  return {
    phase: 'ended',
    label: 'Not cancelled',
    result: answer.message ?? 'the job had already ended',
    at: Date.now()
  };
}

async function cancelFrom(button: HTMLButtonElement): Promise<void> {
  const target = targetOf(button);
  if (!target) {
    return;
  }
  const current = states.get(keyOf(target));
  if (current && current.phase !== 'failed') {
    return; // asked already: one request per job
  }
  remember(target, {
    phase: 'cancelling',
    label: 'Cancelling…',
    result: '',
    at: Date.now()
  });
  let state: ICancelState;
  try {
    state = outcome(await cancelJob(target.cluster, target));
  } catch (error) {
    state = {
      phase: 'failed',
      label: '',
      result: `Could not cancel: ${error instanceof Error ? error.message : String(error)}`,
      at: Date.now()
    };
  }
  remember(target, state);
}

function onClick(event: MouseEvent): void {
  if (!event.isTrusted || !(event.target instanceof Element)) {
    return; // a person's click only
  }
  const button = event.target.closest<HTMLButtonElement>(
    `button.${CANCEL_CLASS}`
  );
  if (!button || !button.closest(OUTPUT_SELECTOR) || button.disabled) {
    return;
  }
  if (!targetOf(button)) {
    return;
  }
  event.preventDefault();
  event.stopPropagation(); // the kernel's own handler (if any) would wait for the kernel
  void cancelFrom(button);
}

/** Listens for clicks on such buttons in the whole document; returns how to stop. */
export function installOutputCancel(): () => void {
  document.addEventListener('click', onClick, true);
  document.body.classList.add(BODY_CLASS);
  return () => {
    document.removeEventListener('click', onClick, true);
    document.body.classList.remove(BODY_CLASS);
  };
}
