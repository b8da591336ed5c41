/**
 * The workload a pod belongs to, from its ownerReferences, without asking the API server
 * about the owner: a Deployment's pods are owned by a ReplicaSet named
 * `<deployment>-<pod-template-hash>`, so the Deployment name is the ReplicaSet name minus that
 * suffix. StatefulSet, DaemonSet and other controllers own their pods directly.
 */

export interface Workload {
  /** Deployment, StatefulSet, DaemonSet, ReplicaSet (a bare one), Job, or the owner's own kind. */
  readonly kind: string;
  readonly name: string;
}

/**
 * Alphabet of the pod-template-hash suffix (Kubernetes rand.SafeEncodeString: no vowels, no
 * 0/1/3 so it never spells a word). Used only when the pod lacks the pod-template-hash label.
 */
const TEMPLATE_HASH_SUFFIX = /-([bcdfghjklmnpqrstvwxz2456789]{1,10})$/;
const MAX_OWNER_NAME = 253;

/**
 * Workload of a pod from its (untrusted) `metadata.ownerReferences`. `podTemplateHash` is the
 * pod's `pod-template-hash` label when present: it names the suffix exactly. Returns undefined
 * for a pod without a usable owner (a static or bare pod).
 */
export function workloadFromOwners(
  ownerReferences: unknown,
  podTemplateHash?: string,
): Workload | undefined {
  const owner = controllerOwner(ownerReferences);
  if (owner === undefined) return undefined;
  if (owner.kind === 'ReplicaSet') {
    const deployment = deploymentOfReplicaSet(owner.name, podTemplateHash);
    return deployment === undefined
      ? { kind: 'ReplicaSet', name: owner.name }
      : { kind: 'Deployment', name: deployment };
  }
  return owner;
}

/** Deployment name of a ReplicaSet, or undefined when the name carries no template hash. */
export function deploymentOfReplicaSet(
  replicaSetName: string,
  podTemplateHash?: string,
): string | undefined {
  if (podTemplateHash !== undefined && podTemplateHash !== '') {
    const suffix = '-' + podTemplateHash;
    if (replicaSetName.endsWith(suffix) && replicaSetName.length > suffix.length) {
      return replicaSetName.slice(0, -suffix.length);
    }
    // A hash label that does not match the name: trust neither, the ReplicaSet is bare.
    return undefined;
  }
  const m = TEMPLATE_HASH_SUFFIX.exec(replicaSetName);
  if (m === null || m.index === 0) return undefined;
  return replicaSetName.slice(0, m.index);
}

/** The owner with controller=true, else the only owner; malformed entries are skipped. */
function controllerOwner(ownerReferences: unknown): Workload | undefined {
  if (!Array.isArray(ownerReferences)) return undefined;
  let only: Workload | undefined;
  let valid = 0;
  // A pod has one or two owners; a huge array is hostile input, so look at a bounded prefix.
  for (const ref of ownerReferences.slice(0, 16)) {
    const owner = asOwner(ref);
    if (owner === undefined) continue;
    if ((ref as { controller?: unknown }).controller === true) return owner;
    only = owner;
    valid++;
  }
  return valid === 1 ? only : undefined;
}

function asOwner(ref: unknown): Workload | undefined {
  if (typeof ref !== 'object' || ref === null) return undefined;
  const { kind, name } = ref as { kind?: unknown; name?: unknown };
  if (typeof kind !== 'string' || typeof name !== 'string') return undefined;
  if (kind === '' || kind.length > 63 || name === '' || name.length > MAX_OWNER_NAME) {
    return undefined;
  }
  return { kind, name };
}
