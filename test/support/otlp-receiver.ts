/**
 * A minimal OTLP/gRPC metrics collector for tests: a real @grpc/grpc-js server implementing
 * opentelemetry.proto.collector.metrics.v1.MetricsService/Export, decoding requests with the
 * OTLP protobuf definitions below, answering ExportMetricsServiceResponse (or failing on
 * demand). A byte-counting TCP front lets tests see whether compression really happens.
 *
 * Why the definitions are here: @opentelemetry/otlp-transformer 0.301 no longer ships a
 * generated protobufjs root (it encodes with a hand-written writer), and no installed package
 * ships the OTLP .proto files. The messages below are those of opentelemetry-proto v1
 * (common/v1/common.proto, resource/v1/resource.proto, metrics/v1/metrics.proto,
 * collector/metrics/v1/metrics_service.proto): same packages, names and field numbers, comments
 * and the messages tests never see (exemplar details aside) left out. protobufjs comes with
 * @grpc/grpc-js (through @grpc/proto-loader).
 */
import { createServer, connect, type Server as NetServer, type Socket } from 'node:net';
import {
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const COMMON_PROTO = `
syntax = "proto3";
package opentelemetry.proto.common.v1;
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
`;

const RESOURCE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.resource.v1;
message Resource {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
`;

const METRICS_PROTO = `
syntax = "proto3";
package opentelemetry.proto.metrics.v1;
message ResourceMetrics {
  opentelemetry.proto.resource.v1.Resource resource = 1;
  repeated ScopeMetrics scope_metrics = 2;
  string schema_url = 3;
}
message ScopeMetrics {
  opentelemetry.proto.common.v1.InstrumentationScope scope = 1;
  repeated Metric metrics = 2;
  string schema_url = 3;
}
message Metric {
  string name = 1;
  string description = 2;
  string unit = 3;
  oneof data {
    Gauge gauge = 5;
    Sum sum = 7;
    Histogram histogram = 9;
    ExponentialHistogram exponential_histogram = 10;
    Summary summary = 11;
  }
  repeated opentelemetry.proto.common.v1.KeyValue metadata = 12;
}
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum {
  repeated NumberDataPoint data_points = 1;
  AggregationTemporality aggregation_temporality = 2;
  bool is_monotonic = 3;
}
message Histogram {
  repeated HistogramDataPoint data_points = 1;
  AggregationTemporality aggregation_temporality = 2;
}
message ExponentialHistogram {
  repeated ExponentialHistogramDataPoint data_points = 1;
  AggregationTemporality aggregation_temporality = 2;
}
message Summary { repeated SummaryDataPoint data_points = 1; }
enum AggregationTemporality {
  AGGREGATION_TEMPORALITY_UNSPECIFIED = 0;
  AGGREGATION_TEMPORALITY_DELTA = 1;
  AGGREGATION_TEMPORALITY_CUMULATIVE = 2;
}
message NumberDataPoint {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 7;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  oneof value {
    double as_double = 4;
    sfixed64 as_int = 6;
  }
  repeated Exemplar exemplars = 5;
  uint32 flags = 8;
}
message HistogramDataPoint {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 9;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  repeated fixed64 bucket_counts = 6;
  repeated double explicit_bounds = 7;
  repeated Exemplar exemplars = 8;
  uint32 flags = 10;
  optional double min = 11;
  optional double max = 12;
}
message ExponentialHistogramDataPoint {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 1;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  sint32 scale = 6;
  fixed64 zero_count = 7;
  message Buckets {
    sint32 offset = 1;
    repeated uint64 bucket_counts = 2;
  }
  Buckets positive = 8;
  Buckets negative = 9;
  uint32 flags = 10;
  repeated Exemplar exemplars = 11;
  optional double min = 12;
  optional double max = 13;
  double zero_threshold = 14;
}
message SummaryDataPoint {
  repeated opentelemetry.proto.common.v1.KeyValue attributes = 7;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  message ValueAtQuantile {
    double quantile = 1;
    double value = 2;
  }
  repeated ValueAtQuantile quantile_values = 6;
  uint32 flags = 8;
}
message Exemplar {
  repeated opentelemetry.proto.common.v1.KeyValue filtered_attributes = 7;
  fixed64 time_unix_nano = 2;
  oneof value {
    double as_double = 3;
    sfixed64 as_int = 6;
  }
  bytes span_id = 4;
  bytes trace_id = 5;
}
`;

const METRICS_SERVICE_PROTO = `
syntax = "proto3";
package opentelemetry.proto.collector.metrics.v1;
service MetricsService {
  rpc Export(ExportMetricsServiceRequest) returns (ExportMetricsServiceResponse) {}
}
message ExportMetricsServiceRequest {
  repeated opentelemetry.proto.metrics.v1.ResourceMetrics resource_metrics = 1;
}
message ExportMetricsServiceResponse {
  ExportMetricsPartialSuccess partial_success = 1;
}
message ExportMetricsPartialSuccess {
  int64 rejected_data_points = 1;
  string error_message = 2;
}
`;

export const EXPORT_PATH = '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export';

// ---------------------------------------------------------------------------------------------
// Decoded shapes (protobufjs toObject: camelCase, 64-bit integers as numbers, enums as names)

export interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number;
  doubleValue?: number;
}
export interface KeyValue {
  key: string;
  value?: AnyValue;
}
export interface NumberDataPoint {
  attributes: KeyValue[];
  startTimeUnixNano: number;
  timeUnixNano: number;
  asDouble?: number;
  asInt?: number;
}
export interface HistogramDataPoint {
  attributes: KeyValue[];
  startTimeUnixNano: number;
  timeUnixNano: number;
  count: number;
  sum?: number;
  bucketCounts: number[];
  explicitBounds: number[];
  min?: number;
  max?: number;
}
export interface ExponentialBuckets {
  offset: number;
  bucketCounts: number[];
}
export interface ExponentialHistogramDataPoint {
  attributes: KeyValue[];
  startTimeUnixNano: number;
  timeUnixNano: number;
  count: number;
  sum?: number;
  scale: number;
  zeroCount: number;
  positive?: ExponentialBuckets;
  negative?: ExponentialBuckets;
  min?: number;
  max?: number;
}
export type Temporality =
  | 'AGGREGATION_TEMPORALITY_UNSPECIFIED'
  | 'AGGREGATION_TEMPORALITY_DELTA'
  | 'AGGREGATION_TEMPORALITY_CUMULATIVE';
export interface Metric {
  name: string;
  description: string;
  unit: string;
  data?: 'gauge' | 'sum' | 'histogram' | 'exponentialHistogram' | 'summary';
  gauge?: { dataPoints: NumberDataPoint[] };
  sum?: {
    dataPoints: NumberDataPoint[];
    aggregationTemporality: Temporality;
    isMonotonic: boolean;
  };
  histogram?: { dataPoints: HistogramDataPoint[]; aggregationTemporality: Temporality };
  exponentialHistogram?: {
    dataPoints: ExponentialHistogramDataPoint[];
    aggregationTemporality: Temporality;
  };
}
export interface ScopeMetrics {
  scope?: { name: string; version: string };
  metrics: Metric[];
}
export interface ResourceMetrics {
  resource?: { attributes: KeyValue[] };
  scopeMetrics: ScopeMetrics[];
}
export interface ExportMetricsServiceRequest {
  resourceMetrics: ResourceMetrics[];
}

export interface ReceivedExport {
  request: ExportMetricsServiceRequest;
  /** Request metadata (custom headers, user-agent), keys lower-case. */
  metadata: Record<string, string>;
  /** Uncompressed protobuf size of the request. */
  messageBytes: number;
}

/** ok = accept; unavailable = answer UNAVAILABLE; hang = never answer (deadline test). */
export type ReceiverMode = 'ok' | 'unavailable' | 'hang';

// ---------------------------------------------------------------------------------------------

const root = new protobuf.Root();
for (const source of [COMMON_PROTO, RESOURCE_PROTO, METRICS_PROTO, METRICS_SERVICE_PROTO]) {
  protobuf.parse(source, root, { keepCase: false });
}
root.resolveAll();
const RequestType = root.lookupType(
  'opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest',
);
const ResponseType = root.lookupType(
  'opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse',
);

const CONVERSION: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  arrays: true,
  oneofs: true,
};

export function decodeExportRequest(bytes: Uint8Array): ExportMetricsServiceRequest {
  const message = RequestType.decode(bytes);
  return RequestType.toObject(message, CONVERSION) as ExportMetricsServiceRequest;
}

function encodeEmptyResponse(): Buffer {
  return Buffer.from(ResponseType.encode(ResponseType.create({})).finish());
}

function metadataRecord(call: ServerUnaryCall<Buffer, Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(call.metadata.getMap())) {
    out[key] = typeof value === 'string' ? value : value.toString('base64');
  }
  return out;
}

/** Turns OTLP attributes into a plain record of their scalar values. */
export function attributesOf(
  kvs: KeyValue[] | undefined,
): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of kvs ?? []) {
    const v = value?.stringValue ?? value?.intValue ?? value?.doubleValue ?? value?.boolValue;
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/** Every metric named `name` across the resource and scope levels of one request. */
export function metricsNamed(request: ExportMetricsServiceRequest, name: string): Metric[] {
  return request.resourceMetrics.flatMap((rm) =>
    rm.scopeMetrics.flatMap((sm) => sm.metrics.filter((m) => m.name === name)),
  );
}

interface Waiter {
  predicate: (e: ReceivedExport) => boolean;
  resolve: (e: ReceivedExport) => void;
}

export class OtlpReceiver {
  readonly exports: ReceivedExport[] = [];
  /** Requests seen in any mode, accepted or not. */
  attempts = 0;
  mode: ReceiverMode = 'ok';
  private waiters: Waiter[] = [];
  private hung: Array<sendUnaryData<Buffer>> = [];
  private bytesFromClients = 0;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly grpcServer: Server,
    private readonly front: NetServer,
    readonly port: number,
  ) {}

  /** Plaintext gRPC endpoint of the receiver. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Bytes that clients sent on the wire (HTTP/2 framing included) since the last reset. */
  wireBytes(): number {
    return this.bytesFromClients;
  }

  resetWireBytes(): void {
    this.bytesFromClients = 0;
  }

  /** The first export, past or future, that satisfies `predicate`. */
  waitForExport(
    predicate: (e: ReceivedExport) => boolean = () => true,
    timeoutMs = 5000,
  ): Promise<ReceivedExport> {
    const seen = this.exports.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no matching OTLP export within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = {
        predicate,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  handleExport(call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>): void {
    this.attempts++;
    if (this.mode === 'unavailable') {
      callback({ code: status.UNAVAILABLE, details: 'test collector refuses exports' });
      return;
    }
    if (this.mode === 'hang') {
      this.hung.push(callback);
      return;
    }
    let request: ExportMetricsServiceRequest;
    try {
      request = decodeExportRequest(call.request);
    } catch (err) {
      callback({ code: status.INVALID_ARGUMENT, details: `undecodable request: ${String(err)}` });
      return;
    }
    const received = { request, metadata: metadataRecord(call), messageBytes: call.request.length };
    this.exports.push(received);
    callback(null, encodeEmptyResponse());
    const ready = this.waiters.filter((w) => w.predicate(received));
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve(received);
  }

  countBytes(n: number): void {
    this.bytesFromClients += n;
  }

  track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
  }

  async close(): Promise<void> {
    for (const cb of this.hung) cb({ code: status.UNAVAILABLE, details: 'receiver closing' });
    this.hung = [];
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.front.close(() => resolve()));
    this.grpcServer.forceShutdown();
  }
}

const SERVICE: ServiceDefinition<UntypedServiceImplementation> = {
  Export: {
    path: EXPORT_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

function bindGrpc(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });
}

function startFront(receiver: () => OtlpReceiver, grpcPort: number): Promise<NetServer> {
  const front = createServer((client) => {
    const self = receiver();
    self.track(client);
    const upstream = connect(grpcPort, '127.0.0.1');
    self.track(upstream);
    client.on('data', (chunk: Buffer) => self.countBytes(chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  return new Promise((resolve, reject) => {
    front.once('error', reject);
    front.listen(0, '127.0.0.1', () => resolve(front));
  });
}

/** Starts a receiver on 127.0.0.1 (random port). */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const grpcServer = new Server();
  let receiver: OtlpReceiver | undefined;
  const self = (): OtlpReceiver => {
    if (!receiver) throw new Error('OTLP receiver used before it started');
    return receiver;
  };
  grpcServer.addService(SERVICE, {
    Export: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) =>
      self().handleExport(call, cb),
  });
  const grpcPort = await bindGrpc(grpcServer);
  const front = await startFront(self, grpcPort);
  receiver = new OtlpReceiver(grpcServer, front, (front.address() as { port: number }).port);
  return receiver;
}

/** A 127.0.0.1 port with nothing listening (bound, then released). */
export async function unusedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
