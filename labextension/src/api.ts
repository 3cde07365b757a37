/**
 * The server extension's REST API (oscar_jupyter/server/handlers.py), typed.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_ROOT = 'oscar-jupyter/api';

export interface IClusterEntry {
  name: string;
  endpoint: string | null;
  auth?: string;
  error: string | null;
}

export interface IClusters {
  config_path: string;
  clusters: IClusterEntry[];
  default: string | null;
}

export interface IVirtualNode {
  name: string;
  status: string;
  cpu_total: number;
  cpu_free: number;
  memory_total_bytes: number;
  memory_free_bytes: number;
  gpus: number;
  is_interlink: boolean;
  /** Where these facts came from: OSCAR, Kubernetes or profile. */
  source: string;
  /** Why a node is not Ready (its condition), when known. */
  reason: string;
}

export interface INodes {
  cluster: string;
  /** The source that listed the interLink nodes; null when none did (then `warning` says why). */
  source: string | null;
  warning: string | null;
  nodes: IVirtualNode[];
}

/** What the job ran: notebook, cell and first code line, as far as the server knows them. */
export interface IJobLabel {
  /** The notebook's path relative to the Jupyter root, when known. */
  notebook: string | null;
  /** JupyterLab's cell id (the execute request's metadata.cellId). */
  cell_id: string | null;
  execution_count: number | null;
  first_line: string | null;
  /** "nb.ipynb · [3] · train(...)", or the job id when nothing is known. */
  text: string;
}

/** What a job used, measured by the runner on the cluster (oscar_jupyter/usage.py). */
export interface IUsage {
  wall_seconds: number;
  cpu_seconds: number;
  /** Bytes: the largest process's peak RSS. */
  peak_memory: number;
  gpu_memory: number | null;
  /** "wall 00:03:05 of 02:00:00 · CPU 00:02:10 (0.7 of 1 CPU on average) · peak 312.4 MiB of
   * 8G", as every view words it. */
  text: string;
  /** One line when the request was nearly exceeded or far too large; null when it fitted. */
  hint: string | null;
}

/** What a job asked for: --cpus-per-task, --mem and --time as written (null: the default). */
export interface IRequest {
  cpus: number;
  mem: string | null;
  time: string | null;
}

export interface IJob {
  service: string;
  job: string;
  /** The kernel tag of the job name, when it has one. */
  kernel?: string | null;
  node: string | null;
  /** Succeeded/Failed follow the cell's exit status, not OSCAR's pod phase. */
  status: string;
  exit_code: number | null;
  creation_time: string | null;
  start_time: string | null;
  finish_time: string | null;
  /** When the runner itself started the cell (its start line), when the log was read. */
  runner_start?: string | null;
  /** When it was submitted (this machine's record, else OSCAR's creation time): what "newest
   * first" sorts by in every view, whatever the queue did. */
  submitted_time?: string | null;
  /** Seconds run as every view counts them (runner start to the job's end, or to the listing's
   * time while it runs); null before the runner started. */
  duration?: number | null;
  /** In a runner service that the profile's user owns. */
  mine?: boolean;
  label?: IJobLabel;
  /** Who cancelled it: "this kernel", "the sidebar", "Slurm (scancel)", ... */
  cancelled_by?: string | null;
  /** Kept from the local job records: OSCAR no longer lists it. */
  recorded?: boolean;
  /** Once it has ended: what it used (null when the runner did not say). */
  usage?: IUsage | null;
  request?: IRequest | null;
  /** Cores asked for × wall time, in hours. */
  core_hours?: number;
}

export type JobScope = 'mine' | 'all';

/** The cluster (profile) the notebook's kernel last connected as (`%oscar_connect`). */
export interface IConnection {
  notebook: string;
  /** null: the notebook's kernel noted no connection (not connected yet). */
  cluster: string | null;
  connected_at: string | null;
  /** The cluster is a profile of this server's oscar-cli config (the picker can show it). */
  profile: boolean;
}

export interface ICancelAnswer {
  cluster: string;
  service: string;
  job: string;
  /** false: the job had ended before the cancel arrived (`message` says how). */
  cancelled: boolean;
  message?: string;
}

export interface IJobs {
  cluster: string;
  refreshed_at?: string;
  refresh_seconds?: number;
  jobs: IJob[];
}

export interface ILogLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface IJobLog {
  service: string;
  job: string;
  cluster?: string;
  /** Complete lines from `since` on. */
  lines: ILogLine[];
  /** Complete lines so far: the next request's `since`. */
  next: number;
  /** A line not ended yet (a \r progress bar), as a terminal shows it now, per stream. */
  partial?: { stdout?: string; stderr?: string };
  status?: string;
  exit_code: number | null;
  cancelled_by?: string | null;
  /** The run time as the job list has it (null when the list has not seen the job yet). */
  runner_start?: string | null;
  duration?: number | null;
  finished?: boolean;
  node: string | null;
  traceback: string | null;
  omitted: number;
}

