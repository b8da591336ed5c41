import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EndpointTable } from '../src/endpoints.js';
import { createLogger } from '../src/log.js';
import { PodCache, parsePod, parsePodList, type PodIdentity } from '../src/k8s/pod-cache.js';
import { deploymentOfReplicaSet, workloadFromOwners } from '../src/k8s/workload.js';
import { makePod, type PodSpecInput } from './support/fake-k8s.js';

const NODE = 'node-a';

function identity(input: Omit<PodSpecInput, 'node'> & { node?: string }): PodIdentity {
  const r = parsePod(makePod({ node: NODE, ...input }));
  assert.ok(r.ok, `fixture pod must parse: ${r.ok ? '' : r.reason}`);
  return r.pod;
}

function recorder(cache: PodCache): string[][] {
  const calls: string[][] = [];
  cache.onChange((ips) => calls.push([...ips].sort()));
  return calls;
}

test('parsePod reads a real-shaped pod', () => {
  const raw = makePod({
    name: 'web-7d4b9c8f5d-x2x9q',
    namespace: 'media',
    node: NODE,
    ip: '10.244.1.7',
    extraIps: ['fd00:0:0::0007'],
    owner: { kind: 'ReplicaSet', name: 'web-7d4b9c8f5d' },
    labels: { 'pod-template-hash': '7d4b9c8f5d' },
    containers: 2,
  });
  const r = parsePod(raw);
  assert.ok(r.ok);
  const pod = r.pod;
  assert.equal(pod.name, 'web-7d4b9c8f5d-x2x9q');
  assert.equal(pod.namespace, 'media');
  assert.equal(pod.uid, raw.metadata.uid);
  assert.deepEqual(pod.workload, { kind: 'Deployment', name: 'web' });
  // IPv6 is stored in the canonical form the endpoint table produces.
  assert.deepEqual(pod.ips, ['10.244.1.7', 'fd00::7']);
  const statuses = (raw.status as { containerStatuses: { containerID: string }[] })
    .containerStatuses;
  assert.deepEqual(
    pod.containerIds,
    statuses.map((s) => s.containerID.replace('containerd://', '')),
  );
  assert.equal(pod.hostNetwork, false);
  assert.equal(pod.phase, 'Running');
});

test('workload from ownerReferences', () => {
  const rs = (name: string) => [{ kind: 'ReplicaSet', name, controller: true }];
  assert.deepEqual(workloadFromOwners(rs('api-5f6c7b9d8'), '5f6c7b9d8'), {
    kind: 'Deployment',
    name: 'api',
  });
  // Without the label: the hash alphabet has no vowels, so a word suffix is not a hash.
  assert.deepEqual(workloadFromOwners(rs('api-5f6c7b9d8')), { kind: 'Deployment', name: 'api' });
  assert.deepEqual(workloadFromOwners(rs('web-frontend')), {
    kind: 'ReplicaSet',
    name: 'web-frontend',
  });
  // A label that does not match the name: the ReplicaSet is reported as it is.
  assert.equal(deploymentOfReplicaSet('api-5f6c7b9d8', 'zzzz'), undefined);
  assert.deepEqual(
    workloadFromOwners([{ kind: 'StatefulSet', name: 'asterisk', controller: true }]),
    { kind: 'StatefulSet', name: 'asterisk' },
  );
  assert.deepEqual(workloadFromOwners([{ kind: 'DaemonSet', name: 'rtpengine' }]), {
    kind: 'DaemonSet',
    name: 'rtpengine',
  });
  assert.equal(workloadFromOwners(undefined), undefined);
  assert.equal(workloadFromOwners('nope'), undefined);
  assert.equal(workloadFromOwners([{ kind: 5, name: 'x' }, null, 'x']), undefined);
  // Two owners and none is the controller: no guess.
  assert.equal(
    workloadFromOwners([
      { kind: 'A', name: 'a' },
      { kind: 'B', name: 'b' },
    ]),
    undefined,
  );
});

