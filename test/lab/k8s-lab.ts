/**
 * Kubernetes clothes for the lab: each lab pod that plays a Kubernetes pod gets a pod UID, a
 * container ID, a Deployment-style name and a cgroup v2 directory shaped exactly like the one
 * containerd creates under the kubelet's systemd cgroup driver,
 *
 *   <cgroup2 mount>/kubepods.slice/kubepods-besteffort.slice/
 *       kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<64 hex>.scope
 *
 * and its processes are moved into that directory (cgroup.procs). podJson() gives the Pod a
 * test kubelet serves for it: namespace, ownerReferences (ReplicaSet), podIP = the lab IP,
 * containerStatuses[].containerID = containerd://<the same 64 hex>. So the agent sees the same
 * container ID in the pod list, in /proc/<pid>/cgroup and in the cgroup tree.
 *
 * The cgroup2 mount is read from /proc/self/mountinfo (a hybrid host mounts it at
 * /sys/fs/cgroup/unified). Only directories this file created are removed; their list is kept in
 * /run/alt-lab/<lab id>.cgroups so a run killed before teardown() is cleaned by the next one.
 */
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { makePod, type PodJson } from '../support/fake-k8s.js';
import type { Lab } from './lab.js';

const STATE_DIR = '/run/alt-lab';
const QOS_PATH = ['kubepods.slice', 'kubepods-besteffort.slice'];
/** The alphabet of Kubernetes' generated name suffixes (no vowels, no 0/1/3). */
const SAFE_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** A lab pod dressed as a Kubernetes pod with one containerd container. */
export interface K8sPod {
  /** The lab pod (network namespace) whose processes run in it. */
  readonly labPod: string;
  /** Deployment name; the pod is `<app>-<replicaset hash>-<suffix>`. */
  readonly app: string;
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  /** 64 lower-case hex digits. */
  readonly containerId: string;
  readonly replicaSet: string;
  /** Absolute directory of the container's cgroup. */
  readonly cgroupDir: string;
  /** The container's path inside the cgroup2 hierarchy, as /proc/<pid>/cgroup shows it. */
  readonly cgroupPath: string;
}

function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Mount point of the cgroup2 hierarchy showing the whole tree (root `/`), from mountinfo text.
 * Undefined without one (a pure cgroup v1 host).
 */
export function findCgroup2Mount(mountinfo: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const before = line.slice(0, sep).split(' ');
    const fstype = line.slice(sep + 3).split(' ')[0];
    if (fstype === 'cgroup2' && before[3] === '/') return unescapeMountField(before[4]);
  }
  return undefined;
}

function safeString(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += SAFE_CHARS[randomInt(SAFE_CHARS.length)];
  return s;
}

/** `kubepods-besteffort-pod<uid with _>.slice`: systemd unit names cannot hold dashes. */
function podSliceName(uid: string): string {
  return `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`;
}

function stateFile(labId: string): string {
  return `${STATE_DIR}/${labId}.cgroups`;
}

/** rmdir that never throws: the directory may be gone, or still busy (another run uses it). */
function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

function ownerAlive(labId: string): boolean {
  try {
    const m = /owner (\d+)/.exec(readFileSync(`${STATE_DIR}/${labId}.pid`, 'utf8'));
    return m !== null && existsSync(`/proc/${m[1]}`);
  } catch {
    return false;
  }
}

/**
 * Removes the cgroup directories recorded by labs whose owner is gone. Their processes may still
 * be dying (Lab.create() has just SIGKILLed them): whatever is left in a directory goes back to
 * the root cgroup of `mount` first.
 */
export function cleanupStaleCgroups(mount: string): number {
  let removed = 0;
  let files: string[];
  try {
    files = readdirSync(STATE_DIR).filter((f) => f.endsWith('.cgroups'));
  } catch {
    return 0;
  }
  for (const f of files) {
    const id = f.slice(0, -'.cgroups'.length);
    if (!ownerAlive(id)) removed += removeListed(join(STATE_DIR, f), mount);
  }
  return removed;
}

/**
 * Removes the directories listed in a state file, deepest first; the file goes when all are
 * gone, else it keeps those left for the next run.
 */
function removeListed(file: string, mount: string): number {
  let dirs: string[];
  try {
    dirs = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    return 0;
  }
  const left: string[] = [];
  // A cgroup directory can only be removed once its children are.
  for (const d of dirs.sort((a, b) => b.length - a.length)) {
    evacuate(d, mount);
    if (existsSync(d) && !tryRmdir(d)) left.push(d);
  }
  if (left.length === 0) rmSync(file, { force: true });
  else writeFileSync(file, left.map((d) => `${d}\n`).join(''));
  return dirs.length - left.length;
}

/** Moves every process of cgroup `dir` to the root cgroup of `mount`. */
function evacuate(dir: string, mount: string): void {
  for (const pid of readPids(dir)) {
    try {
      writeFileSync(join(mount, 'cgroup.procs'), `${pid}\n`);
    } catch {
      // exited meanwhile
    }
  }
}

const liveK8sLabs = new Set<K8sLab>();
let exitHandlerInstalled = false;

export class K8sLab {
  private readonly pods = new Map<string, K8sPod>();
  /** Directories created here, in creation order (parents first). */
  private readonly created: string[] = [];
  private torn = false;

  private constructor(
    readonly lab: Lab,
    /** The cgroup2 mount point. */
    readonly mount: string,
    readonly namespace: string,
    readonly node: string,
  ) {}

