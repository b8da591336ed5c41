/**
 * End to end with Kubernetes on, as root: the lab's RTP pipeline (sender -> relay holding 20 ms
 * -> sink) where the sender and the relay are Kubernetes pods: their processes live in cgroup v2
 * directories shaped like containerd containers of pods (test/lab/k8s-lab.ts), and a test
 * kubelet over HTTPS (self-signed, bearer token) serves them as real-shaped Pods of namespace
 * `voice` on this node. The sink is in no pod list: an endpoint outside the cluster. The real
 * agent reads the kubelet (K8S_POD_SOURCE=kubelet, 500 ms polls) and pushes OTLP every second.
 *
 * Checked: the hop and the signatures carry pod names and namespaces (p50 of the hop within 1 ms
 * of the hold), the sink is `external`, no series is named by an address; mid-run the relay pod
 * is deleted and a new pod (new name and UID, same IP) takes its place: later samples carry the
 * new name, the old name's series stops growing and leaves /metrics after SERIES_TTL_MS; the
 * agent's own pod, node and cluster appear in target_info and as OTLP resource attributes.
 *
 * Skips loudly when not root; fails under CI=true when it cannot run.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { test } from 'node:test';
import {
  identityFromProcCgroup,
  parseProcCgroup,
  scanContainerCgroups,
} from '../src/k8s/cgroup.js';
import { AgentProcess, sleep } from './lab/agent-process.js';
import { K8sLab, type K8sPod } from './lab/k8s-lab.js';
import { Lab, type LabProcess } from './lab/lab.js';
import {
  bucketsOf,
  histogramQuantile,
  parseMetrics,
  sumOf,
  type Labels,
  type Sample,
} from './lab/metrics-text.js';
import { agentEnv, HOLD_MS, PIPELINES } from './lab/scenario.js';
import {
  FakeCluster,
  FakeKubelet,
  makeCertificate,
  writeTokenFile,
  type TestCertificate,
} from './support/fake-k8s.js';
import {
  attributesOf,
  metricsNamed,
  startOtlpReceiver,
  type OtlpReceiver,
  type ReceivedExport,
} from './support/otlp-receiver.js';
import { requireRoot } from './support/root.js';

const RTP = PIPELINES[0];
const NODE = 'lab-node-1';
const NAMESPACE = 'voice';
const TOKEN = `kubelet-token-${randomUUID()}`;
const AGENT_POD = 'audio-latency-tracker-x7k2p';
const AGENT_NAMESPACE = 'monitoring';
const AGENT_UID = randomUUID();
const CLUSTER = 'lab-cluster';
const SERIES_TTL_MS = 4000;
const POLL_MS = 500;
const PHASE1_S = 6; // relay pod A
const DURATION_S = 17; // then pod B for the rest, past the old pod's TTL
const SCRAPE_EVERY_MS = 250;

interface Hop {
  source: K8sPod;
  dest: K8sPod;
}

function hopSelector(h: Hop): Labels {
  return {
    source_pod: h.source.name,
    source_namespace: NAMESPACE,
    dest_pod: h.dest.name,
    dest_namespace: NAMESPACE,
  };
}

function hopCount(samples: Sample[], h: Hop): number | undefined {
  return sumOf(samples, 'audio_latency_seconds_count', hopSelector(h));
}

function hopP50(samples: Sample[], h: Hop): number {
  return histogramQuantile(0.5, bucketsOf(samples, 'audio_latency_seconds', hopSelector(h)));
}

/** Every pod-ish label value (source_pod, dest_pod, pod) of the audio metrics. */
function podLabelValues(samples: Sample[]): Set<string> {
  const out = new Set<string>();
  for (const s of samples) {
    if (!s.name.startsWith('audio_') || s.name.startsWith('audio_tracker_')) continue;
    for (const k of ['source_pod', 'dest_pod', 'pod']) {
      const v = s.labels[k];
      if (v !== undefined) out.add(v);
    }
  }
  return out;
}

/** Waits until the kubelet has answered `n` more /pods lists after `since` (ms epoch). */
async function waitKubeletPolls(kubelet: FakeKubelet, since: number, n: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const ok = kubelet.requests.filter((r) => r.at >= since && r.status === 200);
    if (ok.length >= n) return ok[n - 1].at;
    await sleep(50);
  }
  throw new Error(`kubelet: fewer than ${n} successful /pods lists since ${since}`);
}