test('malformed items are rejected one by one, never thrown', () => {
  const good = makePod({ name: 'good', node: NODE, ip: '10.0.0.1' });
  const hugeLabels: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) hugeLabels[`k${i}`] = 'v'.repeat(1000);
  const withHugeLabels = makePod({
    name: 'labels',
    node: NODE,
    ip: '10.0.0.2',
    labels: hugeLabels,
  });
  const items: unknown[] = [
    good,
    null,
    42,
    'pod',
    [],
    {},
    { metadata: null },
    { metadata: { name: 'x', namespace: 'y' } }, // no uid
    { metadata: { name: 5, namespace: 'y', uid: 'u' } },
    { metadata: { name: 'x'.repeat(300), namespace: 'y', uid: 'u' } },
    { metadata: { name: 'x', namespace: 'y', uid: 'u1' }, spec: 'hostNetwork' },
    { metadata: { name: 'x', namespace: 'y', uid: 'u2' }, status: [1, 2] },
    {
      // Right shape, wrong types inside: kept, with the bad parts ignored.
      metadata: { name: 'odd', namespace: 'y', uid: 'u3', ownerReferences: 'rs', labels: 7 },
      spec: { nodeName: NODE, hostNetwork: 'true', containers: 5 },
      status: {
        podIP: 12345,
        podIPs: [{ ip: 'not-an-ip' }, 'x', { ip: '10.0.0.3' }],
        containerStatuses: [{ containerID: 42 }, { containerID: 'containerd://zz' }, null],
        phase: { x: 1 },
      },
    },
    withHugeLabels,
  ];
  const list = parsePodList({
    kind: 'PodList',
    apiVersion: 'v1',
    metadata: { resourceVersion: '7' },
    items,
  });
  assert.equal(list.resourceVersion, '7');
  assert.deepEqual(
    list.pods.map((p) => p.name),
    ['good', 'odd', 'labels'],
  );
  assert.equal(list.rejected, items.length - 3);
  assert.ok(list.reasons.length > 0 && list.reasons.length <= 3);
  const odd = list.pods[1];
  assert.deepEqual(odd.ips, ['10.0.0.3']);
  assert.deepEqual(odd.containerIds, []);
  assert.equal(odd.hostNetwork, false, 'only the boolean true means hostNetwork');
  assert.equal(odd.phase, '');
  assert.equal(odd.workload, undefined);
  assert.throws(() => parsePodList({ items: 'x' }), /not a PodList/);
  assert.throws(() => parsePodList(null), /not a PodList/);
});

test('pods of another node in a list are ignored', () => {
  const list = parsePodList(
    {
      items: [
        makePod({ name: 'mine', node: NODE, ip: '10.0.0.1' }),
        makePod({ name: 'theirs', node: 'node-b', ip: '10.0.0.2' }),
      ],
    },
    NODE,
  );
  assert.deepEqual(
    list.pods.map((p) => p.name),
    ['mine'],
  );
});

test('lookups by IP, container ID and UID; changes reported per IP', () => {
  const cache = new PodCache();
  const calls = recorder(cache);
  const a = identity({ name: 'a', ip: '10.0.0.1', containers: 2 });
  const b = identity({ name: 'b', ip: '10.0.0.2', extraIps: ['fd00::2'] });
  cache.replaceAll([a, b]);
  assert.deepEqual(calls, [['10.0.0.1', '10.0.0.2', 'fd00::2']]);
  assert.equal(cache.byIp('10.0.0.1')?.name, 'a');
  assert.equal(cache.byIp('fd00::2')?.name, 'b');
  assert.equal(cache.byContainerId(a.containerIds[1])?.name, 'a');
  assert.equal(cache.byUid(b.uid)?.name, 'b');
  assert.equal(cache.byIp('10.0.0.9'), undefined);

  // The same pod again (a MODIFIED with a new container after a restart): no label change.
  const a2: PodIdentity = { ...a, containerIds: ['f'.repeat(64)] };
  cache.upsert(a2);
  assert.equal(calls.length, 1, 'no change callback when no IP changed hands');
  assert.equal(cache.byContainerId(a.containerIds[0]), undefined, 'old container ID forgotten');
  assert.equal(cache.byContainerId('f'.repeat(64))?.name, 'a');

  // A full list without b: b is gone at once.
  cache.replaceAll([a2]);
  assert.deepEqual(calls.at(-1), ['10.0.0.2', 'fd00::2']);
  assert.equal(cache.byIp('10.0.0.2'), undefined);
  assert.equal(cache.byUid(b.uid), undefined);
});

