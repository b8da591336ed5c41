/**
 * Hostile Kubernetes input for fuzzing the pod parser, the pod cache and the pod sources:
 * real-shaped Pods (test/support/fake-k8s.ts makePod) and mutations that break them
 * the ways a confused or hostile API server, kubelet or proxy could.
 *
 *   new PodMutator(rng, { node })            basePod(), mutatedPod(), mutatedList(n),
 *                                            watchEvent(), watchLine(), garbageBodies()
 *   sentinelIp(i) / FUZZ_IPV4_PREFIX         address ranges: fuzz pods never use sentinel ones
 *
 * Mutations: every field the agent reads missing (metadata, name, namespace, uid, status, podIP,
 * podIPs, containerStatuses, containerID, ownerReferences, nodeName, hostNetwork, phase...),
 * wrong JSON types everywhere, 1 MB names, labels and annotations, 100k-entry arrays, invalid
 * IPs, duplicate UIDs/IPs/container IDs, prototype-pollution keys (`__proto__`, `constructor`
 * as own keys, as JSON.parse makes them), deep nesting, odd phases, timestamps and
 * resourceVersions. Watch lines add wrong event types and objects, truncated and non-JSON lines.
 *
 * Everything random comes from one FuzzRng (./fuzz-random.ts; UIDs and container IDs too): a
 * seed replays a run.
 */
import type { FuzzRng } from './fuzz-random.js';
import { makePod, type PodJson } from './fake-k8s.js';

// ---------------------------------------------------------------------------
// Seeded randomness

// ---------------------------------------------------------------------------
// Address ranges

/** Fuzz pods take their valid addresses from here (and fd77::/64). */
export const FUZZ_IPV4_PREFIX = '10.77.';
/** Sentinel (known-good) pods use 10.250.0.0/16: no fuzz pod ever claims one of these. */
export function sentinelIp(i: number): string {
  return `10.250.${(i >> 8) & 255}.${i & 255}`;
}

// ---------------------------------------------------------------------------
// Hostile values

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Path = readonly (string | number)[];

const MB = 1 << 20;
const HUGE = 100_000;

let hugeString: string | undefined;
/** One shared 1 MB string (parsers only read it). */
export function megabyte(): string {
  hugeString ??= 'x'.repeat(MB);
  return hugeString;
}

const hugeArrays = new Map<string, Json[]>();
function hugeArray(kind: string, make: (i: number) => Json): Json[] {
  let a = hugeArrays.get(kind);
  if (a === undefined) {
    a = Array.from({ length: HUGE }, (_, i) => make(i));
    hugeArrays.set(kind, a);
  }
  return a;
}

export const WRONG_TYPES: readonly Json[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  1e308,
  '',
  'x',
  '10.77.0.1',
  [],
  ['x'],
  [null],
  {},
  { x: 1 },
  { ip: '10.77.0.1' },
];

export const INVALID_IPS: readonly Json[] = [
  '',
  ' ',
  '999.1.1.1',
  '10.77.0.256',
  '10.77.0',
  '10.77.0.1/24',
  ' 10.77.0.1',
  '10.77.0.1\n',
  '010.077.000.001',
  '0x0a4d0001',
  '::g',
  'fd77::1::2',
  'fe80::1%eth0',
  '[fd77::1]',
  'localhost',
  'x'.repeat(65),
  '10.77.0.1'.repeat(8),
  167_772_161,
  ['10.77.0.1'],
  { ip: '10.77.0.1' },
];

const WEIRD_NAMES: readonly Json[] = [
  'a/b',
  '/',
  '.',
  '..',
  'A',
  'UPPER-case',
  'a_b',
  'a\nb',
  'a\u202eb',
  'a\u0000b',
  ' a',
  'a ',
  '-a',
  'a-',
  'a..b',
  'ü',
  '*',
  '',
  '0',
  'constructor',
  '__proto__',
  'toString',
  'x'.repeat(64),
  'x'.repeat(254),
];

const WEIRD_UIDS: readonly Json[] = [
  '',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'a/b',
  '\u0000',
  'x'.repeat(129),
];

const WEIRD_PHASES: readonly Json[] = [
  'Succeeded',
  'Failed',
  'Unknown',
  'Pending',
  '',
  'running',
  'Succeeded\n',
  'x'.repeat(33),
];

