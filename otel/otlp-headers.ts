/**
 * Parsing and checking of OTLP export headers (OTEL_EXPORTER_OTLP_[METRICS_]HEADERS format:
 * `key=value,key2=value2`, keys and values percent-encoded). Header values are secrets
 * (API keys, bearer tokens): no error raised here ever contains one.
 */

// gRPC metadata keys: lower-case letters, digits, '-', '_' and '.'.
const METADATA_KEY = /^[0-9a-z_.-]+$/;
// Text metadata values: printable ASCII only.
const METADATA_VALUE = /^[\x20-\x7e]*$/;

function decode(part: string, what: string, index: number): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new Error(`OTLP headers: entry ${index}: ${what} is not valid percent-encoding`);
  }
}

/**
 * Parses `k=v,k2=v2`. Keys are lower-cased (gRPC metadata keys are). A value may contain '='
 * (base64 tokens): only the first '=' separates. Empty entries are skipped; a malformed entry
 * throws, naming its position and key but never its value.
 */
export function parseOtlpHeaders(raw: string): Record<string, string> {
  const headers: Record<string, string> = {};
  const entries = raw.split(',');
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i].trim();
    if (entry === '') continue;
    const eq = entry.indexOf('=');
    if (eq <= 0) {
      throw new Error(`OTLP headers: entry ${i} is not of the form key=value`);
    }
    const key = decode(entry.slice(0, eq).trim(), 'key', i).toLowerCase();
    const value = decode(entry.slice(eq + 1).trim(), `value of "${key}"`, i);
    headers[key] = value;
  }
  validateOtlpHeaders(headers);
  return headers;
}

/** Throws unless every header can be sent as gRPC text metadata. */
export function validateOtlpHeaders(headers: Record<string, string>): void {
  for (const [key, value] of Object.entries(headers)) {
    if (!METADATA_KEY.test(key)) {
      throw new Error(`OTLP headers: key "${key}" is not a valid gRPC metadata key`);
    }
    if (key.endsWith('-bin') || key.startsWith('grpc-')) {
      throw new Error(`OTLP headers: key "${key}" is reserved (binary or grpc- metadata)`);
    }
    if (value === '' || !METADATA_VALUE.test(value)) {
      throw new Error(`OTLP headers: value of "${key}" is empty or not printable ASCII`);
    }
  }
}
