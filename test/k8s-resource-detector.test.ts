import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { detectResources, type DetectedResourceAttributes } from '@opentelemetry/resources';
import {
  ATTR_CONTAINER_ID,
  ATTR_K8S_CLUSTER_NAME,
  ATTR_K8S_NAMESPACE_NAME,
  ATTR_K8S_NODE_NAME,
  ATTR_K8S_POD_NAME,
  ATTR_K8S_POD_UID,
} from '@opentelemetry/semantic-conventions';
import {
  DEFAULT_NAMESPACE_FILE,
  detectK8sResourceAttributes,
  K8sResourceDetector,
  type K8sDetectorFs,
} from '../otel/k8s-resource-detector.js';
import { buildAgentResource, createMeterPipeline, type MeterPipeline } from '../otel/index.js';
import { ATTR_CONTAINER_RUNTIME_NAME } from '../otel/semconv.js';

const FIXTURES = new URL('../../test/fixtures/cgroup/', import.meta.url);
const fixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

// From the fixtures (see test/k8s-cgroup.test.ts for how each was built).
const CONTAINERD_ID = '7ef4e80d770ca1e55c62e8a7110d7e2101e7e638de5d711b32a0829d51f5d1da';
const CONTAINERD_POD = 'b833404c-3b72-4679-aae4-cf80c0a39d01';
const CGROUPNS_POD = 'bb7e880b-d92e-44ad-a1ff-818da8d83205';
const V1_MOUNT_ID = '9f4e31b9bc50cb59f129e2b820d470b15bab2220fa403730f8bc94a02b997aa0';
const V1_MOUNT_POD = '8960a1de-a153-4196-afda-99c5bb0c08af';
const DOCKER_V2_ID = '4341398531201c6de00d2b38cf34d1398a8312c5245a22e71f795ddaa2889a4f';
const CRIO_SANDBOX_ID = '9868ec9e8d81acaa2a24e98eca19492a6ff64d8b27e3ab269f0248be97f693fa';

const IN_CLUSTER = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };

function memoryFs(files: Record<string, string>): K8sDetectorFs & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    readFile: async (path) => {
      reads.push(path);
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return text;
    },
  };
}

async function settle(
  attrs: DetectedResourceAttributes | undefined,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(attrs ?? {})) out[k] = await v;
  return out;
}