const WEIRD_TIMESTAMPS: readonly Json[] = [
  '9999-12-31T23:59:59Z',
  '0000-01-01T00:00:00Z',
  '2024-13-45T99:99:99Z',
  '2024-05-01T10:00:00+99:99',
  'yesterday',
  '',
  'x'.repeat(1000),
  1_714_557_600,
];

const WEIRD_CONTAINER_IDS: readonly Json[] = [
  'containerd://',
  '://0123456789abcdef',
  'docker://' + 'Z'.repeat(64),
  'containerd://' + 'a'.repeat(200),
  'containerd://' + 'a'.repeat(11),
  'no-scheme-0123456789abcdef',
  'x'.repeat(1000),
];

const WEIRD_RESOURCE_VERSIONS: readonly Json[] = [
  '',
  'garbage',
  '-1',
  '$(id)',
  '1e3',
  'x'.repeat(65),
  12,
  null,
];

const EVENT_TYPES: readonly Json[] = [
  'ADDED',
  'MODIFIED',
  'DELETED',
  'BOOKMARK',
  'ERROR',
  'UNKNOWN',
  'added',
  '',
  null,
  7,
  ['ADDED'],
  {},
];

/**
 * Objects whose own keys are `__proto__` and `constructor`, as JSON.parse builds them from a
 * hostile body: code that copies them with `obj[key] = value` would pollute Object.prototype.
 */
function pollutionKeys(): Record<string, Json> {
  return JSON.parse(
    '{"__proto__":{"polluted":"yes","metadata":{"name":"proto","namespace":"proto","uid":"proto"}},' +
      '"constructor":{"prototype":{"polluted":"yes"}},"prototype":{"polluted":"yes"}}',
  ) as Record<string, Json>;
}

/** `{"a":{"a":...}}` or `[[...]]`, `depth` levels (JSON.stringify copes up to a few thousand). */
function nested(depth: number, arrays: boolean): Json {
  let v: Json = 'deep';
  for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v };
  return v;
}

