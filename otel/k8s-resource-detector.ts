/**
 * Kubernetes resource detector: the semantic-convention attributes of the agent's own pod and
 * node (k8s.node.name, k8s.pod.name, k8s.pod.uid, k8s.namespace.name, k8s.cluster.name,
 * container.id, container.runtime.name).
 *
 * Sources, first that answers: the downward API environment (K8S_NODE_NAME, POD_NAME,
 * POD_NAMESPACE, POD_UID), then the service-account namespace file, then the agent's own
 * cgroup (/proc/self/cgroup, then /proc/self/mountinfo). Outside Kubernetes it detects nothing.
 * Like every OpenTelemetry detector it never throws: a value it cannot find is left out.
 */

import { readFile } from 'node:fs/promises';
import type { Attributes, AttributeValue } from '@opentelemetry/api';
import type {
  DetectedResource,
  DetectedResourceAttributes,
  ResourceDetectionConfig,
  ResourceDetector,
} from '@opentelemetry/resources';
import {
  ATTR_CONTAINER_ID,
  ATTR_K8S_CLUSTER_NAME,
  ATTR_K8S_NAMESPACE_NAME,
  ATTR_K8S_NODE_NAME,
  ATTR_K8S_POD_NAME,
  ATTR_K8S_POD_UID,
} from '@opentelemetry/semantic-conventions';
import {
  identityFromMountInfo,
  identityFromProcCgroup,
  parseProcCgroup,
  type CgroupRuntime,
  type ContainerIdentity,
} from '../src/k8s/cgroup.js';
import { ATTR_CONTAINER_RUNTIME_NAME } from './semconv.js';

/** Environment variables read (set them from the downward API). */
export const ENV_NODE_NAME = 'K8S_NODE_NAME' as const;
export const ENV_POD_NAME = 'POD_NAME' as const;
export const ENV_POD_NAMESPACE = 'POD_NAMESPACE' as const;
export const ENV_POD_UID = 'POD_UID' as const;
export const ENV_CLUSTER_NAME = 'K8S_CLUSTER_NAME' as const;
const ENV_HOSTNAME = 'HOSTNAME';
const ENV_SERVICE_HOST = 'KUBERNETES_SERVICE_HOST';

