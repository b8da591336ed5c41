/**
 * Container and pod identity from cgroup paths: pure parsing of /proc/<pid>/cgroup and
 * /proc/<pid>/mountinfo, plus thin readers over an injectable filesystem.
 *
 * Every kubelet names a container's cgroup after the pod UID and the runtime names the leaf after
 * the container ID, so a cgroup path is enough to find both, whatever the runtime (docker,
 * containerd, CRI-O), the cgroup driver (systemd slices and scopes, or cgroupfs directories) and
 * the cgroup version. Parsers return undefined on anything they do not recognise: the input comes
 * from the kernel of a node we do not control, and a process we cannot attribute is normal.
 */

import { readFile, readdir, stat } from 'node:fs/promises';

export type CgroupRuntime = 'docker' | 'containerd' | 'crio';
export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'guaranteed' | 'burstable' | 'besteffort';

export interface ContainerIdentity {
  /** 64 lower-case hex digits; absent for a pod-level cgroup or a CRI-O conmon scope. */
  readonly containerId?: string;
  /** Pod UID in its API form (dashed UUID, or the 32-hex config hash of a static pod). */
  readonly podUid?: string;
  readonly qosClass?: QosClass;
  /** Undefined when the path does not say (cgroupfs leaves under a pod are bare IDs). */
  readonly runtime?: CgroupRuntime;
  readonly driver: CgroupDriver;
}

/** One line of /proc/<pid>/cgroup: `hierarchy-id:controller-list:path`. */
export interface CgroupLine {
  readonly hierarchyId: number;
  /** v1 controllers (`cpu`, `memory`, `name=systemd`, ...); empty for the v2 line. */
  readonly controllers: readonly string[];
  readonly path: string;
}

export interface ProcCgroup {
  readonly version: 'v1' | 'v2' | 'hybrid';
  /** Path in the unified (v2) hierarchy: the `0::` line, when present. */
  readonly unifiedPath?: string;
  /** v1 hierarchies: each controller (or `name=...`) to its path. */
  readonly v1Paths: ReadonlyMap<string, string>;
  readonly lines: readonly CgroupLine[];
}

/** A cgroup filesystem mounted somewhere, as /proc/<pid>/mountinfo shows it. */
export interface CgroupMount {
  readonly mountPoint: string;
  /** Root of the mount inside the hierarchy, relative to the reader's cgroup namespace. A mount
   *  of the host tree seen from inside a cgroup namespace has a root like `/../../..`. */
  readonly root: string;
}

export interface CgroupMounts {
  /** Every cgroup2 mount, in mountinfo order. */
  readonly cgroup2: readonly CgroupMount[];
  /** The cgroup2 mount with the widest view (see widestMount); undefined without cgroup2. */
  readonly unified?: CgroupMount;
  /** v1 controller (or `name=...`) to the widest mount of its hierarchy. */
  readonly v1: ReadonlyMap<string, CgroupMount>;
}

export interface MountInfoEntry {
  readonly mountId: number;
  readonly parentId: number;
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
  readonly superOptions: readonly string[];
}

/** The filesystem calls the readers need; tests pass fixtures, production uses nodeCgroupFs. */
export interface CgroupFs {
  readFile(path: string): Promise<string>;
  /** Names of the subdirectories of path. */
  listDirectories(path: string): Promise<string[]>;
  /** Inode number of path: the cgroup ID of a cgroup v2 directory (bpf_get_current_cgroup_id). */
  inode(path: string): Promise<bigint>;
}

export const nodeCgroupFs: CgroupFs = {
  readFile: (path) => readFile(path, 'utf8'),
  listDirectories: async (path) =>
    (await readdir(path, { withFileTypes: true }))
      .filter((d) => d.isDirectory())
      .map((d) => d.name),
  inode: async (path) => (await stat(path, { bigint: true })).ino,
};

// ---------------------------------------------------------------------------------------------
// Path shapes

const HEX64 = '[0-9a-f]{64}';
/** A pod UID: a UUID whose dashes systemd slice names turn into underscores, or the 32-hex
 *  config hash the kubelet uses as the UID of a static pod. */
const POD_UID =
  '[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}';