export interface ICleanup {
  count: number;
  jobs?: string[];
  deleted?: string[];
}

export interface ICleanupRequest {
  /** notebook: its finished jobs; mine: all the user's; jobs: the finished ones of `jobs`. */
  scope: 'notebook' | 'mine' | 'jobs';
  notebook: string | null;
  jobs?: string[];
  dry_run: boolean;
}

/** A persistent session (%oscar_session) of the cluster's user, from any of their kernels. */
export interface ISession {
  name: string;
  /** starting (queued), loading, idle, busy (a cell runs) or ended */
  state: string;
  node: string | null;
  /** Seconds until its walltime; null: no walltime. */
  time_left: number | null;
  /** Seconds since its last cell ended, while idle; null otherwise. */
  idle: number | null;
  cells: number;
  service: string;
  job: string;
  /** The tag of the kernel that started it. */
  kernel: string;
  /** Why it ended (and how to start it again), once ended. */
  ended: string | null;
}

export interface ISessions {
  cluster: string;
  sessions: ISession[];
  /** Why no session can be listed (the cluster offers this user no object storage). */
  note: string | null;
}

export interface IStopSession {
  cluster: string;
  name: string;
  job: string;
  stopped: boolean;
}

/** An error answered by the server extension, or the server extension missing altogether. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

const MISSING_EXTENSION =
  'The oscar-jupyter server extension does not answer. Enable it with ' +
  '`jupyter server extension enable oscar_jupyter.server` and restart JupyterLab.';

async function request<T>(
  path: string,
  cluster: string | null,
  init: RequestInit = {},
  query: Record<string, string> = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.baseUrl, API_ROOT, path);
  const args = new URLSearchParams(query);
  if (cluster) {
    args.set('cluster', cluster);
  }
  if (args.toString()) {
    url += '?' + args.toString();
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ApiError(`Cannot reach the Jupyter server: ${error}`, 0);
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message =
      body && typeof body.message === 'string'
        ? body.message
        : response.status === 404
          ? MISSING_EXTENSION
          : `The Jupyter server answered ${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  if (body === null) {
    throw new ApiError(MISSING_EXTENSION, response.status);
  }
  return body as T;
}

function jobPath(job: { service: string; job: string }): string {
  return URLExt.join(
    'jobs',
    encodeURIComponent(job.service),
    encodeURIComponent(job.job)
  );
}

export function fetchClusters(): Promise<IClusters> {
  return request<IClusters>('clusters', null);
}

export function fetchNodes(cluster: string | null): Promise<INodes> {
  return request<INodes>('nodes', cluster);
}

export function fetchJobs(
  cluster: string | null,
  scope: JobScope
): Promise<IJobs> {
  return request<IJobs>('jobs', cluster, {}, { scope });
}

export function cancelJob(
  cluster: string | null,
  job: { service: string; job: string }
): Promise<ICancelAnswer> {
  return request<ICancelAnswer>(jobPath(job), cluster, { method: 'DELETE' });
}

/** The cluster the kernel of `notebook` (relative to the Jupyter root) connected as. */
export function fetchConnection(notebook: string): Promise<IConnection> {
  return request<IConnection>('connection', null, {}, { notebook });
}

/** The log from complete line `since` on (0: from the start). */
export function fetchJobLog(
  cluster: string | null,
  job: IJob,
  since = 0
): Promise<IJobLog> {
  return request<IJobLog>(
    URLExt.join(jobPath(job), 'log'),
    cluster,
    {},
    {
      since: String(since)
    }
  );
}

export function cleanupJobs(
  cluster: string | null,
  body: ICleanupRequest
): Promise<ICleanup> {
  return request<ICleanup>('cleanup', cluster, {
    method: 'POST',
    body: JSON.stringify(body)
  });
}

/** The persistent sessions of the cluster's user (all their kernels, or those the Jupyter kernel
 * `kernelId` started). */
export function fetchSessions(
  cluster: string | null,
  kernelId?: string
): Promise<ISessions> {
  return request<ISessions>(
    'sessions',
    cluster,
    {},
    kernelId ? { kernel: kernelId } : {}
  );
}

/** Stops the session whose job is `job`, as `%oscar_session stop` does. */
export function stopSession(
  cluster: string | null,
  job: string
): Promise<IStopSession> {
  return request<IStopSession>(
    URLExt.join('sessions', encodeURIComponent(job)),
    cluster,
    { method: 'DELETE' }
  );
}
