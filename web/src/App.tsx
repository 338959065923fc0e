import { useEffect, useState } from 'react';

interface Health {
  status: string;
  version: string;
  uptime_s: number;
}

/** The console's placeholder: shows that the API answers; chat, knowledge, usage and admin come with their issues. */
export function App() {
  const [health, setHealth] = useState<Health | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    fetch('/health')
      .then(async (res) => (res.ok ? setHealth((await res.json()) as Health) : setError(`HTTP ${res.status}`)))
      .catch((err: unknown) => setError(String(err)));
  }, []);

  return (
    <main style={{ fontFamily: 'system-ui, sans-serif', maxWidth: 640, margin: '4rem auto', padding: '0 1rem' }}>
      <h1>Keel</h1>
      <p>The self-hosted backend for AI apps. The console is on its way.</p>
      <p data-testid="api-status">
        {health ? `API ${health.status} · version ${health.version} · up ${health.uptime_s}s` : error ? `API unreachable: ${error}` : 'Checking the API…'}
      </p>
      <p>
        <a href="/docs">API documentation</a> · <a href="/metrics">metrics</a>
      </p>
    </main>
  );
}