export const DEFAULT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** Values of container.runtime.name, as the runtimes call themselves. */
const RUNTIME_NAMES: Readonly<Record<CgroupRuntime, string>> = {
  containerd: 'containerd',
  crio: 'cri-o',
  docker: 'docker',
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const POD_UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;

export interface K8sDetectorFs {
  readFile(path: string): Promise<string>;
}

export interface K8sResourceDetectorOptions {
  /** Default process.env (read at detect() time). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Default node:fs/promises. */
  fs?: K8sDetectorFs;
  /** true/false forces the decision; default: in Kubernetes when KUBERNETES_SERVICE_HOST is set. */
  inKubernetes?: boolean;
  /**
   * Take container.id from the /etc/hostname bind mount (the contrib ContainerDetector's last
   * resort) when the cgroups do not name the container. Under Kubernetes that file belongs to
   * the pod sandbox, so the ID would be the pause container's: default true only when
   * KUBERNETES_SERVICE_HOST is unset (detection forced on a plain docker or podman host).
   */
  hostnameMountFallback?: boolean;
  cgroupFile?: string;
  mountInfoFile?: string;
  namespaceFile?: string;
}

const defaultFs: K8sDetectorFs = { readFile: (path) => readFile(path, 'utf8') };

function envValue(
  env: Readonly<Record<string, string | undefined>>,
  name: string,
): string | undefined {
  const raw = env[name];
  if (typeof raw !== 'string') return undefined;
  const value = raw.trim();
  return value === '' ? undefined : value;
}

async function readText(fs: K8sDetectorFs, path: string): Promise<string | undefined> {
  try {
    const text = await fs.readFile(path);
    return typeof text === 'string' ? text : undefined;
  } catch {
    return undefined; // absent, unreadable or a throwing fs: the attribute is just unknown
  }
}

interface SelfIdentity {
  containerId?: string;
  podUid?: string;
  runtime?: CgroupRuntime;
}

function merge(into: SelfIdentity, from: ContainerIdentity | undefined): void {
  if (!from) return;
  into.containerId ??= from.containerId;
  into.podUid ??= from.podUid;
  if (into.runtime === undefined && from.containerId === into.containerId) {
    into.runtime = from.runtime;
  }
}

export class K8sResourceDetector implements ResourceDetector {
  private readonly opts: K8sResourceDetectorOptions;

  constructor(opts: K8sResourceDetectorOptions = {}) {
    this.opts = opts;
  }

  detect(_config?: ResourceDetectionConfig): DetectedResource {
    try {
      return this.detectUnsafe();
    } catch {
      return {}; // a detector must never take the SDK down
    }
  }

  private detectUnsafe(): DetectedResource {
    const env = this.opts.env ?? process.env;
    const inCluster = envValue(env, ENV_SERVICE_HOST) !== undefined;
    if (!(this.opts.inKubernetes ?? inCluster)) return {};
    const fs = this.opts.fs ?? defaultFs;
    const attributes: DetectedResourceAttributes = {};
    const put = (
      key: string,
      value: AttributeValue | Promise<AttributeValue | undefined> | undefined,
    ) => {
      if (value !== undefined) attributes[key] = value;
    };

    const nodeName = envValue(env, ENV_NODE_NAME);
    put(ATTR_K8S_NODE_NAME, nodeName);
    put(ATTR_K8S_POD_NAME, podName(env, nodeName));
    put(ATTR_K8S_CLUSTER_NAME, envValue(env, ENV_CLUSTER_NAME));
    put(
      ATTR_K8S_NAMESPACE_NAME,
      envValue(env, ENV_POD_NAMESPACE) ??
        this.namespaceFromFile(fs, this.opts.namespaceFile ?? DEFAULT_NAMESPACE_FILE),
    );

    // One read of the cgroup files feeds three attributes.
    const self = this.selfIdentity(fs, this.opts.hostnameMountFallback ?? !inCluster);
    const envUid = envValue(env, ENV_POD_UID);
    put(ATTR_K8S_POD_UID, envUid ?? self.then((s) => s.podUid));
    put(
      ATTR_CONTAINER_ID,
      self.then((s) => s.containerId),
    );
    put(
      ATTR_CONTAINER_RUNTIME_NAME,
      self.then((s) => (s.runtime ? RUNTIME_NAMES[s.runtime] : undefined)),
    );
    return { attributes };
  }

  private async namespaceFromFile(fs: K8sDetectorFs, path: string): Promise<string | undefined> {
    const text = (await readText(fs, path))?.trim();
    return text !== undefined && DNS_LABEL.test(text) ? text : undefined;
  }

  private async selfIdentity(fs: K8sDetectorFs, hostnameFallback: boolean): Promise<SelfIdentity> {
    const self: SelfIdentity = {};
    try {
      const cgroupText = await readText(fs, this.opts.cgroupFile ?? '/proc/self/cgroup');
      const cgroup = cgroupText === undefined ? undefined : parseProcCgroup(cgroupText);
      if (cgroup) merge(self, identityFromProcCgroup(cgroup));
      if (self.containerId && self.podUid) return self;
      // A cgroup namespace shows `0::/`: the mount table still tells something.
      const mountText = await readText(fs, this.opts.mountInfoFile ?? '/proc/self/mountinfo');
      if (mountText === undefined) return self;
      const fromMounts = identityFromMountInfo(mountText);
      merge(self, fromMounts.cgroupIdentity);
      self.podUid ??= fromMounts.podUid;
      if (hostnameFallback) self.containerId ??= fromMounts.hostnameContainerId;
    } catch {
      // parsing never throws by design; this guards the promise against any surprise
    }
    if (self.podUid !== undefined && !POD_UID.test(self.podUid)) delete self.podUid;
    return self;
  }
}

/**
 * POD_NAME, else HOSTNAME (a pod's hostname is its name), except with hostNetwork, where
 * HOSTNAME is the node's: a HOSTNAME equal to the node name is not taken as the pod's.
 */
function podName(
  env: Readonly<Record<string, string | undefined>>,
  nodeName: string | undefined,
): string | undefined {
  const explicit = envValue(env, ENV_POD_NAME);
  if (explicit) return explicit;
  const host = envValue(env, ENV_HOSTNAME);
  if (!host) return undefined;
  if (nodeName) {
    const node = nodeName.toLowerCase();
    const h = host.toLowerCase();
    if (h === node || h === node.split('.')[0] || node === h.split('.')[0]) return undefined;
  }
  return host;
}

/**
 * The detector's attributes with every value settled and unknown ones left out, for callers
 * that want plain attributes (resourceFromAttributes) rather than a detector.
 */
export async function detectK8sResourceAttributes(
  opts: K8sResourceDetectorOptions = {},
): Promise<Attributes> {
  const detected = new K8sResourceDetector(opts).detect().attributes ?? {};
  const out: Attributes = {};
  for (const [key, value] of Object.entries(detected)) {
    const settled = await Promise.resolve(value).catch(() => undefined);
    if (
      typeof settled === 'string' ||
      typeof settled === 'number' ||
      typeof settled === 'boolean'
    ) {
      out[key] = settled;
    }
  }
  return out;
}

/** A detector reading process.env and the real /proc. */
export const k8sResourceDetector: ResourceDetector = new K8sResourceDetector();