/** systemd driver: `kubepods-burstable-pod<uid>.slice`; a cgroup root other than `/` prefixes
 *  every slice name with its own (kind: `kubelet-kubepods-...`). Guaranteed pods have no QoS. */
const SYSTEMD_POD = new RegExp(
  `^(?:.+-)?kubepods(?:-(burstable|besteffort))?-pod(${POD_UID})\\.slice$`,
);
/** cgroupfs driver: `pod<uid>` under `kubepods`, `kubepods/burstable` or `kubepods/besteffort`. */
const CGROUPFS_POD = new RegExp(`^pod(${POD_UID})$`);
/** systemd driver: `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`. */
const SYSTEMD_CONTAINER = new RegExp(`^(cri-containerd|crio|docker|libpod)-(${HEX64})\\.scope$`);
/** The cgroupsPath containerd writes for the systemd driver: `<slice>:cri-containerd:<id>`. */
const SYSTEMD_TRIPLE = new RegExp(`^([^:]+\\.slice):(cri-containerd|crio|docker):(${HEX64})$`);
/** cgroupfs driver: a bare ID (docker, containerd) or `crio-<id>` (CRI-O). */
const CGROUPFS_CONTAINER = new RegExp(`^(crio-)?(${HEX64})$`);
/** CRI-O's monitor process lives beside the container, named after it: never the container. */
const CONMON = new RegExp(`^(?:crio|libpod)-conmon-${HEX64}(?:\\.scope)?$`);

const RUNTIME_BY_PREFIX: Readonly<Record<string, CgroupRuntime | undefined>> = {
  'cri-containerd': 'containerd',
  crio: 'crio',
  docker: 'docker',
  libpod: undefined, // podman: not a Kubernetes runtime we report
};

const QOS_DIRS: ReadonlySet<string> = new Set(['burstable', 'besteffort']);

interface PodMatch {
  index: number;
  podUid: string;
  qosClass?: QosClass;
  systemd: boolean;
}

interface ContainerMatch {
  containerId: string;
  runtime?: CgroupRuntime;
  systemd: boolean;
  /** A colon triple also names the pod slice. */
  podSlice?: string;
}

/** Pod UIDs in slice names use `_` where the API has `-`. */
export function normalizePodUid(raw: string): string {
  return raw.replace(/_/g, '-');
}

function isKubepodsDir(segment: string): boolean {
  return segment === 'kubepods' || segment.endsWith('-kubepods') || segment === 'kubepods.slice';
}

function matchSystemdPod(segment: string): Omit<PodMatch, 'index'> | undefined {
  const m = SYSTEMD_POD.exec(segment);
  if (!m) return undefined;
  const qosClass: QosClass = (m[1] as QosClass | undefined) ?? 'guaranteed';
  return { podUid: normalizePodUid(m[2]), qosClass, systemd: true };
}

function matchCgroupfsPod(segments: readonly string[], i: number): PodMatch | undefined {
  const m = CGROUPFS_POD.exec(segments[i]);
  if (!m || i === 0) return undefined;
  const parent = segments[i - 1];
  let qosClass: QosClass | undefined;
  if (QOS_DIRS.has(parent) && i >= 2 && isKubepodsDir(segments[i - 2])) {
    qosClass = parent as QosClass;
  } else if (isKubepodsDir(parent)) {
    qosClass = 'guaranteed';
  } else {
    return undefined; // `pod<uuid>` outside kubepods is someone else's naming
  }
  return { index: i, podUid: normalizePodUid(m[1]), qosClass, systemd: false };
}

function findPod(segments: readonly string[]): PodMatch | undefined {
  for (let i = 0; i < segments.length; i++) {
    const systemd = matchSystemdPod(segments[i]);
    if (systemd) return { index: i, ...systemd };
    const cgroupfs = matchCgroupfsPod(segments, i);
    if (cgroupfs) return cgroupfs;
  }
  return undefined;
}

