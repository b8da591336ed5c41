/**
 * The kubelet and API server sources against fake servers over real HTTPS sockets.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, type Logger } from '../src/log.js';
import { ApiServerSource } from '../src/k8s/apiserver-source.js';
import { KubeletSource } from '../src/k8s/kubelet-source.js';
import { PodCache, PodSourceSwitch } from '../src/k8s/pod-cache.js';
import {
  FakeApiServer,
  FakeCluster,
  FakeKubelet,
  makeCertificate,
  makePod,
  type PodJson,
  type TestCertificate,
  writeKubeconfig,
  writeTokenFile,
} from './support/fake-k8s.js';

const NODE = 'node-a';
const TOKEN = 'good-token';
const FAST = { initialMs: 50, maxMs: 400 };

let cert: TestCertificate;
let otherCert: TestCertificate;

before(() => {
  cert = makeCertificate();
  otherCert = makeCertificate('someone-else');
});

after(() => {
  cert.cleanup();
  otherCert.cleanup();
});

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = createLogger('debug', { write: (l) => lines.push(JSON.parse(l) as LogLine) });
  return { log, lines };
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Rig {
  cluster: FakeCluster;
  kubelet: FakeKubelet;
  api: FakeApiServer;
  tokenFile: string;
  kubeconfig: string;
  cache: PodCache;
  changes: string[][];
  log: Logger;
  lines: LogLine[];
  kubeletSource(overrides?: Partial<ConstructorParameters<typeof KubeletSource>[0]>): KubeletSource;
  apiSource(): ApiServerSource;
  close(): Promise<void>;
}

async function rig(): Promise<Rig> {
  const cluster = new FakeCluster();
  const kubelet = new FakeKubelet(cluster, cert, TOKEN, NODE);
  const api = new FakeApiServer(cluster, cert, TOKEN);
  await kubelet.up();
  await api.up();
  const tokenFile = writeTokenFile(cert.dir, TOKEN, `token-${kubelet.port}`);
  const kubeconfig = writeKubeconfig(cert.dir, api.url, cert.certPath, tokenFile);
  const { log, lines } = captureLog();
  const cache = new PodCache({ log });
  const changes: string[][] = [];
  cache.onChange((ips) => changes.push([...ips].sort()));
  const sources: { stop(): Promise<void> }[] = [];
  return {
    cluster,
    kubelet,
    api,
    tokenFile,
    kubeconfig,
    cache,
    changes,
    log,
    lines,
    kubeletSource(overrides = {}) {
      const s = new KubeletSource({
        url: kubelet.url,
        nodeName: NODE,
        tokenFile,
        caFile: cert.certPath,
        pollIntervalMs: 50,
        backoff: FAST,
        log,
        ...overrides,
      });
      sources.push(s);
      return s;
    },
    apiSource() {
      const s = new ApiServerSource({
        nodeName: NODE,
        loadConfig: () => {
          const kc = new KubeConfig();
          kc.loadFromFile(kubeconfig);
          return kc;
        },
        backoff: FAST,
        log,
      });
      sources.push(s);
      return s;
    },
    async close() {
      await Promise.all(sources.map((s) => s.stop()));
      await kubelet.down();
      await api.down();
    },
  };
}

/** A sink that writes straight into the cache, for one source on its own. */
function direct(cache: PodCache, failures: string[] = []) {
  return {
    snapshot: (pods: Parameters<PodCache['replaceAll']>[0]) => cache.replaceAll(pods),
    upsert: (pod: Parameters<PodCache['upsert']>[0]) => cache.upsert(pod),
    remove: (uid: string) => cache.remove(uid),
    removeByName: (ns: string, name: string) => cache.removeByName(ns, name),
    failed: (reason: string) => failures.push(reason),
  };
}

function pod(
  name: string,
  ip: string,
  extra: Partial<Parameters<typeof makePod>[0]> = {},
): PodJson {
  return makePod({ name, namespace: 'voice', node: NODE, ip, ...extra });
}

