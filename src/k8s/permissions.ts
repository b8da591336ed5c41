/**
 * The Kubernetes API permissions the agent's code needs, and nothing more: the single source
 * for deploy/rbac.yaml's ClusterRole (test/deploy.test.ts compares them rule for rule, and
 * cross-checks every API path the sources request against `requests` here).
 *
 * Not needed, so not granted: `get` on pods (the API server source only lists and watches),
 * anything on nodes itself (the node name comes from the Downward API, K8S_NODE_NAME), and any
 * write verb.
 */

export interface K8sApiPermission {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  /** The requests of the code that this rule authorises (path, as the code spells it). */
  readonly requests: readonly string[];
  /** Which source makes those requests, and why the verbs are these. */
  readonly why: string;
}

export const K8S_API_PERMISSIONS: readonly K8sApiPermission[] = Object.freeze([
  Object.freeze({
    apiGroups: Object.freeze(['']),
    resources: Object.freeze(['pods']),
    verbs: Object.freeze(['list', 'watch']),
    requests: Object.freeze(['/api/v1/pods']),
    why:
      'API server source (src/k8s/apiserver-source.ts): GET /api/v1/pods?fieldSelector=spec.nodeName=..., ' +
      'then a watch from its resourceVersion. No single-pod get.',
  }),
  Object.freeze({
    apiGroups: Object.freeze(['']),
    resources: Object.freeze(['nodes/proxy']),
    verbs: Object.freeze(['get']),
    requests: Object.freeze(['/pods']),
    why:
      'Kubelet source (src/k8s/kubelet-source.ts): GET https://$NODE_IP:10250/pods, which the kubelet ' +
      'authorises as get on nodes/proxy (nodes/pods where KubeletFineGrainedAuthz is on). ' +
      'nodes/proxy also reaches exec and logs on the kubelet: K8S_POD_SOURCE=apiserver avoids it.',
  }),
]);