function matchContainer(segments: readonly string[], i: number): ContainerMatch | undefined {
  const segment = segments[i];
  if (CONMON.test(segment)) return undefined;
  let m = SYSTEMD_CONTAINER.exec(segment);
  if (m) return { containerId: m[2], runtime: RUNTIME_BY_PREFIX[m[1]], systemd: true };
  m = SYSTEMD_TRIPLE.exec(segment);
  if (m) {
    return { containerId: m[3], runtime: RUNTIME_BY_PREFIX[m[2]], systemd: true, podSlice: m[1] };
  }
  m = CGROUPFS_CONTAINER.exec(segment);
  if (m) {
    const runtime: CgroupRuntime | undefined = m[1]
      ? 'crio'
      : i > 0 && segments[i - 1] === 'docker'
        ? 'docker'
        : undefined;
    return { containerId: m[2], runtime, systemd: false };
  }
  return undefined;
}

/**
 * Container and pod of one cgroup path (a line's path from /proc/<pid>/cgroup, or a directory
 * relative to a cgroup mount). Undefined when the path names neither.
 *
 * Under a pod, the first container-shaped segment after the pod is the pod's container (deeper
 * ones are nested inside it, e.g. docker-in-docker). Outside pods the innermost one is taken.
 * Anything before the pod (kind's `/docker/<node>/kubelet`, a custom cgroup root) is ignored.
 */
export function parseCgroupPath(path: string): ContainerIdentity | undefined {
  if (typeof path !== 'string' || path.length === 0 || path.length > 4096) return undefined;
  const segments = path.split('/').filter((s) => s !== '' && s !== '.' && s !== '..');
  if (segments.length === 0) return undefined;
  let pod = findPod(segments);
  let container: ContainerMatch | undefined;
  if (pod) {
    for (let i = pod.index + 1; i < segments.length && !container; i++) {
      container = matchContainer(segments, i);
    }
  } else {
    for (let i = segments.length - 1; i >= 0 && !container; i--) {
      container = matchContainer(segments, i);
    }
    const slicePod = container?.podSlice ? matchSystemdPod(container.podSlice) : undefined;
    if (slicePod) pod = { index: -1, ...slicePod };
  }
  if (!pod && !container) return undefined;
  const identity: {
    -readonly [K in keyof ContainerIdentity]: ContainerIdentity[K];
  } = { driver: pod?.systemd || container?.systemd ? 'systemd' : 'cgroupfs' };
  if (container) identity.containerId = container.containerId;
  if (pod) {
    identity.podUid = pod.podUid;
    if (pod.qosClass) identity.qosClass = pod.qosClass;
  }
  if (container?.runtime) identity.runtime = container.runtime;
  return identity;
}

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/cgroup

function parseCgroupLine(line: string): CgroupLine | undefined {
  // The path may itself contain ':' (containerd's systemd triple), so split only twice.
  const first = line.indexOf(':');
  const second = first < 0 ? -1 : line.indexOf(':', first + 1);
  if (first <= 0 || second < 0) return undefined;
  const idText = line.slice(0, first);
  if (!/^\d{1,10}$/.test(idText)) return undefined;
  const path = line.slice(second + 1);
  if (!path.startsWith('/')) return undefined;
  const list = line.slice(first + 1, second);
  const controllers = list === '' ? [] : list.split(',');
  return { hierarchyId: Number(idText), controllers, path };
}

/** Parses /proc/<pid>/cgroup. Undefined when no line is well-formed. */
export function parseProcCgroup(content: string): ProcCgroup | undefined {
  if (typeof content !== 'string') return undefined;
  const lines: CgroupLine[] = [];
  const v1Paths = new Map<string, string>();
  let unifiedPath: string | undefined;
  for (const raw of content.split('\n')) {
    const line = parseCgroupLine(raw.trim());
    if (!line) continue;
    lines.push(line);
    if (line.hierarchyId === 0 && line.controllers.length === 0) {
      unifiedPath = line.path;
    } else {
      for (const c of line.controllers) v1Paths.set(c, line.path);
    }
  }
  if (lines.length === 0) return undefined;
  const hasV1 = lines.some((l) => l.hierarchyId !== 0);
  const version = !hasV1 ? 'v2' : unifiedPath === undefined ? 'v1' : 'hybrid';
  return unifiedPath === undefined
    ? { version, v1Paths, lines }
    : { version, unifiedPath, v1Paths, lines };
}