test('kubelet: list over HTTPS, then polling follows adds, deletes and IP reuse', async () => {
  const r = await rig();
  try {
    const a = r.cluster.add(pod('a', '10.1.0.1', { owner: { kind: 'StatefulSet', name: 'sbc' } }));
    r.cluster.add(pod('elsewhere', '10.1.9.9', { node: 'node-b' }));
    const source = r.kubeletSource();
    source.start(direct(r.cache));
    await waitFor('first poll', () => r.cache.byIp('10.1.0.1') !== undefined);
    assert.equal(r.cache.byIp('10.1.0.1')?.name, 'a');
    assert.deepEqual(r.cache.byIp('10.1.0.1')?.workload, { kind: 'StatefulSet', name: 'sbc' });
    assert.equal(r.cache.byIp('10.1.9.9'), undefined, 'the kubelet serves only its node');

    r.cluster.delete(a.metadata.uid);
    const b = r.cluster.add(pod('b', '10.1.0.1'));
    await waitFor('IP taken by b', () => r.cache.byIp('10.1.0.1')?.name === 'b');
    assert.equal(r.cache.byUid(a.metadata.uid), undefined);
    assert.equal(r.cache.byUid(b.metadata.uid)?.name, 'b');
    assert.ok(r.changes.some((c) => c.includes('10.1.0.1')));
    const okLines = r.lines.filter((l) => l.level === 'error');
    assert.deepEqual(okLines, []);
    assert.ok(r.kubelet.requests.every((q) => q.path === '/pods' && q.status === 200));
  } finally {
    await r.close();
  }
});

test('API server: list, then watch ADDED/MODIFIED/DELETED and IP reuse by a new pod', async () => {
  const r = await rig();
  try {
    const a = r.cluster.add(pod('a', '10.2.0.1'));
    const source = r.apiSource();
    source.start(direct(r.cache));
    await waitFor('list', () => r.cache.byIp('10.2.0.1') !== undefined);
    await waitFor('watch open', () => r.cluster.watchers.size === 1);
    const watchReq = r.api.requests.find((q) => q.path.includes('watch=true'));
    assert.ok(watchReq !== undefined);
    const q = new URL(watchReq.path, 'https://x').searchParams;
    assert.equal(q.get('fieldSelector'), `spec.nodeName=${NODE}`);
    assert.equal(q.get('resourceVersion'), String(r.cluster.resourceVersion));

    const b = r.cluster.add(pod('b', '10.2.0.2'));
    await waitFor('ADDED b', () => r.cache.byIp('10.2.0.2')?.name === 'b');

    // MODIFIED: b gets a second (IPv6) address.
    const b2 = structuredClone(b);
    (b2.status as { podIPs: { ip: string }[] }).podIPs.push({ ip: 'fd00::22' });
    r.cluster.modify(b2);
    await waitFor('MODIFIED b', () => r.cache.byIp('fd00::22')?.name === 'b');

    // The old pod starts terminating, a new pod gets its IP, then the old one is deleted.
    const aTerm = structuredClone(a);
    aTerm.metadata.deletionTimestamp = new Date().toISOString();
    r.cluster.modify(aTerm);
    const c = r.cluster.add(pod('c', '10.2.0.1'));
    await waitFor('new pod owns the IP', () => r.cache.byIp('10.2.0.1')?.name === 'c');
    r.cluster.delete(a.metadata.uid);
    await waitFor('DELETED a', () => r.cache.byUid(a.metadata.uid) === undefined);
    assert.equal(r.cache.byIp('10.2.0.1')?.name, 'c');

    // Plain delete: the IP is unlabelled at once.
    r.cluster.delete(c.metadata.uid);
    await waitFor('DELETED c', () => r.cache.byIp('10.2.0.1') === undefined);

    // A pod on another node never reaches us (field selector).
    r.cluster.add(pod('other', '10.2.9.9', { node: 'node-b' }));
    r.cluster.add(pod('d', '10.2.0.4'));
    await waitFor('ADDED d', () => r.cache.byIp('10.2.0.4') !== undefined);
    assert.equal(r.cache.byIp('10.2.9.9'), undefined);
    assert.equal(source.listCount, 1, 'no re-list while the watch is healthy');
  } finally {
    await r.close();
  }
});

