/**
 * Every metric and attribute name the agent exports, in one place.
 *
 * Instrument names are chosen so that the Prometheus exporter shows them unchanged: it never
 * appends a unit suffix, and appends `_total` only to monotonic sums. So histograms carry their
 * unit in the name (`_seconds`) and counters are named without `_total`.
 */

export const METRIC_HOP_LATENCY = 'audio_latency_seconds' as const;
export const METRIC_TRANSIT_LATENCY = 'audio_transit_latency_seconds' as const;
export const METRIC_SIGNATURES = 'audio_signatures' as const;
export const METRIC_SIGNATURE_COLLISIONS = 'audio_signature_collisions' as const;

/** Counted by the meter pipeline itself, not read from the agent's statistics. */
export const METRIC_OTLP_EXPORT_FAILURES = 'audio_tracker_otlp_export_failures' as const;

/** Pod label values handed out as `other` because MAX_POD_LABEL_VALUES were in use. */
export const METRIC_LABEL_OVERFLOW = 'audio_tracker_label_overflow' as const;
/** Pod label values in use (live pods, IPs, deleted pods within SERIES_TTL_MS). */
export const METRIC_LABEL_VALUES = 'audio_tracker_label_values' as const;

/** Data point attributes of the latency histograms. */
export const ATTR_SOURCE_POD = 'source_pod' as const;
export const ATTR_DEST_POD = 'dest_pod' as const;
/** Namespaces of source_pod and dest_pod ('' for an endpoint that is not a pod). */
export const ATTR_SOURCE_NAMESPACE = 'source_namespace' as const;
export const ATTR_DEST_NAMESPACE = 'dest_namespace' as const;
/** Data point attribute of audio_signatures: the pod whose traffic yielded the signature. */
export const ATTR_POD = 'pod' as const;
export const ATTR_NAMESPACE = 'namespace' as const;

/** Instrumentation scope of every instrument the agent creates. */
export const METER_NAME = 'audio-latency-tracker' as const;
export const DEFAULT_SERVICE_NAME = 'audio-latency-tracker' as const;