function score(identity: ContainerIdentity | undefined): number {
  if (!identity) return 0;
  return (identity.containerId ? 2 : 0) + (identity.podUid ? 1 : 0);
}

/**
 * The identity a process's cgroups give: the unified path first, then the v1 hierarchies (a
 * cgroup v2 container may still show v1 lines without its ID, and a cgroup namespace shows
 * `0::/`). The path naming both a container and a pod wins.
 */
export function identityFromProcCgroup(cgroup: ProcCgroup): ContainerIdentity | undefined {
  const paths: string[] = [];
  if (cgroup.unifiedPath !== undefined) paths.push(cgroup.unifiedPath);
  for (const line of cgroup.lines) if (line.hierarchyId !== 0) paths.push(line.path);
  let best: ContainerIdentity | undefined;
  for (const path of paths) {
    const identity = parseCgroupPath(path);
    if (score(identity) > score(best)) best = identity;
    if (score(best) === 3) break;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/mountinfo

/** mountinfo escapes space, tab, newline and backslash as octal (`\040`). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function parseMountInfoLine(line: string): MountInfoEntry | undefined {
  // id parent major:minor root mount-point options [optional...] - fstype source super-options
  const fields = line.split(' ');
  const dash = fields.indexOf('-', 6);
  if (fields.length < 10 || dash < 0 || dash + 3 > fields.length) return undefined;
  const mountId = Number(fields[0]);
  const parentId = Number(fields[1]);
  if (!Number.isInteger(mountId) || !Number.isInteger(parentId)) return undefined;
  if (!/^\d+:\d+$/.test(fields[2])) return undefined;
  return {
    mountId,
    parentId,
    root: unescapeMountField(fields[3]),
    mountPoint: unescapeMountField(fields[4]),
    fsType: fields[dash + 1],
    source: unescapeMountField(fields[dash + 2]),
    superOptions: (fields[dash + 3] ?? '').split(','),
  };
}

/** Parses /proc/<pid>/mountinfo, skipping malformed lines. */
export function parseMountInfo(content: string): MountInfoEntry[] {
  if (typeof content !== 'string') return [];
  const entries: MountInfoEntry[] = [];
  for (const raw of content.split('\n')) {
    const entry = parseMountInfoLine(raw.trim());
    if (entry) entries.push(entry);
  }
  return entries;
}

const V1_CONTROLLERS: ReadonlySet<string> = new Set([
  'blkio',
  'cpu',
  'cpuacct',
  'cpuset',
  'devices',
  'freezer',
  'hugetlb',
  'memory',
  'misc',
  'net_cls',
  'net_prio',
  'perf_event',
  'pids',
  'rdma',
  'debug',
]);

/** Normalised segments of an absolute cgroup path; leading `..` (outside our namespace) kept. */
function pathSegments(path: string): string[] {
  const out: string[] = [];
  for (const s of path.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(s);
  }
  return out;
}

/** How much of the hierarchy a mount shows: more `..` and fewer names is wider. */
function breadth(mount: CgroupMount): number {
  const segments = pathSegments(mount.root);
  const up = segments.filter((s) => s === '..').length;
  return up * 1000 - (segments.length - up);
}

/** Of several mounts of one hierarchy, the one that shows the most of it (the host's tree
 *  bind-mounted into a container beats the container's own namespaced view). */
export function widestMount(mounts: readonly CgroupMount[]): CgroupMount | undefined {
  let best: CgroupMount | undefined;
  for (const m of mounts) if (!best || breadth(m) > breadth(best)) best = m;
  return best;
}

/** The cgroup2 mount(s) and the v1 hierarchy mounts in mountinfo. Nothing assumes /sys/fs/cgroup. */
export function findCgroupMounts(mountinfo: string | readonly MountInfoEntry[]): CgroupMounts {
  const entries = typeof mountinfo === 'string' ? parseMountInfo(mountinfo) : mountinfo;
  const cgroup2: CgroupMount[] = [];
  const v1All = new Map<string, CgroupMount[]>();
  for (const e of entries) {
    const mount: CgroupMount = { mountPoint: e.mountPoint, root: e.root };
    if (e.fsType === 'cgroup2') {
      cgroup2.push(mount);
    } else if (e.fsType === 'cgroup') {
      for (const opt of e.superOptions) {
        if (!V1_CONTROLLERS.has(opt) && !opt.startsWith('name=')) continue;
        const list = v1All.get(opt) ?? [];
        list.push(mount);
        v1All.set(opt, list);
      }
    }
  }
  const v1 = new Map<string, CgroupMount>();
  for (const [controller, list] of v1All) {
    const widest = widestMount(list);
    if (widest) v1.set(controller, widest);
  }
  const unified = widestMount(cgroup2);
  return unified ? { cgroup2, unified, v1 } : { cgroup2, v1 };
}

/**
 * The directory of a cgroup under a mount: `path` is as /proc/<pid>/cgroup shows it, read in
 * the same cgroup namespace as the mountinfo that gave `mount`. Undefined when the mount does
 * not show that part of the hierarchy.
 */
export function cgroupDirectory(mount: CgroupMount, path: string): string | undefined {
  if (typeof path !== 'string' || !path.startsWith('/')) return undefined;
  const root = pathSegments(mount.root);
  const target = pathSegments(path);
  if (target.length < root.length) return undefined;
  for (let i = 0; i < root.length; i++) if (root[i] !== target[i]) return undefined;
  const rest = target.slice(root.length);
  if (rest.includes('..')) return undefined;
  const base = mount.mountPoint.endsWith('/') ? mount.mountPoint.slice(0, -1) : mount.mountPoint;
  return rest.length === 0 ? mount.mountPoint : `${base}/${rest.join('/')}`;
}

const MOUNT_MARKERS: ReadonlySet<string> = new Set(['containers', 'overlay-containers']);
const KUBELET_POD_DIR =
  /\/kubelet\/pods\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})\//;
