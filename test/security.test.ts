/**
 * What the agent process gives away, with real secrets in its configuration: an OTLP API key and
 * bearer token (OTEL_EXPORTER_OTLP_HEADERS), a Kubernetes service-account token (K8S_TOKEN_FILE)
 * and secret-looking environment variables. Everything that can fail with them fails: the
 * collector rejects the headers (UNAUTHENTICATED), the kubelet and the API server answer 401.
 * Then, at LOG_LEVEL=debug:
 *   - /metrics, /healthz, /readyz, unknown paths, traversal attempts, wrong methods and garbage
 *     requests answer without any secret, stack trace, environment dump or file content;
 *   - no log line (stdout or stderr) carries a secret, in clear, base64 or %-encoded;
 *   - the process listens on the one documented port, and SIGUSR1 does not open the Node
 *     inspector (it would on a stock node process: 127.0.0.1:9229, on the node's network).
 * Root only (the agent attaches to a lab veth): skips loudly outside CI, fails under CI=true.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { test } from 'node:test';
import { AgentProcess, REPO_ROOT, sleep } from './lab/agent-process.js';
import { Lab } from './lab/lab.js';
import {
  FakeApiServer,
  FakeCluster,
  FakeKubelet,
  makeCertificate,
  writeKubeconfig,
  writeTokenFile,
} from './support/fake-k8s.js';
import { startOtlpReceiver } from './support/otlp-receiver.js';
import { requireRoot } from './support/root.js';

const NODE = 'node-1';

function secret(kind: string): string {
  return `${kind}-${randomBytes(16).toString('hex')}`;
}

/** Every spelling of a secret that could end up in output. */
function spellings(value: string): string[] {
  return [
    value,
    Buffer.from(value).toString('base64'),
    Buffer.from(value).toString('base64url'),
    encodeURIComponent(value),
    Buffer.from(value).toString('hex'),
    value.slice(-16), // a truncated copy still leaks
  ];
}

function leaks(text: string, secrets: readonly string[]): string[] {
  return secrets.flatMap((s) => spellings(s).filter((form) => text.includes(form)));
}

interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/** Sends `request` as it is (no URL normalisation), returns what came back until close. */
function rawHttp(port: number, request: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () =>
      socket.destroy(new Error(`no answer to ${request.slice(0, 40)}`)),
    );
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? text : text.slice(0, split);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: split < 0 ? '' : text.slice(split + 4) });
    });
    socket.write(request);
  });
}