describe('K8sResourceDetector', () => {
  it('takes everything from the downward API and the cgroup when all is there', async () => {
    const fs = memoryFs({
      '/proc/self/cgroup': fixture('containerd-systemd-burstable.v2.cgroup'),
      [DEFAULT_NAMESPACE_FILE]: 'from-file',
    });
    const detector = new K8sResourceDetector({
      env: {
        ...IN_CLUSTER,
        K8S_NODE_NAME: 'worker-3',
        POD_NAME: 'audio-latency-tracker-x7k2p',
        POD_NAMESPACE: 'monitoring',
        K8S_CLUSTER_NAME: 'prod-eu',
        HOSTNAME: 'worker-3',
      },
      fs,
    });
    assert.deepEqual(await settle(detector.detect().attributes), {
      [ATTR_K8S_NODE_NAME]: 'worker-3',
      [ATTR_K8S_POD_NAME]: 'audio-latency-tracker-x7k2p',
      [ATTR_K8S_CLUSTER_NAME]: 'prod-eu',
      [ATTR_K8S_NAMESPACE_NAME]: 'monitoring',
      [ATTR_K8S_POD_UID]: CONTAINERD_POD,
      [ATTR_CONTAINER_ID]: CONTAINERD_ID,
      [ATTR_CONTAINER_RUNTIME_NAME]: 'containerd',
    });
    // POD_NAMESPACE set: the namespace file is not read; the cgroup named both IDs: no mountinfo.
    assert.deepEqual(fs.reads, ['/proc/self/cgroup']);
  });

  it('falls back to HOSTNAME, the service-account namespace file and the cgroup', async () => {
    const attrs = await detectK8sResourceAttributes({
      env: { ...IN_CLUSTER, K8S_NODE_NAME: 'worker-3', HOSTNAME: 'relay-0' },
      fs: memoryFs({
        '/proc/self/cgroup': fixture('crio-systemd-besteffort.v1.cgroup'),
        [DEFAULT_NAMESPACE_FILE]: 'voice\n',
      }),
    });
    assert.deepEqual(attrs, {
      [ATTR_K8S_NODE_NAME]: 'worker-3',
      [ATTR_K8S_POD_NAME]: 'relay-0',
      [ATTR_K8S_NAMESPACE_NAME]: 'voice',
      [ATTR_K8S_POD_UID]: 'e0f46238-fcd5-41bf-a2cc-e21edb0c9a88',
      [ATTR_CONTAINER_ID]: '9f1e3b4cc9d48e90c6a4dfe1156bf2b8d1b48d90268d435333bd76764523b52b',
      [ATTR_CONTAINER_RUNTIME_NAME]: 'cri-o',
    });
  });

  it('with hostNetwork, HOSTNAME is the node: no pod name is made up', async () => {
    for (const HOSTNAME of [
      'ip-10-0-3-7.eu-west-1.compute.internal',
      'ip-10-0-3-7',
      'IP-10-0-3-7',
    ]) {
      const attrs = await detectK8sResourceAttributes({
        env: { ...IN_CLUSTER, K8S_NODE_NAME: 'ip-10-0-3-7.eu-west-1.compute.internal', HOSTNAME },
        fs: memoryFs({}),
      });
      assert.equal(attrs[ATTR_K8S_POD_NAME], undefined, HOSTNAME);
      assert.equal(attrs[ATTR_K8S_NODE_NAME], 'ip-10-0-3-7.eu-west-1.compute.internal');
    }
  });

  it('POD_UID wins over the cgroup', async () => {
    const attrs = await detectK8sResourceAttributes({
      env: { ...IN_CLUSTER, POD_UID: '11111111-2222-4333-8444-555555555555' },
      fs: memoryFs({ '/proc/self/cgroup': fixture('containerd-systemd-burstable.v1.cgroup') }),
    });
    assert.equal(attrs[ATTR_K8S_POD_UID], '11111111-2222-4333-8444-555555555555');
    assert.equal(attrs[ATTR_CONTAINER_ID], CONTAINERD_ID);
  });

  it('in a cgroup namespace: pod UID from the kubelet mounts, no sandbox ID as container.id', async () => {
    const fs = memoryFs({
      '/proc/self/cgroup': fixture('cgroupns-root.v2.cgroup'),
      '/proc/self/mountinfo': fixture('containerd-cgroupns.v2.mountinfo'),
    });
    const attrs = await detectK8sResourceAttributes({ env: IN_CLUSTER, fs });
    assert.deepEqual(attrs, { [ATTR_K8S_POD_UID]: CGROUPNS_POD });
    assert.deepEqual(fs.reads.sort(), [
      '/proc/self/cgroup',
      '/proc/self/mountinfo',
      DEFAULT_NAMESPACE_FILE,
    ]);
    // CRI-O's /etc/hostname is the sandbox's: not used in a cluster unless asked for.
    const crio = memoryFs({
      '/proc/self/cgroup': '0::/\n',
      '/proc/self/mountinfo': fixture('crio-cgroupns.v2.mountinfo'),
    });
    assert.equal(
      (await detectK8sResourceAttributes({ env: IN_CLUSTER, fs: crio }))[ATTR_CONTAINER_ID],
      undefined,
    );
    const asked = await detectK8sResourceAttributes({
      env: IN_CLUSTER,
      fs: crio,
      hostnameMountFallback: true,
    });
    assert.equal(asked[ATTR_CONTAINER_ID], CRIO_SANDBOX_ID);
  });

  it('without a cgroup file, the v1 cgroup mount roots name the container', async () => {
    const attrs = await detectK8sResourceAttributes({
      env: IN_CLUSTER,
      fs: memoryFs({ '/proc/self/mountinfo': fixture('containerd-cgroupfs.v1.mountinfo') }),
    });
    assert.deepEqual(attrs, { [ATTR_K8S_POD_UID]: V1_MOUNT_POD, [ATTR_CONTAINER_ID]: V1_MOUNT_ID });
  });

  it('outside Kubernetes it detects nothing and reads nothing', async () => {
    const fs = memoryFs({ '/proc/self/cgroup': fixture('docker-cgroupfs-plain.v2.cgroup') });
    const detector = new K8sResourceDetector({
      env: { K8S_NODE_NAME: 'laptop', POD_NAME: 'x', KUBERNETES_SERVICE_HOST: '' },
      fs,
    });
    assert.deepEqual(detector.detect(), {});
    assert.deepEqual(fs.reads, []);
    // Forced off inside a cluster too.
    assert.deepEqual(
      new K8sResourceDetector({ env: IN_CLUSTER, fs, inKubernetes: false }).detect(),
      {},
    );
  });

  it('forced on outside a cluster (plain docker): the hostname mount names the container', async () => {
    const attrs = await detectK8sResourceAttributes({
      env: { K8S_NODE_NAME: 'lab-node', K8S_CLUSTER_NAME: 'lab' },
      inKubernetes: true,
      fs: memoryFs({
        '/proc/self/cgroup': '0::/\n',
        '/proc/self/mountinfo': fixture('docker-plain.v2.mountinfo'),
      }),
    });
    assert.deepEqual(attrs, {
      [ATTR_K8S_NODE_NAME]: 'lab-node',
      [ATTR_K8S_CLUSTER_NAME]: 'lab',
      [ATTR_CONTAINER_ID]: DOCKER_V2_ID,
    });
  });

  it('missing files leave the attributes out', async () => {
    const detector = new K8sResourceDetector({
      env: { ...IN_CLUSTER, K8S_NODE_NAME: 'n1' },
      fs: memoryFs({}),
    });
    const detected = detector.detect().attributes ?? {};
    // Values that need I/O are promises that settle to undefined, never rejections.
    assert.deepEqual(await settle(detected), {
      [ATTR_K8S_NODE_NAME]: 'n1',
      [ATTR_K8S_NAMESPACE_NAME]: undefined,
      [ATTR_K8S_POD_UID]: undefined,
      [ATTR_CONTAINER_ID]: undefined,
      [ATTR_CONTAINER_RUNTIME_NAME]: undefined,
    });
    assert.deepEqual(
      await detectK8sResourceAttributes({
        env: { ...IN_CLUSTER, K8S_NODE_NAME: 'n1' },
        fs: memoryFs({}),
      }),
      { [ATTR_K8S_NODE_NAME]: 'n1' },
    );
  });

  it('rejects a namespace file that is not a namespace name', async () => {
    for (const text of ['', '   ', 'Not A Namespace!', 'a'.repeat(64), '-leading']) {
      const attrs = await detectK8sResourceAttributes({
        env: IN_CLUSTER,
        fs: memoryFs({ [DEFAULT_NAMESPACE_FILE]: text }),
      });
      assert.equal(attrs[ATTR_K8S_NAMESPACE_NAME], undefined, JSON.stringify(text));
    }
  });

  it('never throws: a throwing fs, a rejecting fs, a throwing environment', async () => {
    const throwing: K8sDetectorFs = {
      readFile: () => {
        throw new Error('EACCES: synchronous');
      },
    };
    const rejecting: K8sDetectorFs = { readFile: () => Promise.reject(new Error('EIO')) };
    const weird: K8sDetectorFs = {
      readFile: async () => 42 as unknown as string,
    };
    for (const fs of [throwing, rejecting, weird]) {
      const detected = new K8sResourceDetector({
        env: { ...IN_CLUSTER, K8S_NODE_NAME: 'n1' },
        fs,
      }).detect();
      const settled = await settle(detected.attributes);
      assert.equal(settled[ATTR_K8S_NODE_NAME], 'n1');
      assert.equal(settled[ATTR_CONTAINER_ID], undefined);
    }
    const hostileEnv = new Proxy(
      {},
      {
        get() {
          throw new Error('env exploded');
        },
      },
    ) as Record<string, string | undefined>;
    assert.deepEqual(new K8sResourceDetector({ env: hostileEnv, fs: throwing }).detect(), {});
  });
});