const ID64 = /^[0-9a-f]{64}$/;

/**
 * What a process's own mountinfo says about its container when /proc/self/cgroup does not (a
 * cgroup namespace shows `0::/`):
 * - `cgroupIdentity`: the roots of its cgroup mounts (without a cgroup namespace they are the
 *   container's cgroup path);
 * - `podUid`: the kubelet's per-pod directory (`/var/lib/kubelet/pods/<uid>/...`, source of
 *   /etc/hosts, /dev/termination-log and volumes);
 * - `hostnameContainerId`: the contrib ContainerDetector's rule, the ID in the source of the
 *   /etc/hostname bind mount (`.../containers/<id>/hostname` for docker,
 *   `.../overlay-containers/<id>/userdata/hostname` for CRI-O and podman). Under Kubernetes that
 *   file belongs to the pod sandbox, so it is the pause container's ID, not ours.
 */
export function identityFromMountInfo(mountinfo: string | readonly MountInfoEntry[]): {
  cgroupIdentity?: ContainerIdentity;
  podUid?: string;
  hostnameContainerId?: string;
} {
  const entries = typeof mountinfo === 'string' ? parseMountInfo(mountinfo) : mountinfo;
  const result: {
    cgroupIdentity?: ContainerIdentity;
    podUid?: string;
    hostnameContainerId?: string;
  } = {};
  for (const e of entries) {
    if (e.fsType === 'cgroup' || e.fsType === 'cgroup2') {
      const identity = parseCgroupPath(e.root);
      if (score(identity) > score(result.cgroupIdentity)) result.cgroupIdentity = identity;
    }
    if (!result.podUid) {
      const m = KUBELET_POD_DIR.exec(e.root);
      if (m) result.podUid = m[1];
    }
    if (!result.hostnameContainerId && e.root.includes('hostname')) {
      const parts = e.root.split('/');
      for (let i = 0; i < parts.length - 1; i++) {
        if (MOUNT_MARKERS.has(parts[i]) && ID64.test(parts[i + 1])) {
          result.hostnameContainerId = parts[i + 1];
          break;
        }
      }
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Readers over an injectable filesystem

export interface ProcReadOptions {
  fs?: CgroupFs;
  /** Where the proc filesystem is mounted (e.g. `/host/proc`). Default `/proc`. */
  procRoot?: string;
}

function procPath(pid: number | 'self', file: string, procRoot = '/proc'): string | undefined {
  if (pid !== 'self' && !(Number.isSafeInteger(pid) && pid > 0)) return undefined;
  return `${procRoot}/${pid}/${file}`;
}

async function tryRead(fs: CgroupFs, path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    return await fs.readFile(path);
  } catch {
    return undefined; // the process exited, or we may not look: both mean "unknown"
  }
}

/** /proc/<pid>/cgroup parsed; undefined when the process is gone or the file is unreadable. */
export async function readProcessCgroup(
  pid: number | 'self',
  opts: ProcReadOptions = {},
): Promise<ProcCgroup | undefined> {
  const content = await tryRead(opts.fs ?? nodeCgroupFs, procPath(pid, 'cgroup', opts.procRoot));
  return content === undefined ? undefined : parseProcCgroup(content);
}

/** The container and pod of a process, from its cgroup file. */
export async function readProcessIdentity(
  pid: number | 'self',
  opts: ProcReadOptions = {},
): Promise<ContainerIdentity | undefined> {
  const cgroup = await readProcessCgroup(pid, opts);
  return cgroup ? identityFromProcCgroup(cgroup) : undefined;
}

/** /proc/<pid>/mountinfo's cgroup mounts; undefined when unreadable. */
export async function readCgroupMounts(
  pid: number | 'self',
  opts: ProcReadOptions = {},
): Promise<CgroupMounts | undefined> {
  const content = await tryRead(opts.fs ?? nodeCgroupFs, procPath(pid, 'mountinfo', opts.procRoot));
  return content === undefined ? undefined : findCgroupMounts(content);
}

/** cgroup v2 ID (inode) of a directory; undefined when it is gone. */
export async function cgroupIdOf(
  dir: string,
  fs: CgroupFs = nodeCgroupFs,
): Promise<bigint | undefined> {
  try {
    return await fs.inode(dir);
  } catch {
    return undefined;
  }
}

export interface ContainerCgroup {
  /** cgroup v2 ID, as bpf_skb_cgroup_id / bpf_get_current_cgroup_id report it. */
  readonly cgroupId: bigint;
  /** Directory relative to the mount, with a leading '/'. */
  readonly path: string;
  readonly identity: ContainerIdentity;
}

export interface ScanOptions {
  fs?: CgroupFs;
  /** Directories deeper than this below the mount are not visited. Default 12. */
  maxDepth?: number;
  /** Stop after this many containers. Default 65536. */
  maxContainers?: number;
}

/**
 * Walks a cgroup v2 mount and lists the container cgroups under it with their cgroup IDs, so a
 * cgroup ID read by the classifier maps to a container and pod without a process to look at.
 * A container's own subtree is not descended into; unreadable directories are skipped (cgroups
 * come and go during the walk).
 */
export async function scanContainerCgroups(
  mount: CgroupMount,
  opts: ScanOptions = {},
): Promise<ContainerCgroup[]> {
  const fs = opts.fs ?? nodeCgroupFs;
  const maxDepth = opts.maxDepth ?? 12;
  const maxContainers = opts.maxContainers ?? 65536;
  const found: ContainerCgroup[] = [];
  const stack: Array<{ rel: string; depth: number }> = [{ rel: '', depth: 0 }];
  const base = mount.mountPoint.endsWith('/') ? mount.mountPoint.slice(0, -1) : mount.mountPoint;
  while (stack.length > 0 && found.length < maxContainers) {
    const { rel, depth } = stack.pop() as { rel: string; depth: number };
    let children: string[];
    try {
      children = await fs.listDirectories(base + rel);
    } catch {
      continue;
    }
    for (const name of children) {
      const childRel = `${rel}/${name}`;
      const identity = parseCgroupPath(childRel);
      if (identity?.containerId) {
        const cgroupId = await cgroupIdOf(base + childRel, fs);
        if (cgroupId !== undefined) found.push({ cgroupId, path: childRel, identity });
        if (found.length >= maxContainers) break;
      } else if (depth + 1 < maxDepth) {
        stack.push({ rel: childRel, depth: depth + 1 });
      }
    }
  }
  return found;
}