test('an IP reused by a new pod is never labelled with the old pod', () => {
  const cache = new PodCache();
  const calls = recorder(cache);
  const oldPod = identity({ name: 'old', ip: '10.0.0.5', createdAt: '2024-05-01T10:00:00Z' });
  cache.upsert(oldPod);
  assert.equal(cache.byIp('10.0.0.5')?.name, 'old');

  // Old pod terminating, new pod gets the same IP before the old one's DELETED arrives.
  cache.upsert({ ...oldPod, terminating: true });
  const newPod = identity({ name: 'new', ip: '10.0.0.5', createdAt: '2024-05-01T10:05:00Z' });
  cache.upsert(newPod);
  assert.equal(cache.byIp('10.0.0.5')?.name, 'new');
  // A late MODIFIED of the old pod does not take the IP back.
  cache.upsert({ ...oldPod, terminating: true, phase: 'Running' });
  assert.equal(cache.byIp('10.0.0.5')?.name, 'new');
  // Nor does one without deletionTimestamp (older creation time loses).
  cache.upsert(oldPod);
  assert.equal(cache.byIp('10.0.0.5')?.name, 'new');
  cache.remove(oldPod.uid);
  assert.equal(cache.byIp('10.0.0.5')?.name, 'new');
  assert.deepEqual(calls, [['10.0.0.5'], ['10.0.0.5']]);

  // A finished pod still shows its IP in status, but the CNI has released it.
  const job = identity({ name: 'job', ip: '10.0.0.6' });
  cache.upsert(job);
  assert.equal(cache.byIp('10.0.0.6')?.name, 'job');
  cache.upsert({ ...job, phase: 'Succeeded' });
  assert.equal(cache.byIp('10.0.0.6'), undefined);
  assert.equal(cache.byUid(job.uid)?.name, 'job', 'still known by UID');
});

test('hostNetwork pods are found by container ID and UID, never by IP', () => {
  const cache = new PodCache();
  const relay = identity({ name: 'rtpengine', ip: '192.0.2.10', hostNetwork: true });
  const agent = identity({ name: 'agent', ip: '192.0.2.10', hostNetwork: true });
  cache.replaceAll([relay, agent]);
  assert.equal(cache.byIp('192.0.2.10'), undefined);
  assert.equal(cache.byContainerId(relay.containerIds[0])?.name, 'rtpengine');
  assert.equal(cache.byUid(agent.uid)?.name, 'agent');
});

test('the cache is bounded: finished pods go first, then the oldest', () => {
  const lines: string[] = [];
  const cache = new PodCache({
    maxPods: 3,
    log: createLogger('warn', { write: (l) => lines.push(l) }),
  });
  const done = identity({ name: 'done', ip: '10.0.1.1', phase: 'Failed' });
  const p1 = identity({ name: 'p1', ip: '10.0.1.2' });
  const p2 = identity({ name: 'p2', ip: '10.0.1.3' });
  cache.upsert(p1);
  cache.upsert(done);
  cache.upsert(p2);
  const p3 = identity({ name: 'p3', ip: '10.0.1.4' });
  cache.upsert(p3);
  assert.equal(cache.size, 3);
  assert.equal(cache.byUid(done.uid), undefined, 'the finished pod went first');
  const p4 = identity({ name: 'p4', ip: '10.0.1.5' });
  cache.upsert(p4);
  assert.equal(cache.size, 3);
  assert.equal(cache.byIp('10.0.1.2'), undefined, 'then the oldest');
  assert.equal(cache.byIp('10.0.1.5')?.name, 'p4');
  assert.equal(cache.stats().evicted, 2);
  assert.equal(lines.filter((l) => l.includes('pod cache full')).length, 1, 'rate-limited');

  // A list far larger than the bound stays bounded.
  const many = Array.from({ length: 50 }, (_, i) =>
    identity({ name: `m${i}`, ip: `10.0.2.${i + 1}` }),
  );
  cache.replaceAll(many);
  assert.equal(cache.size, 3);
  assert.ok(cache.stats().ips <= 3);
});

test('a throwing listener does not stop the others or the cache', () => {
  const lines: string[] = [];
  const cache = new PodCache({ log: createLogger('error', { write: (l) => lines.push(l) }) });
  cache.onChange(() => {
    throw new Error('boom');
  });
  const seen: string[][] = [];
  const off = cache.onChange((ips) => seen.push(ips));
  cache.upsert(identity({ name: 'a', ip: '10.0.0.1' }));
  assert.deepEqual(seen, [['10.0.0.1']]);
  assert.equal(lines.length, 1);
  off();
  cache.upsert(identity({ name: 'b', ip: '10.0.0.2' }));
  assert.equal(seen.length, 1);
});

test('the resolver names IPs as namespace/pod and the endpoint table relabels on change', () => {
  const cache = new PodCache();
  const table = new EndpointTable({ capacity: 16, resolver: cache.resolver() });
  const id = table.internAddress('10.0.0.7');
  assert.equal(table.label(id), '10.0.0.7', 'unknown endpoint recorded under its IP');
  cache.onChange((ips) => {
    for (const ip of ips) {
      const i = table.internAddress(ip);
      if (i >= 0) table.invalidate(i);
    }
  });
  const first = identity({ name: 'caller', namespace: 'voice', ip: '10.0.0.7' });
  cache.upsert(first);
  assert.equal(table.label(id), 'voice/caller');
  cache.remove(first.uid);
  cache.upsert(identity({ name: 'callee', namespace: 'voice', ip: '10.0.0.7' }));
  assert.equal(table.label(id), 'voice/callee');
});