describe('the detector in the agent resource', () => {
  let saved: string | undefined;
  before(() => {
    saved = process.env.OTEL_RESOURCE_ATTRIBUTES;
  });
  after(() => {
    if (saved === undefined) delete process.env.OTEL_RESOURCE_ATTRIBUTES;
    else process.env.OTEL_RESOURCE_ATTRIBUTES = saved;
  });

  const detector = (): K8sResourceDetector =>
    new K8sResourceDetector({
      env: {
        ...IN_CLUSTER,
        K8S_NODE_NAME: 'worker-9',
        POD_NAME: 'alt-abcde',
        POD_NAMESPACE: 'voice',
        K8S_CLUSTER_NAME: 'from-detector',
      },
      fs: memoryFs({ '/proc/self/cgroup': fixture('containerd-systemd-burstable.v1.cgroup') }),
    });

  it('works with detectResources, and OTEL_RESOURCE_ATTRIBUTES overrides it', async () => {
    const direct = detectResources({ detectors: [detector()] });
    await direct.waitForAsyncAttributes?.();
    assert.equal(direct.attributes[ATTR_CONTAINER_ID], CONTAINERD_ID);

    process.env.OTEL_RESOURCE_ATTRIBUTES = 'k8s.cluster.name=from-env';
    const resource = await buildAgentResource({
      serviceName: 'audio-latency-tracker',
      serviceVersion: '0.0.0-test',
      detectors: [detector()],
    });
    assert.equal(resource.attributes[ATTR_K8S_CLUSTER_NAME], 'from-env');
    assert.equal(resource.attributes[ATTR_K8S_POD_UID], CONTAINERD_POD);
    assert.equal(resource.attributes[ATTR_K8S_NODE_NAME], 'worker-9');
    delete process.env.OTEL_RESOURCE_ATTRIBUTES;
  });

  describe('Prometheus target_info', () => {
    let pipeline: MeterPipeline;
    before(async () => {
      delete process.env.OTEL_RESOURCE_ATTRIBUTES;
      pipeline = await createMeterPipeline({
        serviceVersion: '0.0.0-test',
        host: '127.0.0.1',
        port: 0,
        latencyBuckets: [0.01, 0.1, 1],
        detectors: [detector()],
        otlp: {
          enabled: false,
          endpoint: 'http://127.0.0.1:1',
          headers: {},
          compression: 'none',
          timeoutMs: 1000,
          exportIntervalMs: 60000,
          exportTimeoutMs: 1000,
          temporality: 'cumulative',
          histogramAggregation: 'explicit',
        },
      });
    });
    after(() => pipeline.shutdown());

    it('carries every detected attribute as a label', async () => {
      const res = await fetch(`http://127.0.0.1:${pipeline.address.port}/metrics`);
      assert.equal(res.status, 200);
      const body = await res.text();
      const line = body.split('\n').find((l) => l.startsWith('target_info{'));
      assert.ok(line, 'target_info present');
      const labels = new Map<string, string>();
      for (const m of line.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels.set(m[1], m[2]);
      }
      assert.equal(labels.get('k8s_node_name'), 'worker-9');
      assert.equal(labels.get('k8s_pod_name'), 'alt-abcde');
      assert.equal(labels.get('k8s_namespace_name'), 'voice');
      assert.equal(labels.get('k8s_cluster_name'), 'from-detector');
      assert.equal(labels.get('k8s_pod_uid'), CONTAINERD_POD);
      assert.equal(labels.get('container_id'), CONTAINERD_ID);
      assert.equal(labels.get('container_runtime_name'), 'containerd');
      assert.equal(labels.get('service_name'), 'audio-latency-tracker');
      assert.match(line, / 1$/);
    });
  });
});