async function waitAttached(agent: AgentProcess, want: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  let got: number | undefined;
  while (Date.now() < deadline) {
    got = sumOf(parseMetrics(await agent.scrape()), 'audio_tracker_interfaces_attached');
    if (got !== undefined && got >= want) return;
    await sleep(200);
  }
  throw new Error(`agent attached ${got} interfaces, want ${want}:\n${agent.logs(20).join('\n')}`);
}

/** Polls until the hop total stops moving for 2 s (the last windows paired). */
async function waitSettled(agent: AgentProcess): Promise<Sample[]> {
  let last = -1;
  let stableSince = Date.now();
  const deadline = Date.now() + 15_000;
  let samples: Sample[] = [];
  while (Date.now() < deadline) {
    samples = parseMetrics(await agent.scrape());
    const now = sumOf(samples, 'audio_latency_seconds_count') ?? 0;
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 2000) {
      break;
    }
    await sleep(500);
  }
  return samples;
}

/** One /metrics reading after the churn. */
interface Reading {
  at: number;
  oldCount: number | undefined;
  newCount: number | undefined;
}

const K8S_RESOURCE_KEYS = [
  'k8s.node.name',
  'k8s.pod.name',
  'k8s.namespace.name',
  'k8s.pod.uid',
  'k8s.cluster.name',
] as const;

function resourceOf(e: ReceivedExport): Record<string, string | number | boolean> {
  return attributesOf(e.request.resourceMetrics[0]?.resource?.attributes);
}

/** Pod names on the OTLP hop histogram's data points. */
function otlpDestPods(e: ReceivedExport): Set<string> {
  const out = new Set<string>();
  for (const m of metricsNamed(e.request, 'audio_latency_seconds')) {
    for (const p of m.histogram?.dataPoints ?? [])
      out.add(String(attributesOf(p.attributes).dest_pod));
  }
  return out;
}

function spawnPipelineProcess(
  lab: Lab,
  k8s: K8sLab,
  pod: K8sPod | undefined,
  labPod: string,
  script: 'sender' | 'relay' | 'sink',
  args: string[],
): LabProcess {
  const proc = lab.spawn(labPod, script, args);
  // `ip netns exec` execs node in place: the pid is the lab process's, and moving it before
  // node starts puts every thread it will create in the container's cgroup too.
  if (pod !== undefined && proc.child.pid !== undefined) k8s.place(pod, proc.child.pid);
  return proc;
}

