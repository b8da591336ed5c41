import {
  defaultResource,
  detectResources,
  hostDetector,
  resourceAttributesEnvDetector,
  resourceFromAttributes,
  serviceNameEnvDetector,
  type Resource,
  type ResourceDetector,
} from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

export interface AgentResourceOptions {
  /** Used when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service. */
  serviceName: string;
  serviceVersion: string;
  /** Extra detectors (Kubernetes, container); they override the host detector. */
  detectors?: ResourceDetector[];
  /** Bound on waiting for asynchronous attributes (host.id, detectors that do I/O). */
  asyncAttributesTimeoutMs?: number;
}

const DEFAULT_ASYNC_ATTRIBUTES_TIMEOUT_MS = 5000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Builds the agent's Resource. Precedence, lowest first: SDK defaults (telemetry.sdk.*), our
 * service name and version, host detector, extra detectors, OTEL_RESOURCE_ATTRIBUTES,
 * OTEL_SERVICE_NAME (the specification lets OTEL_SERVICE_NAME win over the attribute list).
 */
export async function buildAgentResource(opts: AgentResourceOptions): Promise<Resource> {
  const base = defaultResource().merge(
    resourceFromAttributes({
      [ATTR_SERVICE_NAME]: opts.serviceName,
      [ATTR_SERVICE_VERSION]: opts.serviceVersion,
    }),
  );
  const detected = detectResources({
    detectors: [
      hostDetector,
      ...(opts.detectors ?? []),
      resourceAttributesEnvDetector,
      serviceNameEnvDetector,
    ],
  });
  const resource = base.merge(detected);
  // Settle async attributes now so the Prometheus target_info never misses them; a detector
  // that hangs must not hold up the agent, so the wait is bounded (unsettled ones are skipped).
  const timeoutMs = opts.asyncAttributesTimeoutMs ?? DEFAULT_ASYNC_ATTRIBUTES_TIMEOUT_MS;
  if (resource.asyncAttributesPending && resource.waitForAsyncAttributes) {
    await Promise.race([resource.waitForAsyncAttributes(), delay(timeoutMs)]);
  }
  return resource;
}