  /**
   * Prepares the Kubernetes side of `lab`: finds the cgroup2 mount and creates the QoS slices.
   * Throws without a cgroup2 mount. Teardown runs on process exit too.
   */
  static create(lab: Lab, opts: { namespace: string; node: string }): K8sLab {
    const mount = findCgroup2Mount(readFileSync('/proc/self/mountinfo', 'utf8'));
    if (mount === undefined) {
      throw new Error('k8s-lab: no cgroup2 mount with root / in /proc/self/mountinfo');
    }
    cleanupStaleCgroups(mount);
    // This lab's id was just claimed: a state file under it is a killed earlier run's.
    removeListed(stateFile(lab.id), mount);
    const k = new K8sLab(lab, mount, opts.namespace, opts.node);
    if (!exitHandlerInstalled) {
      exitHandlerInstalled = true;
      process.on('exit', () => {
        for (const l of liveK8sLabs) l.teardown();
      });
    }
    liveK8sLabs.add(k);
    try {
      let dir = mount;
      for (const part of QOS_PATH) {
        dir = join(dir, part);
        k.mkdir(dir);
      }
    } catch (err) {
      k.teardown();
      throw err;
    }
    return k;
  }

  private mkdir(dir: string): void {
    if (existsSync(dir)) return; // shared with another run, or a real kubelet: never ours
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return; // another run, just now
      throw new Error(`k8s-lab: mkdir ${dir}: ${(err as Error).message}`);
    }
    this.created.push(dir);
    appendFileSync(stateFile(this.lab.id), `${dir}\n`);
  }

  /**
   * A new Kubernetes pod for lab pod `labPod` (a fresh UID, container ID and name suffix; the
   * ReplicaSet hash is kept per app, as for a replacement pod of the same ReplicaSet), with its
   * cgroup directories created. Its processes are placed with place().
   */
  addPod(labPod: string, app: string): K8sPod {
    this.lab.pod(labPod); // throws for an unknown lab pod
    const existing = [...this.pods.values()].find((p) => p.app === app);
    const replicaSet = existing?.replicaSet ?? `${app}-${safeString(10)}`;
    const uid = randomUUID();
    const containerId = randomBytes(32).toString('hex');
    const rel = [...QOS_PATH, podSliceName(uid), `cri-containerd-${containerId}.scope`];
    const pod: K8sPod = {
      labPod,
      app,
      name: `${replicaSet}-${safeString(5)}`,
      namespace: this.namespace,
      uid,
      containerId,
      replicaSet,
      cgroupDir: join(this.mount, ...rel),
      cgroupPath: `/${rel.join('/')}`,
    };
    this.mkdir(join(this.mount, ...rel.slice(0, -1)));
    this.mkdir(pod.cgroupDir);
    this.pods.set(uid, pod);
    return pod;
  }

  /** Moves process `pid` (all its threads) into the pod's container cgroup. */
  place(pod: K8sPod, pid: number): void {
    try {
      writeFileSync(join(pod.cgroupDir, 'cgroup.procs'), `${pid}\n`);
    } catch (err) {
      throw new Error(
        `k8s-lab: moving pid ${pid} into ${pod.cgroupDir}: ${(err as Error).message}`,
      );
    }
  }

  /** Pids in the pod's container cgroup now. */
  pidsOf(pod: K8sPod): number[] {
    return readPids(pod.cgroupDir);
  }

  /** Moves every process of `from` into `to` (a pod replaced while its process keeps running). */
  movePods(from: K8sPod, to: K8sPod): void {
    for (const pid of this.pidsOf(from)) this.place(to, pid);
  }

  /**
   * The Pod the kubelet serves for `pod`: Running, its lab IP, owned by its ReplicaSet, one
   * container whose containerID is the cgroup's.
   */
  podJson(pod: K8sPod): PodJson {
    const json = makePod({
      name: pod.name,
      namespace: pod.namespace,
      uid: pod.uid,
      node: this.node,
      ip: this.lab.pod(pod.labPod).ip,
      owner: { kind: 'ReplicaSet', name: pod.replicaSet },
      labels: { app: pod.app, 'pod-template-hash': pod.replicaSet.slice(pod.app.length + 1) },
    });
    const status = json.status as { containerStatuses: { containerID: string; name: string }[] };
    status.containerStatuses[0].containerID = `containerd://${pod.containerId}`;
    status.containerStatuses[0].name = pod.app;
    const spec = json.spec as { containers: { name: string }[] };
    spec.containers[0].name = pod.app;
    return json;
  }

  /**
   * Removes a pod's cgroup directories (processes still inside go back to the root cgroup
   * first). Never throws; returns the directories that could not be removed.
   */
  removePod(pod: K8sPod): string[] {
    const left: string[] = [];
    evacuate(pod.cgroupDir, this.mount);
    for (const dir of [pod.cgroupDir, join(pod.cgroupDir, '..')]) {
      if (existsSync(dir) && !tryRmdir(dir)) left.push(dir);
    }
    this.pods.delete(pod.uid);
    return left;
  }

  /** Removes every directory created here, deepest first. Idempotent, never throws. */
  teardown(): string[] {
    if (this.torn) return [];
    this.torn = true;
    const left: string[] = [];
    for (const pod of [...this.pods.values()]) left.push(...this.removePod(pod));
    for (const dir of [...this.created].reverse()) {
      // A QoS slice another run (or a pod of it) still uses stays: busy is not a failure here.
      if (existsSync(dir) && !tryRmdir(dir) && !QOS_PATH.some((q) => dir.endsWith(q))) {
        left.push(dir);
      }
    }
    if (left.length === 0) rmSync(stateFile(this.lab.id), { force: true });
    liveK8sLabs.delete(this);
    return left;
  }
}

function readPids(cgroupDir: string): number[] {
  try {
    return readFileSync(join(cgroupDir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}
