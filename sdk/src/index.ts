/**
 * @keel/sdk — the typed client for Keel's HTTP API. For now it covers the operations routes; each
 * capability issue adds its calls here, typed from the OpenAPI document (docs/openapi.json).
 */
export interface KeelError {
  code: string;
  message: string;
  type: string;
  request_id: string;
  details?: Array<{ field?: string; message: string }>;
}

export class KeelApiError extends Error {
  constructor(readonly status: number, readonly error: KeelError) {
    super(error.message);
    this.name = 'KeelApiError';
  }
}

export interface Health {
  status: 'ok';
  version: string;
  uptime_s: number;
}

export interface ClientOptions {
  baseUrl: string;
  /** An access token or API key, sent as `Authorization: Bearer`. */
  token?: string;
  fetch?: typeof fetch;
}

export function createClient(options: ClientOptions) {
  const doFetch = options.fetch ?? fetch;
  const base = options.baseUrl.replace(/\/+$/, '');
  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await doFetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const data: unknown = res.status === 204 ? undefined : await res.json();
    if (!res.ok) throw new KeelApiError(res.status, (data as { error: KeelError }).error);
    return data as T;
  }
  return {
    health: () => call<Health>('GET', '/health'),
  };
}