test('API server: 410 Expired on the watch -> re-list (a deletion lost in the gap is seen)', async () => {
  const r = await rig();
  try {
    const a = r.cluster.add(pod('a', '10.3.0.1'));
    r.cluster.add(pod('b', '10.3.0.2'));
    const source = r.apiSource();
    source.start(direct(r.cache));
    await waitFor('watch open', () => r.cluster.watchers.size === 1);
    assert.equal(r.cache.size, 2);

    // a disappears with no event reaching us, then history is compacted: ERROR 410.
    r.cluster.silently((pods) => pods.delete(a.metadata.uid));
    r.cluster.compact();
    await waitFor('re-list', () => source.listCount === 2);
    await waitFor('a gone', () => r.cache.byIp('10.3.0.1') === undefined);
    assert.equal(r.cache.byIp('10.3.0.2')?.name, 'b');
    assert.ok(r.lines.some((l) => l.msg.includes('410')));

    // A clean end of the stream (server timeout) resumes from the last RV without a re-list,
    // and events that happen while no watch is open are replayed.
    await waitFor('watch open again', () => r.cluster.watchers.size === 1);
    r.cluster.endWatches();
    r.cluster.add(pod('c', '10.3.0.3'));
    await waitFor('c via replay', () => r.cache.byIp('10.3.0.3')?.name === 'c');
    r.cluster.bookmark();
    assert.equal(source.listCount, 2);

    // The API server restarts with its history compacted: the watch resumed from the old
    // resourceVersion gets 200 + ERROR 410 Expired, and the source re-lists.
    await r.api.down();
    r.cluster.silently((pods) => pods.clear());
    r.cluster.compact();
    await r.api.up();
    await waitFor('re-list after restart', () => source.listCount === 3, 8000);
    await waitFor('cache emptied', () => r.cache.size === 0);

    const t0 = Date.now();
    await source.stop();
    assert.ok(Date.now() - t0 < 1000, 'stop() does not wait for the watch to time out');
  } finally {
    await r.close();
  }
});

test('kubelet down -> API server fallback; kubelet back -> kubelet again', async () => {
  const r = await rig();
  try {
    r.cluster.add(pod('a', '10.4.0.1'));
    const kubelet = r.kubeletSource();
    const api = r.apiSource();
    const sw = new PodSourceSwitch({
      cache: r.cache,
      primary: kubelet,
      fallback: api,
      log: r.log,
      successesBeforeReturn: 2,
    });
    sw.start();
    await waitFor('kubelet list', () => r.cache.byIp('10.4.0.1') !== undefined);
    assert.equal(sw.activeSource, 'kubelet');
    assert.equal(r.api.requests.length, 0, 'API server untouched while the kubelet answers');

    await r.kubelet.down();
    await waitFor('fallback', () => sw.activeSource === 'apiserver');
    await waitFor('API server watch', () => r.cluster.watchers.size === 1);
    // Changes now arrive through the API server watch.
    r.cluster.add(pod('b', '10.4.0.2'));
    await waitFor('b via API server', () => r.cache.byIp('10.4.0.2')?.name === 'b');
    assert.ok(r.lines.some((l) => l.level === 'warn' && l.msg.includes('falling back')));

    await r.kubelet.up();
    await waitFor('back to kubelet', () => sw.activeSource === 'kubelet');
    await waitFor('API watch closed', () => r.cluster.watchers.size === 0);
    r.cluster.add(pod('c', '10.4.0.3'));
    await waitFor('c via kubelet', () => r.cache.byIp('10.4.0.3')?.name === 'c');
    await sw.stop();
  } finally {
    await r.close();
  }
});

test('kubelet: 401 -> one clear log line naming the token file, backoff, recovery', async () => {
  const r = await rig();
  try {
    r.cluster.add(pod('a', '10.5.0.1'));
    writeFileSync(r.tokenFile, 'stale-token\n');
    const failures: string[] = [];
    const source = r.kubeletSource();
    source.start(direct(r.cache, failures));
    await waitFor('four rejected requests', () => r.kubelet.requests.length >= 4);
    const authLines = r.lines.filter((l) => l.level === 'error');
    assert.equal(authLines.length, 1, 'one line for the whole failure streak');
    assert.match(authLines[0].msg, /401/);
    assert.ok(authLines[0].msg.includes(r.tokenFile), 'names the token path');
    assert.ok(r.kubelet.requests.every((q) => q.status === 401));
    // Exponential backoff: the gaps between retries grow.
    const at = r.kubelet.requests.map((q) => q.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]);
    assert.ok(gaps[2] > gaps[0], `gaps grow: ${gaps.join(', ')}`);
    assert.ok(failures.length >= 3);
    assert.equal(r.cache.size, 0);

    writeFileSync(r.tokenFile, TOKEN + '\n');
    await waitFor('recovery', () => r.cache.byIp('10.5.0.1') !== undefined, 8000);
    assert.equal(r.lines.filter((l) => l.level === 'error').length, 1);
  } finally {
    await r.close();
  }
});

