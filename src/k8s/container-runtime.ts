/**
 * CONTAINER_RUNTIME=auto: which runtime runs this node's pods.
 *
 * The cgroup paths of pod containers say it outright under the systemd driver
 * (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`) and for CRI-O under
 * cgroupfs (`crio-<id>`); a cgroupfs leaf is a bare ID, so then the runtime sockets decide.
 * Sockets come second because one node often has several (docker installs containerd).
 */

import { stat } from 'node:fs/promises';
import type { ContainerRuntime } from '../config.js';
import {
  nodeCgroupFs,
  parseCgroupPath,
  parseProcCgroup,
  readCgroupMounts,
  scanContainerCgroups,
  type CgroupFs,
  type CgroupRuntime,
} from './cgroup.js';

export interface RuntimeDetection {
  /** Undefined when nothing on this node names a runtime. */
  readonly runtime: CgroupRuntime | undefined;
  readonly source: 'config' | 'cgroup' | 'socket' | 'none';
  /** One line for the log: what was seen and why this runtime. */
  readonly reason: string;
}

/** Well-known runtime sockets, in the order a tie is broken (CRI-O and cri-dockerd exist only
 *  where Kubernetes uses them; containerd's socket is present on most docker hosts too). */
export const RUNTIME_SOCKETS: ReadonlyArray<{
  readonly runtime: CgroupRuntime;
  readonly path: string;
}> = [
  { runtime: 'crio', path: '/var/run/crio/crio.sock' },
  { runtime: 'crio', path: '/run/crio/crio.sock' },
  { runtime: 'docker', path: '/run/cri-dockerd.sock' },
  { runtime: 'docker', path: '/var/run/cri-dockerd.sock' },
  { runtime: 'containerd', path: '/run/containerd/containerd.sock' },
  { runtime: 'containerd', path: '/var/run/containerd/containerd.sock' },
  { runtime: 'containerd', path: '/run/k3s/containerd/containerd.sock' },
  { runtime: 'docker', path: '/var/run/docker.sock' },
  { runtime: 'docker', path: '/run/docker.sock' },
];

const RUNTIME_ORDER: readonly CgroupRuntime[] = ['crio', 'containerd', 'docker'];

export interface CgroupRuntimeVote {
  readonly runtime: CgroupRuntime | undefined;
  /** Pod containers whose path names a runtime, per runtime. */
  readonly podContainers: Readonly<Record<CgroupRuntime, number>>;
  /** Containers outside pods (plain docker, the node container of kind), per runtime. */
  readonly otherContainers: Readonly<Record<CgroupRuntime, number>>;
  /** Pod containers whose path names no runtime (cgroupfs bare IDs). */
  readonly podContainersUnnamed: number;
}

function emptyCounts(): Record<CgroupRuntime, number> {
  return { docker: 0, containerd: 0, crio: 0 };
}

function majority(counts: Readonly<Record<CgroupRuntime, number>>): CgroupRuntime | undefined {
  let best: CgroupRuntime | undefined;
  for (const r of RUNTIME_ORDER) if (counts[r] > (best ? counts[best] : 0)) best = r;
  return best;
}

function describeCounts(counts: Readonly<Record<CgroupRuntime, number>>): string {
  return RUNTIME_ORDER.filter((r) => counts[r] > 0)
    .map((r) => `${r}=${counts[r]}`)
    .join(' ');
}

/** Counts runtimes named by cgroup paths; `runtime` is the majority among pod containers. */
export function runtimeFromCgroupPaths(paths: Iterable<string>): CgroupRuntimeVote {
  const podContainers = emptyCounts();
  const otherContainers = emptyCounts();
  const seen = new Set<string>();
  let podContainersUnnamed = 0;
  for (const path of paths) {
    const identity = parseCgroupPath(path);
    if (!identity?.containerId || seen.has(identity.containerId)) continue;
    seen.add(identity.containerId);
    if (!identity.runtime) {
      if (identity.podUid) podContainersUnnamed++;
    } else if (identity.podUid) {
      podContainers[identity.runtime]++;
    } else {
      otherContainers[identity.runtime]++;
    }
  }
  return { runtime: majority(podContainers), podContainers, otherContainers, podContainersUnnamed };
}

export type PathExists = (path: string) => boolean | Promise<boolean>;

const defaultExists: PathExists = async (path) => {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
};

