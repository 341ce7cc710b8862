/** The server extension's REST API (remote_kernels/serverext/handlers.py). */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One remote kernel, as remote_kernels/serverext/overview.py make_view() describes it. */
export interface KernelView {
  kernel_id: string;
  session_id: string;
  spec: string;
  scheduler: string;
  job_id: string | null;
  node: string | null;
  state: string;
  phase: string;
  job_state: string;
  reason: string;
  start_time: string | null;
  time_left: string;
  time_left_seconds: number | null;
  warn_before: number;
  warn: boolean;
  pending: boolean;
  ended_reason: string;
  log_file: string;
  server: string;
  notebook: string | null;
  known: boolean;
  started: number | null;
  owner_pid: number;
  owner_host: string;
  summary: string;
}

async function request(path: string, init: RequestInit = {}): Promise<any> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'remote-kernels', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new Error(body.message || body.reason || `${response.status} ${response.statusText}`);
  }
  return body;
}

export async function listKernels(): Promise<KernelView[]> {
  return (await request('kernels')).kernels as KernelView[];
}

/** Cancel the job of (or shut down, or warn) a kernel; the server's one-line answer. */
export async function act(ident: string, action: 'cancel' | 'shutdown' | 'warn'): Promise<string> {
  return (await request(`kernels/${encodeURIComponent(ident)}/${action}`, { method: 'POST' })).message as string;
}

/** A spec's choosable resources (remote_kernels/serverext/launch.py): bounds per field and the
 * spec's own values ("" or 0: the scheduler's default). */
export interface SpecChoices {
  spec: string;
  choices: { [field: string]: { min?: string | number; max?: string | number; choices?: string[] } };
  defaults: { [field: string]: string | number };
}

/** A choice: field -> value. */
export type Resources = { [field: string]: string | number };

export async function specChoices(spec: string): Promise<SpecChoices> {
  return (await request(`specs/${encodeURIComponent(spec)}/choices`)) as SpecChoices;
}

/** The server's check of a choice: the option values it gives, or an Error with the bound it breaks. */
export async function checkChoice(spec: string, resources: Resources): Promise<Resources> {
  const body = await request(`specs/${encodeURIComponent(spec)}/choices`, {
    method: 'POST',
    body: JSON.stringify({ resources })
  });
  return body.resources as Resources;
}
