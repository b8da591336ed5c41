/**
 * Incubating semantic-convention attribute names the agent uses. The stable ones come from
 * `@opentelemetry/semantic-conventions`; these are copied here, as the OpenTelemetry packages
 * do, because the incubating entry point may change them in any minor release.
 */

/** The container runtime managing this container (`containerd`, `cri-o`, `docker`). */
export const ATTR_CONTAINER_RUNTIME_NAME = 'container.runtime.name' as const;
