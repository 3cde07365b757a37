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

export interface IJob {
  service: string;
  job: string;
  node: string | null;
  /** Succeeded/Failed follow the cell's exit status, not OSCAR's pod phase. */
  status: string;
  exit_code: number | null;
  creation_time: string | null;
  start_time: string | null;
  finish_time: string | null;
}

export interface IJobs {
  cluster: string;
  jobs: IJob[];
}

export interface ILogLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface IJobLog {
  service: string;
  job: string;
  lines: ILogLine[];
  omitted: number;
  exit_code: number | null;
  node: string | null;
  traceback: string | null;
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
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.baseUrl, API_ROOT, path);
  if (cluster) {
    url += '?' + new URLSearchParams({ cluster }).toString();
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

function jobPath(job: IJob): string {
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

export function fetchJobs(cluster: string | null): Promise<IJobs> {
  return request<IJobs>('jobs', cluster);
}

export function cancelJob(cluster: string | null, job: IJob): Promise<unknown> {
  return request(jobPath(job), cluster, { method: 'DELETE' });
}

export function fetchJobLog(cluster: string | null, job: IJob): Promise<IJobLog> {
  return request<IJobLog>(URLExt.join(jobPath(job), 'log'), cluster);
}