function get(path: string, method = 'GET', extra = ''): string {
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${extra}Connection: close\r\n\r\n`;
}

/** Local ports of the TCP sockets `pid` listens on (its fds matched in /proc/<pid>/net/tcp*). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    const rows = readFileSync(`/proc/${pid}/net/${table}`, 'utf8').trim().split('\n').slice(1);
    for (const row of rows) {
      const f = row.trim().split(/\s+/);
      // local_address rem_address st ... inode: LISTEN is state 0A.
      if (f[3] === '0A' && inodes.has(f[9])) ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

/** Anything that looks like a JavaScript stack trace or a source path. */
const STACK_TRACE = /\bat [^\n]*\(?[^\n]*:\d+:\d+\)?|node:internal|dist\/src\/|\.js:\d+/;

test('no secret in HTTP answers or logs (LOG_LEVEL=debug, every credential rejected), one listening port, no inspector', async (t) => {
  if (!requireRoot(t)) return;
  const apiKey = secret('otlp-api-key');
  const bearer = secret('otlp-bearer');
  const saToken = secret('sa-token');
  const env = {
    AWS_SECRET_ACCESS_KEY: secret('aws'),
    DATABASE_PASSWORD: secret('db-password'),
    GITHUB_TOKEN: secret('gh'),
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: `x-trace-key=${secret('trace-key')}`,
  };
  const secrets = [
    apiKey,
    bearer,
    saToken,
    ...Object.values(env).map((v) => v.split('=').pop() ?? v),
  ];

  const lab = Lab.create({ pods: ['pod'] });
  t.after(() => lab.teardown());
  const cert = makeCertificate();
  t.after(() => cert.cleanup());
  const cluster = new FakeCluster();
  // Both servers expect another token: ours is answered 401 (and must still never be shown).
  const kubelet = new FakeKubelet(cluster, cert, 'the-right-token', NODE);
  const api = new FakeApiServer(cluster, cert, 'the-right-token');
  await kubelet.up();
  await api.up();
  t.after(() => kubelet.down());
  t.after(() => api.down());
  const tokenFile = writeTokenFile(cert.dir, saToken);
  const kubeconfig = writeKubeconfig(cert.dir, api.url, cert.certPath, tokenFile);
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  receiver.mode = 'unauthenticated';
  receiver.echoMetadata = true; // "invalid key <the key>", as some backends answer

  const lines: string[] = [];
  const agent = await AgentProcess.start({
    env: {
      ...env,
      INTERFACE: lab.interfaceGlob,
      LOG_LEVEL: 'debug',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${apiKey},authorization=Bearer%20${bearer}`,
      OTEL_METRIC_EXPORT_INTERVAL: '300',
      K8S_ENABLED: 'true',
      K8S_NODE_NAME: NODE,
      K8S_POD_SOURCE: 'auto',
      K8S_KUBELET_URL: kubelet.url,
      K8S_KUBELET_CA_FILE: cert.certPath,
      K8S_TOKEN_FILE: tokenFile,
      KUBECONFIG: kubeconfig,
    },
    onLine: (line, stream) => lines.push(`${stream}: ${line}`),
  });
  lab.track(agent.pid);
  t.after(() => agent.stop());
  const logText = (): string => lines.join('\n');

  // Every credential was used and rejected.
  const deadline = Date.now() + 15_000;
  const rejected = (): boolean =>
    receiver.attempts >= 2 &&
    kubelet.requests.some((r) => r.status === 401) &&
    api.requests.some((r) => r.status === 401) &&
    /API server rejected the credentials \(HTTP 401\)/.test(logText()) &&
    /OTLP export failed/.test(logText());
  while (!rejected() && Date.now() < deadline) await sleep(100);
  assert.ok(rejected(), `not every credential was tried and rejected; log:\n${logText()}`);
  assert.equal(receiver.attemptMetadata[0]?.['x-api-key'], apiKey, 'the header was really sent');
  assert.equal(receiver.attemptMetadata[0]?.authorization, `Bearer ${bearer}`);
  assert.match(logText(), /UNAUTHENTICATED/);
  assert.match(logText(), /kubelet rejected the service-account token \(HTTP 401\)/);
  assert.match(logText(), /"headerNames":\["authorization","x-api-key"\]/, 'names only');

  // The HTTP surface.
  const probes: [string, string, number][] = [
    ['/metrics', get('/metrics'), 200],
    ['/healthz', get('/healthz'), 200],
    ['/readyz', get('/readyz'), 200],
    ['HEAD /metrics', get('/metrics', 'HEAD'), 200],
    ['POST /metrics', get('/metrics', 'POST', 'Content-Length: 0\r\n'), 405],
    ['/', get('/'), 404],
    ['/env', get('/env'), 404],
    ['/debug/pprof', get('/debug/pprof/'), 404],
    ['/json (inspector)', get('/json/list'), 404],
    ['traversal', get('/../../../../etc/passwd'), 404],
    ['encoded traversal', get('/%2e%2e/%2e%2e/etc/passwd'), 404],
    ['token file', get(`/..${tokenFile}`), 404],
    ['query', get('/metrics?name[]=<script>&debug=1'), 200],
    ['absolute URL', get('http://evil.example/metrics'), 200],
    ['long path', get(`/${'a'.repeat(8000)}`), 404],
  ];
  for (const [name, request, status] of probes) {
    const res = await rawHttp(agent.port, request);
    assert.equal(res.status, status, `${name}: ${res.head}`);
    const all = `${res.head}\n${res.body}`;
    assert.deepEqual(leaks(all, secrets), [], `${name} leaks a secret`);
    assert.doesNotMatch(all, STACK_TRACE, `${name}: stack trace or path`);
    assert.ok(!all.includes(REPO_ROOT), `${name}: the agent's install path`);
    assert.doesNotMatch(all, /root:x:0:0|PATH=|AWS_SECRET|DATABASE_PASSWORD|GITHUB_TOKEN/);
    assert.ok(!all.includes(saToken) && !all.includes(tokenFile), `${name}: token file`);
  }
  // Garbage and oversized requests only end their own connection.
  for (const garbage of [
    'GARBAGE\r\n\r\n',
    `GET /metrics HTTP/1.1\r\nX: ${'b'.repeat(20_000)}\r\n\r\n`,
  ]) {
    const res = await rawHttp(agent.port, garbage);
    assert.deepEqual(leaks(`${res.head}${res.body}`, secrets), []);
    assert.doesNotMatch(res.body, STACK_TRACE);
  }
  assert.equal((await fetch(`${agent.baseUrl}/healthz`)).status, 200, 'still serving');

  // One listening socket: the metrics port. SIGUSR1 must not add the inspector's.
  assert.deepEqual(listeningPorts(agent.pid), [agent.port]);
  assert.doesNotMatch(readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8'), /--inspect/);
  process.kill(agent.pid, 'SIGUSR1');
  await sleep(500);
  assert.equal(agent.running, true, 'SIGUSR1 does not stop the agent');
  assert.deepEqual(listeningPorts(agent.pid), [agent.port], 'SIGUSR1 opened a port');
  assert.doesNotMatch(logText(), /Debugger listening/);

  // Logs, all of them (debug level, every failure path taken), then stopped: the shutdown's
  // final failing flush is logged too.
  assert.ok(lines.some((l) => l.includes('"level":"debug"') || l.includes('"logLevel":"debug"')));
  const exit = await agent.stop();
  assert.equal(exit.code, 0, logText());
  assert.deepEqual(leaks(logText(), secrets), [], `secrets in the log:\n${logText()}`);
  t.diagnostic(`${lines.length} log lines checked:\n${logText()}`);
});