test('e2e k8s: pods named from a kubelet, cgroup-placed lab pods, pod churn, resource', async (t) => {
  if (!requireRoot(t)) return;

  const lab = Lab.create({ pods: [RTP.sender, RTP.relay, RTP.sink] });
  let k8s: K8sLab | undefined;
  let cert: TestCertificate | undefined;
  let kubelet: FakeKubelet | undefined;
  let otlp: OtlpReceiver | undefined;
  let agent: AgentProcess | undefined;
  const procs: LabProcess[] = [];
  let cgroupsLeft: string[] = [];
  try {
    k8s = K8sLab.create(lab, { namespace: NAMESPACE, node: NODE });
    const sender = k8s.addPod(RTP.sender, 'sender');
    const relayA = k8s.addPod(RTP.relay, 'relay');

    cert = makeCertificate('fake-kubelet');
    const cluster = new FakeCluster();
    cluster.add(k8s.podJson(sender));
    cluster.add(k8s.podJson(relayA));
    kubelet = new FakeKubelet(cluster, cert, TOKEN, NODE);
    await kubelet.up();
    const tokenFile = writeTokenFile(cert.dir, TOKEN);

    otlp = await startOtlpReceiver();
    const started = Date.now();
    agent = await AgentProcess.start({
      env: agentEnv(lab, {
        K8S_ENABLED: 'true',
        K8S_NODE_NAME: NODE,
        K8S_POD_SOURCE: 'kubelet',
        K8S_KUBELET_URL: kubelet.url,
        K8S_KUBELET_INSECURE: 'true',
        K8S_TOKEN_FILE: tokenFile,
        K8S_KUBELET_POLL_INTERVAL_MS: String(POLL_MS),
        SERIES_TTL_MS: String(SERIES_TTL_MS),
        POD_NAME: AGENT_POD,
        POD_NAMESPACE: AGENT_NAMESPACE,
        POD_UID: AGENT_UID,
        K8S_CLUSTER_NAME: CLUSTER,
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_METRIC_EXPORT_INTERVAL: '1000',
      }),
    });
    lab.track(agent.pid);
    await waitAttached(agent, lab.hostInterfaces.length);
    // The second list starts after the first was taken in: the cache knows both pods.
    await waitKubeletPolls(kubelet, started, 2);

    const relayIp = lab.pod(RTP.relay).ip;
    const sinkIp = lab.pod(RTP.sink).ip;
    const sink = spawnPipelineProcess(lab, k8s, undefined, RTP.sink, 'sink', [
      '--listen',
      String(RTP.sinkPort),
      '--in',
      'rtp',
    ]);
    procs.push(sink);
    await sink.ready;
    const relay = spawnPipelineProcess(lab, k8s, relayA, RTP.relay, 'relay', [
      '--listen',
      String(RTP.relayPort),
      '--to',
      `${sinkIp}:${RTP.sinkPort}`,
      '--sport',
      String(RTP.relayOutPort),
      '--hold-ms',
      String(HOLD_MS),
      '--in',
      'rtp',
      '--out',
      'rtp',
      '--gather',
      '1',
    ]);
    procs.push(relay);
    await relay.ready;
    const send = spawnPipelineProcess(lab, k8s, sender, RTP.sender, 'sender', [
      '--dest',
      `${relayIp}:${RTP.relayPort}`,
      '--encoding',
      RTP.encoding,
      '--transport',
      'rtp',
      '--seed',
      String(RTP.seed),
      '--duration',
      String(DURATION_S),
      '--sport',
      String(RTP.senderPort),
    ]);
    procs.push(send);
    await send.ready;
    const streamStart = Date.now();

    // What the agent would read for these processes, read now while they run.
    const placed = [
      { pod: sender, pid: send.child.pid ?? -1 },
      { pod: relayA, pid: relay.child.pid ?? -1 },
    ].map(({ pod, pid }) => ({
      pod,
      pid,
      procCgroup: readFileSync(`/proc/${pid}/cgroup`, 'utf8'),
      inode: statSync(pod.cgroupDir).ino,
    }));
    const scanned = await scanContainerCgroups({ mountPoint: k8s.mount, root: '/' });

    await sleep(PHASE1_S * 1000);
    const beforeChurn = parseMetrics(await agent.scrape());
    const hopA: Hop = { source: sender, dest: relayA };

    // Churn: the relay pod is deleted and a new pod of the same ReplicaSet gets its IP. The
    // relay process keeps running, now in the new pod's container cgroup.
    const relayB = k8s.addPod(RTP.relay, 'relay');
    const hopB: Hop = { source: sender, dest: relayB };
    const churnAt = Date.now();
    cluster.delete(relayA.uid);
    cluster.add(k8s.podJson(relayB));
    k8s.movePods(relayA, relayB);
    const relayBPids = k8s.pidsOf(relayB);
    cgroupsLeft.push(...k8s.removePod(relayA));
    // The list after the churn has been taken in once the next one is answered.
    const noticedAt = await waitKubeletPolls(kubelet, churnAt, 2);

    const readings: Reading[] = [];
    while (send.running) {
      const s = parseMetrics(await agent.scrape());
      readings.push({ at: Date.now(), oldCount: hopCount(s, hopA), newCount: hopCount(s, hopB) });
      await sleep(SCRAPE_EVERY_MS);
    }
    const streamedS = (Date.now() - streamStart) / 1000;
    const final = await waitSettled(agent);
    const otlpFinal = await otlp
      .waitForExport((e) => otlpDestPods(e).has(relayB.name), 5000)
      .catch(() => undefined);
    const lastExport = otlp.exports.at(-1);

    // The old series after the agent had surely switched: the first reading 500 ms after the
    // list that carried the churn was answered.
    const settledOld = readings.find((r) => r.at >= noticedAt + 500);
    const oldPresent = readings.filter((r) => r.oldCount !== undefined);
    const lastOld = oldPresent.at(-1);
    const goneAt = readings.find((r) => r.at > (lastOld?.at ?? 0))?.at;
    const firstNew = readings.find((r) => r.newCount !== undefined);
    const targetInfo = final.find((s) => s.name === 'target_info');
    const signatures = sumOf(final, 'audio_signatures_total', {
      pod: sender.name,
      namespace: NAMESPACE,
    });
    const toSink = sumOf(final, 'audio_transit_latency_seconds_count', {
      source_pod: relayB.name,
      source_namespace: NAMESPACE,
      dest_pod: 'external',
      dest_namespace: '',
    });
    console.log(
      `e2e-k8s lab ${lab.id}: cgroup2 at ${k8s.mount}, streamed ${streamedS.toFixed(1)} s\n` +
        `  ${sender.name} -> ${relayA.name}: ${hopCount(beforeChurn, hopA)} samples, p50 ` +
        `${(hopP50(beforeChurn, hopA) * 1000).toFixed(3)} ms before the churn; ` +
        `${settledOld?.oldCount} at churn + ${((settledOld?.at ?? NaN) - churnAt).toFixed(0)} ms, ` +
        `last seen ${lastOld?.oldCount} at churn + ${((lastOld?.at ?? NaN) - churnAt).toFixed(0)} ms, ` +
        `gone at churn + ${((goneAt ?? NaN) - churnAt).toFixed(0)} ms (TTL ${SERIES_TTL_MS})\n` +
        `  ${sender.name} -> ${relayB.name}: ${hopCount(final, hopB)} samples (first seen ` +
        `${firstNew?.newCount} at churn + ${((firstNew?.at ?? NaN) - churnAt).toFixed(0)} ms), p50 ` +
        `${(hopP50(final, hopB) * 1000).toFixed(3)} ms\n` +
        `  audio_signatures_total{pod=${sender.name}} ${signatures}, ` +
        `transit ${relayB.name} -> external ${toSink}; kubelet lists ` +
        `${kubelet.requests.length}; OTLP exports ${otlp.exports.length}`,
    );

    await t.test('lab pods sit in containerd-shaped pod cgroups the agent parses', () => {
      for (const { pod, pid, procCgroup, inode } of placed) {
        const parsed = parseProcCgroup(procCgroup);
        assert.equal(parsed?.unifiedPath, pod.cgroupPath, `/proc/${pid}/cgroup:\n${procCgroup}`);
        const id = parsed ? identityFromProcCgroup(parsed) : undefined;
        assert.equal(id?.containerId, pod.containerId, `container of pid ${pid}`);
        assert.equal(id?.podUid, pod.uid, `pod uid of pid ${pid}`);
        assert.equal(id?.runtime, 'containerd');
        assert.equal(id?.driver, 'systemd');
        assert.equal(id?.qosClass, 'besteffort');
        const found = scanned.find((c) => c.identity.containerId === pod.containerId);
        assert.equal(found?.cgroupId, BigInt(inode), `cgroup id of ${pod.cgroupPath}`);
      }
      assert.ok(relayBPids.includes(relay.child.pid ?? -1), 'relay process moved to pod B');
    });

    await t.test(`hop ${RTP.sender} -> ${RTP.relay} by pod name: p50 within 1 ms of 20 ms`, () => {
      const count = hopCount(beforeChurn, hopA) ?? 0;
      assert.ok(count > 0, `no audio_latency_seconds{${JSON.stringify(hopSelector(hopA))}}`);
      const p50 = hopP50(beforeChurn, hopA);
      assert.ok(
        Math.abs(p50 - HOLD_MS / 1000) <= 0.001,
        `p50 ${(p50 * 1000).toFixed(3)} ms, want ${HOLD_MS} +- 1 ms`,
      );
    });

    await t.test('signatures counted per pod and namespace', () => {
      assert.ok(signatures !== undefined && signatures > 0, `audio_signatures_total ${signatures}`);
      const relaySigs = sumOf(final, 'audio_signatures_total', {
        pod: relayB.name,
        namespace: NAMESPACE,
      });
      assert.ok(relaySigs !== undefined && relaySigs > 0, `relay B signatures ${relaySigs}`);
    });

    await t.test('the sink, in no pod list, is external; no series is named by address', () => {
      assert.ok(toSink !== undefined && toSink > 0, `transit relay -> external ${toSink}`);
      const values = podLabelValues(final);
      const ips = [...values].filter((v) => /^\d+\.\d+\.\d+\.\d+$/.test(v) || v.includes(':'));
      assert.deepEqual(ips, [], `label values: ${[...values].join(', ')}`);
      assert.ok(!values.has('other'), 'nothing overflowed into other');
    });

    await t.test('after the churn samples carry the new pod name, and it grows', () => {
      assert.ok(firstNew, `no series for ${relayB.name} after the churn`);
      const end = hopCount(final, hopB) ?? 0;
      assert.ok(
        end > (firstNew.newCount ?? 0),
        `${relayB.name}: ${firstNew.newCount} at first sight, ${end} at the end`,
      );
      const p50 = hopP50(final, hopB);
      assert.ok(
        Math.abs(p50 - HOLD_MS / 1000) <= 0.001,
        `new pod p50 ${(p50 * 1000).toFixed(3)} ms`,
      );
    });

    await t.test("the old pod's series stops growing, then leaves /metrics after the TTL", () => {
      assert.ok(
        settledOld?.oldCount !== undefined,
        `old series already gone ${(settledOld?.at ?? NaN) - noticedAt} ms after the churn was ` +
          `listed (TTL ${SERIES_TTL_MS})`,
      );
      const later = readings.filter((r) => r.at >= settledOld.at && r.oldCount !== undefined);
      const grew = later.filter((r) => r.oldCount !== settledOld.oldCount);
      assert.deepEqual(
        grew.map((r) => r.oldCount),
        [],
        `${relayA.name} kept growing after ${settledOld.oldCount}`,
      );
      assert.ok(lastOld !== undefined && goneAt !== undefined, `${relayA.name} never left`);
      const limit = noticedAt + SERIES_TTL_MS + 2500;
      assert.ok(
        goneAt <= limit,
        `gone ${goneAt - noticedAt} ms after the churn was listed, TTL ${SERIES_TTL_MS}`,
      );
      assert.ok(
        goneAt >= churnAt + SERIES_TTL_MS - 500,
        `gone before the TTL (${goneAt - churnAt} ms)`,
      );
      const back = readings.filter((r) => r.at > goneAt && r.oldCount !== undefined);
      assert.equal(back.length, 0, `${relayA.name} came back`);
      assert.equal(hopCount(final, hopA), undefined, `${relayA.name} still on /metrics`);
      assert.ok(!podLabelValues(final).has(relayA.name), `${relayA.name} still labels some series`);
    });

    await t.test('target_info carries the agent pod, namespace, node and cluster', () => {
      assert.ok(targetInfo, 'no target_info on /metrics');
      const l = targetInfo.labels;
      assert.equal(l.k8s_node_name, NODE);
      assert.equal(l.k8s_pod_name, AGENT_POD);
      assert.equal(l.k8s_namespace_name, AGENT_NAMESPACE);
      assert.equal(l.k8s_pod_uid, AGENT_UID);
      assert.equal(l.k8s_cluster_name, CLUSTER);
    });

    await t.test('OTLP: the same k8s.* resource attributes; the old pod is gone there too', () => {
      assert.ok(lastExport, 'no OTLP export');
      const resource = resourceOf(lastExport);
      const want: Record<string, string> = {
        'k8s.node.name': NODE,
        'k8s.pod.name': AGENT_POD,
        'k8s.namespace.name': AGENT_NAMESPACE,
        'k8s.pod.uid': AGENT_UID,
        'k8s.cluster.name': CLUSTER,
      };
      for (const key of K8S_RESOURCE_KEYS) assert.equal(resource[key], want[key], key);
      const l = (targetInfo as Sample).labels;
      for (const key of K8S_RESOURCE_KEYS) {
        assert.equal(l[key.replace(/\./g, '_')], resource[key], `target_info vs OTLP ${key}`);
      }
      assert.ok(otlpFinal, `no OTLP export with ${relayB.name}`);
      assert.ok(!otlpDestPods(lastExport).has(relayA.name), `${relayA.name} still exported`);
    });

    await t.test('SIGTERM: exit 0', async () => {
      const a = agent as AgentProcess;
      const exit = await a.stop();
      assert.equal(
        exit.code,
        0,
        `agent exit ${exit.code} ${exit.signal}:\n${a.logs(20).join('\n')}`,
      );
    });
  } catch (err) {
    if (agent) console.error(`agent log tail:\n${agent.logs(40).join('\n')}`);
    for (const p of procs) if (p.stderr) console.error(`${p.describe()} stderr: ${p.stderr}`);
    throw err;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    if (agent?.running) await agent.stop();
    await otlp?.close();
    await kubelet?.down();
    cert?.cleanup();
    cgroupsLeft = [...cgroupsLeft, ...(k8s?.teardown() ?? [])];
    lab.teardown();
  }
  assert.deepEqual(cgroupsLeft, [], 'cgroup directories left behind');
});