export interface DetectRuntimeOptions {
  /** CONTAINER_RUNTIME; anything but 'auto' is returned as is. */
  configured: ContainerRuntime;
  /** cgroup paths of this node's processes or cgroup directories. Default: collected with
   *  collectNodeCgroupPaths (needs hostPID or the host's /proc and cgroup tree mounted). */
  cgroupPaths?: Iterable<string>;
  /** Existence check for the runtime sockets (tests inject one). */
  exists?: PathExists;
  /** Prefix of the host's filesystem when it is mounted into the agent (e.g. `/host`). */
  hostRoot?: string;
  fs?: CgroupFs;
  procRoot?: string;
}

async function presentSockets(exists: PathExists, hostRoot: string): Promise<string[]> {
  const present: string[] = [];
  for (const { path } of RUNTIME_SOCKETS) {
    let ok = false;
    try {
      ok = await exists(hostRoot + path);
    } catch {
      ok = false;
    }
    if (ok) present.push(path);
  }
  return present;
}

function runtimeOfSocket(path: string): CgroupRuntime | undefined {
  return RUNTIME_SOCKETS.find((s) => s.path === path)?.runtime;
}

/** Detects the runtime: the configured one, else pod cgroup paths, else sockets, else the
 *  containers outside pods. Never throws. */
export async function detectContainerRuntime(
  opts: DetectRuntimeOptions,
): Promise<RuntimeDetection> {
  if (opts.configured !== 'auto') {
    return {
      runtime: opts.configured,
      source: 'config',
      reason: `CONTAINER_RUNTIME=${opts.configured}`,
    };
  }
  const paths =
    opts.cgroupPaths ?? (await collectNodeCgroupPaths({ fs: opts.fs, procRoot: opts.procRoot }));
  const vote = runtimeFromCgroupPaths(paths);
  if (vote.runtime) {
    return {
      runtime: vote.runtime,
      source: 'cgroup',
      reason: `pod container cgroups name ${describeCounts(vote.podContainers)}`,
    };
  }
  const present = await presentSockets(opts.exists ?? defaultExists, opts.hostRoot ?? '');
  if (present.length > 0) {
    const runtime = runtimeOfSocket(present[0]);
    const unnamed =
      vote.podContainersUnnamed > 0
        ? `${vote.podContainersUnnamed} pod container cgroups name no runtime (cgroupfs); `
        : 'no pod container cgroup names a runtime; ';
    return {
      runtime,
      source: 'socket',
      reason: `${unnamed}sockets present: ${present.join(', ')}`,
    };
  }
  const other = majority(vote.otherContainers);
  if (other) {
    return {
      runtime: other,
      source: 'cgroup',
      reason: `no pod container cgroups nor runtime sockets; containers outside pods: ${describeCounts(vote.otherContainers)}`,
    };
  }
  return {
    runtime: undefined,
    source: 'none',
    reason: 'no container cgroups and none of the runtime sockets found',
  };
}

export interface CollectOptions {
  fs?: CgroupFs;
  procRoot?: string;
  /** Processes read at most. Default 4096. */
  maxProcesses?: number;
}

/**
 * cgroup paths of this node as far as the agent can see: every process's /proc/<pid>/cgroup
 * (all of the node's with hostPID) and the container directories under the widest cgroup2
 * mount (all of the node's when the host's cgroup tree is mounted). Never throws.
 */
export async function collectNodeCgroupPaths(opts: CollectOptions = {}): Promise<string[]> {
  const fs = opts.fs ?? nodeCgroupFs;
  const procRoot = opts.procRoot ?? '/proc';
  const max = opts.maxProcesses ?? 4096;
  const paths: string[] = [];
  let pids: string[] = [];
  try {
    pids = (await fs.listDirectories(procRoot)).filter((n) => /^\d+$/.test(n)).slice(0, max);
  } catch {
    pids = [];
  }
  for (const pid of pids) {
    let content: string;
    try {
      content = await fs.readFile(`${procRoot}/${pid}/cgroup`);
    } catch {
      continue; // exited meanwhile
    }
    for (const line of parseProcCgroup(content)?.lines ?? []) paths.push(line.path);
  }
  const mounts = await readCgroupMounts('self', { fs, procRoot });
  if (mounts?.unified) {
    const containers = await scanContainerCgroups(mounts.unified, { fs, maxContainers: 4096 });
    for (const c of containers) paths.push(c.path);
  }
  return paths;
}