test('API server: 401 -> clear log line, backoff, recovery when the token is fixed', async () => {
  const r = await rig();
  try {
    r.cluster.add(pod('a', '10.6.0.1'));
    writeFileSync(r.tokenFile, 'stale-token\n');
    const source = r.apiSource();
    source.start(direct(r.cache));
    await waitFor('three rejected lists', () => r.api.requests.length >= 3);
    const errors = r.lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].msg, /401/);
    assert.ok(errors[0].msg.includes(r.tokenFile));
    writeFileSync(r.tokenFile, TOKEN + '\n');
    await waitFor('recovery', () => r.cache.byIp('10.6.0.1') !== undefined, 8000);
    await waitFor('watch open', () => r.cluster.watchers.size === 1);
  } finally {
    await r.close();
  }
});

test('malformed PodList items and watch events are ignored without a crash', async () => {
  const r = await rig();
  try {
    r.cluster.add(pod('good', '10.7.0.1'));
    const hugeLabels: Record<string, string> = {};
    for (let i = 0; i < 500; i++) hugeLabels[`l${i}`] = 'x'.repeat(2000);
    r.cluster.rawItems = [
      null,
      'pod',
      { metadata: { name: 'no-uid', namespace: 'voice' }, status: { podIP: '10.7.0.2' } },
      { metadata: { name: 7, namespace: [], uid: {} } },
      { metadata: { name: 'typed', namespace: 'voice', uid: 'u-typed' }, spec: 5, status: 'x' },
      makePod({ name: 'huge', namespace: 'voice', node: NODE, ip: '10.7.0.3', labels: hugeLabels }),
    ];
    const kubelet = r.kubeletSource();
    kubelet.start(direct(r.cache));
    await waitFor('kubelet list', () => r.cache.byIp('10.7.0.1') !== undefined);
    assert.equal(r.cache.byIp('10.7.0.3')?.name, 'huge');
    assert.equal(r.cache.byIp('10.7.0.2'), undefined);
    assert.equal(r.cache.size, 2);
    await kubelet.stop();

    const cache2 = new PodCache();
    const api = r.apiSource();
    api.start(direct(cache2));
    await waitFor('watch open', () => r.cluster.watchers.size === 1);
    assert.equal(cache2.size, 2);
    r.cluster.rawWatchLine('{not json');
    r.cluster.rawWatchLine(JSON.stringify({ type: 'ADDED', object: { metadata: 'x' } }));
    r.cluster.rawWatchLine(JSON.stringify({ type: 'MODIFIED', object: null }));
    r.cluster.rawWatchLine(JSON.stringify({ type: 'DELETED', object: 42 }));
    r.cluster.rawWatchLine(JSON.stringify({ type: 'SOMETHING', object: {} }));
    r.cluster.add(pod('after', '10.7.0.4'));
    await waitFor('watch still works', () => cache2.byIp('10.7.0.4') !== undefined);
    assert.equal(cache2.size, 3);
    assert.equal(api.listCount, 1);
    assert.ok(r.lines.some((l) => l.msg.includes('malformed')));
  } finally {
    await r.close();
  }
});

test('kubelet TLS: an untrusted certificate fails; the insecure switch accepts it', async () => {
  const r = await rig();
  try {
    r.cluster.add(pod('a', '10.8.0.1'));
    const failures: string[] = [];
    const strict = r.kubeletSource({ caFile: otherCert.certPath });
    strict.start(direct(r.cache, failures));
    await waitFor('TLS failure', () => failures.length >= 1);
    assert.equal(r.cache.size, 0);
    assert.ok(r.lines.some((l) => l.level === 'warn' && String(l.error).includes('certificate')));
    await strict.stop();

    const insecure = r.kubeletSource({ caFile: '/nonexistent/ca.crt', insecure: true });
    insecure.start(direct(r.cache));
    await waitFor('insecure list', () => r.cache.byIp('10.8.0.1') !== undefined);
  } finally {
    await r.close();
  }
});

test('a dead API server degrades: logged rate-limited, retried, never thrown', async () => {
  const r = await rig();
  try {
    await r.api.down();
    const failures: string[] = [];
    const source = r.apiSource();
    source.start(direct(r.cache, failures));
    await waitFor('several failures', () => failures.length >= 4);
    const warns = r.lines.filter((l) => l.level === 'warn');
    assert.equal(warns.length, 1, 'rate-limited to one line');
    await r.api.up();
    r.cluster.add(pod('a', '10.9.0.1'));
    await waitFor('recovered', () => r.cache.byIp('10.9.0.1') !== undefined, 8000);
  } finally {
    await r.close();
  }
});