/** Deep nesting as JSON text, far beyond what JSON.stringify could write. */
export function deepJsonText(depth: number, arrays = true): string {
  return arrays
    ? '['.repeat(depth) + '1' + ']'.repeat(depth)
    : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

// ---------------------------------------------------------------------------
// Editing JSON values at a path (own properties only, never through a prototype)

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parentOf(root: Json, path: Path): Json | undefined {
  let node: Json | undefined = root;
  for (const key of path.slice(0, -1)) {
    if (Array.isArray(node) && typeof key === 'number') node = node[key];
    else if (isObject(node) && typeof key === 'string' && Object.hasOwn(node, key))
      node = node[key];
    else return undefined;
  }
  return node;
}

/** Sets path to value when its parent exists; defineProperty so "__proto__" is a plain key. */
function setAt(root: Json, path: Path, value: Json): boolean {
  const parent = parentOf(root, path);
  const key = path[path.length - 1];
  if (Array.isArray(parent) && typeof key === 'number' && key < parent.length) {
    parent[key] = value;
    return true;
  }
  if (isObject(parent) && typeof key === 'string') {
    Object.defineProperty(parent, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
    return true;
  }
  return false;
}

function deleteAt(root: Json, path: Path): boolean {
  const parent = parentOf(root, path);
  const key = path[path.length - 1];
  if (Array.isArray(parent) && typeof key === 'number' && key < parent.length) {
    parent.splice(key, 1);
    return true;
  }
  if (isObject(parent) && typeof key === 'string' && Object.hasOwn(parent, key)) {
    delete parent[key];
    return true;
  }
  return false;
}

/** Every field the agent reads (and the objects holding them). */
export const POD_FIELD_PATHS: readonly Path[] = [
  ['metadata'],
  ['metadata', 'name'],
  ['metadata', 'namespace'],
  ['metadata', 'uid'],
  ['metadata', 'creationTimestamp'],
  ['metadata', 'deletionTimestamp'],
  ['metadata', 'labels'],
  ['metadata', 'labels', 'pod-template-hash'],
  ['metadata', 'resourceVersion'],
  ['metadata', 'ownerReferences'],
  ['metadata', 'ownerReferences', 0],
  ['metadata', 'ownerReferences', 0, 'kind'],
  ['metadata', 'ownerReferences', 0, 'name'],
  ['metadata', 'ownerReferences', 0, 'controller'],
  ['spec'],
  ['spec', 'nodeName'],
  ['spec', 'hostNetwork'],
  ['status'],
  ['status', 'phase'],
  ['status', 'podIP'],
  ['status', 'podIPs'],
  ['status', 'podIPs', 0],
  ['status', 'podIPs', 0, 'ip'],
  ['status', 'containerStatuses'],
  ['status', 'containerStatuses', 0],
  ['status', 'containerStatuses', 0, 'containerID'],
  ['status', 'initContainerStatuses'],
];

const STRING_PATHS: readonly Path[] = [
  ['metadata', 'name'],
  ['metadata', 'namespace'],
  ['metadata', 'uid'],
  ['metadata', 'creationTimestamp'],
  ['metadata', 'resourceVersion'],
  ['metadata', 'ownerReferences', 0, 'name'],
  ['spec', 'nodeName'],
  ['status', 'phase'],
  ['status', 'podIP'],
  ['status', 'podIPs', 0, 'ip'],
  ['status', 'containerStatuses', 0, 'containerID'],
];

const OBJECT_PATHS: readonly Path[] = [
  [],
  ['metadata'],
  ['metadata', 'labels'],
  ['metadata', 'ownerReferences', 0],
  ['spec'],
  ['status'],
  ['status', 'podIPs', 0],
  ['status', 'containerStatuses', 0],
];

// ---------------------------------------------------------------------------
// The mutator

export interface MutatedPod {
  /** Anything JSON can hold (not necessarily an object). */
  readonly pod: Json;
  /** Names of the mutations applied, for a failure message. */
  readonly mutations: readonly string[];
}

export interface WatchEvent {
  readonly type: Json;
  readonly object: Json | undefined;
  readonly kind: string;
}

export interface GarbageBody {
  readonly name: string;
  readonly body: string;
}

export interface PodMutatorOptions {
  /** spec.nodeName of the base pods (the node under test). */
  node: string;
  /** Namespace of the base pods. Default 'fuzz'. */
  namespace?: string;
}

type Mutation = (pod: Json) => string;

export class PodMutator {
  private readonly node: string;
  private readonly namespace: string;
  private count = 0;
  /** Values of earlier fuzz pods, for duplicates (never those of sentinel pods). */
  private readonly uids: string[] = [];
  private readonly ips: string[] = [];
  private readonly containerIds: string[] = [];
  private readonly mutations: readonly (readonly [number, Mutation])[];
  private readonly totalWeight: number;
  /** 100k-entry arrays still allowed in the list being built (a list carries at most one). */
  private hugeArraysLeft = Number.POSITIVE_INFINITY;

  constructor(
    private readonly rng: FuzzRng,
    options: PodMutatorOptions,
  ) {
    this.node = options.node;
    this.namespace = options.namespace ?? 'fuzz';
    this.mutations = [
      [10, (p) => this.missing(p)],
      [10, (p) => this.wrongType(p)],
      [2, (p) => this.hugeString(p)],
      [2, (p) => this.hugeLabels(p)],
      [1, (p) => this.hugeArrayField(p)],
      [6, (p) => this.invalidIp(p)],
      [4, (p) => this.duplicate(p)],
      [3, (p) => this.pollution(p)],
      [2, (p) => this.deep(p)],
      [5, (p) => this.weird(p, ['metadata', 'name'], WEIRD_NAMES, 'name')],
      [4, (p) => this.weird(p, ['metadata', 'namespace'], WEIRD_NAMES, 'namespace')],
      [3, (p) => this.weird(p, ['metadata', 'uid'], WEIRD_UIDS, 'uid')],
      [4, (p) => this.weird(p, ['status', 'phase'], WEIRD_PHASES, 'phase')],
      [3, (p) => this.weird(p, ['metadata', 'creationTimestamp'], WEIRD_TIMESTAMPS, 'created')],
      [3, (p) => this.deleting(p)],
      [3, (p) => this.hostNetwork(p)],
      [3, (p) => this.nodeName(p)],
      [
        3,
        (p) =>
          this.weird(
            p,
            ['status', 'containerStatuses', 0, 'containerID'],
            WEIRD_CONTAINER_IDS,
            'containerID',
          ),
      ],
      [3, (p) => this.weird(p, ['metadata', 'resourceVersion'], WEIRD_RESOURCE_VERSIONS, 'rv')],
      [2, (p) => this.swapSections(p)],
    ];
    this.totalWeight = this.mutations.reduce((s, [w]) => s + w, 0);
  }

  /** A valid pod of the node under test, with fuzz-range addresses and seeded IDs. */
  basePod(): PodJson {
    const rng = this.rng;
    const n = this.count++;
    const ip = `${FUZZ_IPV4_PREFIX}${(n >> 8) & 255}.${n & 255}`;
    const extraIps = rng.chance(0.3) ? [`fd77::${(n & 0xffff).toString(16)}`] : [];
    const hash = rng.pick(['5f6c7b9d8', '7d4b9c8f5d', 'b4c5d6f7g']);
    const owner = rng.pick([
      undefined,
      { kind: 'ReplicaSet', name: `fz-${hash}` },
      { kind: 'StatefulSet', name: 'fz-set' },
      { kind: 'DaemonSet', name: 'fz-ds' },
      { kind: 'Job', name: 'fz-job' },
    ]);
    const pod = makePod({
      name: `fz-${n}`,
      namespace: this.namespace,
      uid: `fz-${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}`,
      node: this.node,
      ip,
      extraIps,
      hostNetwork: rng.chance(0.05),
      phase: rng.pick(['Running', 'Running', 'Running', 'Pending', 'Succeeded', 'Failed']),
      owner,
      labels: owner?.kind === 'ReplicaSet' ? { 'pod-template-hash': hash } : {},
      containers: 1 + rng.int(3),
      createdAt: `2024-0${1 + rng.int(9)}-1${rng.int(10)}T10:${10 + rng.int(50)}:00Z`,
    });
    // makePod draws container IDs from crypto; replace them so the seed replays the run.
    const statuses = (pod.status as { containerStatuses: { containerID: string }[] })
      .containerStatuses;
    for (const s of statuses) s.containerID = `containerd://${rng.hex(64)}`;
    this.remember(this.uids, pod.metadata.uid);
    this.remember(this.ips, ip);
    for (const s of statuses) this.remember(this.containerIds, s.containerID);
    return pod;
  }

  /** A base pod with 0 to 4 mutations (one in five is left valid). */
  mutatedPod(): MutatedPod {
    const pod = this.basePod() as unknown as Json;
    const applied: string[] = [];
    const n = this.rng.chance(0.2) ? 0 : 1 + this.rng.int(4);
    let root: Json = pod;
    for (let i = 0; i < n; i++) {
      if (!isObject(root)) break;
      applied.push(this.pickMutation()(root));
    }
    // Now and then the whole item is not a pod at all.
    if (this.rng.chance(0.03)) {
      root = this.rng.pick(WRONG_TYPES);
      applied.push('item:wrong-type');
    }
    return { pod: root, mutations: applied };
  }

  /** `count` mutated pods; at most one of them with a 100k-entry array (bodies stay < 32 MB). */
  mutatedList(count: number): Json[] {
    this.hugeArraysLeft = 1;
    try {
      return Array.from({ length: count }, () => this.mutatedPod().pod);
    } finally {
      this.hugeArraysLeft = Number.POSITIVE_INFINITY;
    }
  }

  /** A watch event: any type (known, unknown, wrong JSON type) with any object. */
  watchEvent(): WatchEvent {
    const rng = this.rng;
    const type = rng.pick(EVENT_TYPES);
    const choice = rng.int(10);
    if (choice < 5) return { type, object: this.mutatedPod().pod, kind: 'mutated-pod' };
    if (choice < 6) return { type, object: this.basePod() as unknown as Json, kind: 'valid-pod' };
    if (choice < 7) return { type, object: rng.pick(WRONG_TYPES), kind: 'wrong-type' };
    if (choice < 8) {
      const code = rng.pick<Json>([410, 500, 403, '410', null, 1e308, -1]);
      return {
        type,
        object: { kind: 'Status', status: 'Failure', code, message: rng.pick(WEIRD_NAMES) },
        kind: 'status',
      };
    }
    if (choice < 9) {
      return {
        type,
        object: { metadata: { resourceVersion: rng.pick(WEIRD_RESOURCE_VERSIONS) } },
        kind: 'bookmark-shape',
      };
    }
    // DELETED-style partial objects: a uid only, or a namespace/name only, of a fuzz pod.
    const meta: Record<string, Json> = rng.chance(0.5)
      ? { uid: this.uids.length > 0 ? rng.pick(this.uids) : 'none' }
      : { namespace: this.namespace, name: `fz-${rng.int(Math.max(1, this.count))}` };
    return { type, object: { metadata: meta }, kind: 'partial' };
  }

  /** One line of a watch stream: usually an event, sometimes garbage. */
  watchLine(): { line: string; kind: string } {
    const rng = this.rng;
    const choice = rng.int(20);
    if (choice < 12) {
      const e = this.watchEvent();
      const event: Record<string, Json> = { type: e.type };
      if (e.object !== undefined) event.object = e.object;
      return { line: JSON.stringify(event), kind: `event:${e.kind}` };
    }
    if (choice < 14) {
      const valid = JSON.stringify({ type: 'ADDED', object: this.basePod() });
      return { line: valid.slice(0, 1 + rng.int(valid.length - 1)), kind: 'truncated' };
    }
    if (choice < 16) {
      return {
        line: rng.pick([
          '{not json',
          '',
          ' ',
          '\u0000\u0001\u0002',
          '<html><body>502 Bad Gateway</body></html>',
          'ADDED',
          '}{',
          '\ufeff{"type":"ADDED","object":{}}',
          'null',
          '[]',
          '42',
          '"ADDED"',
          'true',
          '{"type":"ADDED"}',
          '{"object":{}}',
          '{"type":"ADDED","object":{},"type":"DELETED"}',
        ]),
        kind: 'garbage',
      };
    }
    if (choice < 18) {
      const pod = this.basePod();
      Object.defineProperty(pod, '__proto__', {
        value: { polluted: 'yes' },
        enumerable: true,
        writable: true,
        configurable: true,
      });
      return { line: JSON.stringify({ type: 'ADDED', object: pod }), kind: 'proto-keys' };
    }
    if (choice < 19) {
      return {
        line: `{"type":"${rng.pick(['ADDED', 'ERROR', 'DELETED'])}","object":${deepJsonText(20_000, rng.chance(0.5))}}`,
        kind: 'deep',
      };
    }
    return {
      line: rng.chance(0.5) ? megabyte() : JSON.stringify({ type: 'ADDED', object: megabyte() }),
      kind: 'huge',
    };
  }

  /** Whole response bodies that are not a PodList (or not JSON at all). */
  garbageBodies(validList: string): GarbageBody[] {
    return [
      { name: 'empty', body: '' },
      { name: 'html', body: '<html><body><h1>502 Bad Gateway</h1></body></html>' },
      { name: 'truncated', body: validList.slice(0, Math.floor(validList.length / 2)) },
      { name: 'truncated-1', body: validList.slice(0, -1) },
      { name: 'null', body: 'null' },
      { name: 'array', body: '[]' },
      { name: 'object', body: '{}' },
      { name: 'items-not-array', body: '{"kind":"PodList","items":5}' },
      { name: 'items-object', body: '{"kind":"PodList","items":{"length":1000000000}}' },
      { name: 'status', body: '{"kind":"Status","status":"Failure","code":500}' },
      { name: 'deep', body: deepJsonText(200_000) },
      { name: 'nul-bytes', body: '\u0000'.repeat(1000) },
    ];
  }

  // ---- mutations (each returns its name)

  private pickMutation(): Mutation {
    let r = this.rng.int(this.totalWeight);
    for (const [w, m] of this.mutations) {
      if (r < w) return m;
      r -= w;
    }
    return this.mutations[0][1];
  }

  private missing(pod: Json): string {
    const path = this.rng.pick(POD_FIELD_PATHS);
    deleteAt(pod, path);
    return `missing:${path.join('.')}`;
  }

  private wrongType(pod: Json): string {
    const path = this.rng.pick(POD_FIELD_PATHS);
    const value = this.rng.pick(WRONG_TYPES);
    setAt(pod, path, structuredClone(value));
    return `wrong-type:${path.join('.')}=${JSON.stringify(value)}`;
  }

  private hugeString(pod: Json): string {
    const path = this.rng.pick(STRING_PATHS);
    setAt(pod, path, megabyte());
    return `huge-string:${path.join('.')}`;
  }

  private hugeLabels(pod: Json): string {
    const which = this.rng.int(4);
    if (which === 0) setAt(pod, ['metadata', 'labels', 'big'], megabyte());
    else if (which === 1) setAt(pod, ['metadata', 'labels', megabyte()], 'v');
    else if (which === 2) setAt(pod, ['metadata', 'annotations'], { note: megabyte() });
    else {
      const many: Record<string, Json> = {};
      for (let i = 0; i < 10_000; i++) many[`l${i}`] = `v${i}`;
      setAt(pod, ['metadata', 'labels'], many);
    }
    return `huge-labels:${which}`;
  }

  private hugeArrayField(pod: Json): string {
    if (this.hugeArraysLeft <= 0) return this.missing(pod);
    this.hugeArraysLeft--;
    const which = this.rng.int(4);
    if (which === 0) {
      setAt(
        pod,
        ['status', 'podIPs'],
        hugeArray('podIPs', (i) => ({ ip: `10.77.${(i >> 8) & 255}.${i & 255}` })),
      );
    } else if (which === 1) {
      setAt(
        pod,
        ['status', 'containerStatuses'],
        hugeArray('containers', (i) => ({
          name: `c${i}`,
          containerID: `containerd://${i.toString(16).padStart(64, '0')}`,
        })),
      );
    } else if (which === 2) {
      setAt(
        pod,
        ['metadata', 'ownerReferences'],
        hugeArray('owners', (i) => ({ kind: 'ReplicaSet', name: `rs-${i}`, controller: false })),
      );
    } else {
      setAt(
        pod,
        ['status', 'initContainerStatuses'],
        hugeArray('init', () => ({ containerID: 42 })),
      );
    }
    return `huge-array:${which}`;
  }

  private invalidIp(pod: Json): string {
    const value = this.rng.pick(INVALID_IPS);
    const path: Path = this.rng.chance(0.5) ? ['status', 'podIP'] : ['status', 'podIPs', 0, 'ip'];
    setAt(pod, path, value);
    return `invalid-ip:${path.join('.')}=${JSON.stringify(value)}`;
  }

  private duplicate(pod: Json): string {
    const which = this.rng.int(3);
    if (which === 0 && this.uids.length > 1) {
      setAt(pod, ['metadata', 'uid'], this.rng.pick(this.uids));
      return 'duplicate:uid';
    }
    if (which === 1 && this.ips.length > 1) {
      const ip = this.rng.pick(this.ips);
      setAt(pod, ['status', 'podIP'], ip);
      setAt(pod, ['status', 'podIPs'], [{ ip }]);
      return 'duplicate:ip';
    }
    if (this.containerIds.length > 1) {
      setAt(
        pod,
        ['status', 'containerStatuses', 0, 'containerID'],
        this.rng.pick(this.containerIds),
      );
      return 'duplicate:containerID';
    }
    return 'duplicate:none';
  }

  private pollution(pod: Json): string {
    const path = this.rng.pick(OBJECT_PATHS);
    const target = path.length === 0 ? pod : parentOf(pod, [...path, '']);
    if (!isObject(target)) return 'pollution:skipped';
    for (const [k, v] of Object.entries(pollutionKeys())) setAt(target, [k], v);
    if (this.rng.chance(0.3)) setAt(pod, ['metadata', 'uid'], this.rng.pick(WEIRD_UIDS));
    return `pollution:${path.join('.') || 'root'}`;
  }

  private deep(pod: Json): string {
    const path = this.rng.pick(POD_FIELD_PATHS);
    setAt(pod, path, nested(1000, this.rng.chance(0.5)));
    return `deep:${path.join('.')}`;
  }

  private weird(pod: Json, path: Path, values: readonly Json[], name: string): string {
    const value = this.rng.pick(values);
    setAt(pod, path, value);
    return `${name}=${JSON.stringify(value).slice(0, 40)}`;
  }

  private deleting(pod: Json): string {
    const value = this.rng.pick<Json>(['2024-05-01T10:00:00Z', '', 0, null, {}]);
    setAt(pod, ['metadata', 'deletionTimestamp'], value);
    return `deleting=${JSON.stringify(value)}`;
  }

  private hostNetwork(pod: Json): string {
    const value = this.rng.pick<Json>([true, 'true', 1, false, null]);
    setAt(pod, ['spec', 'hostNetwork'], value);
    return `hostNetwork=${JSON.stringify(value)}`;
  }

  private nodeName(pod: Json): string {
    const value = this.rng.pick<Json>(['node-b', '', this.node.toUpperCase(), 7, 'x'.repeat(254)]);
    setAt(pod, ['spec', 'nodeName'], value);
    return `nodeName=${JSON.stringify(value).slice(0, 40)}`;
  }

  private swapSections(pod: Json): string {
    if (!isObject(pod)) return 'swap:skipped';
    const { spec, status } = pod;
    setAt(pod, ['spec'], status ?? null);
    setAt(pod, ['status'], spec ?? null);
    return 'swap:spec<->status';
  }

  private remember(pool: string[], value: string): void {
    // A bounded pool keeps duplicates likely and memory flat on long runs.
    if (pool.length < 256) pool.push(value);
    else pool[this.rng.int(pool.length)] = value;
  }
}
