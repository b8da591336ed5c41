/**
 * A minimal OTLP/gRPC metrics collector for tests: a real @grpc/grpc-js server implementing
 * opentelemetry.proto.collector.metrics.v1.MetricsService/Export, decoding requests with the
 * official OTLP definitions, answering ExportMetricsServiceResponse (or failing on demand). A
 * byte-counting TCP front lets tests see whether compression really happens.
 *
 * Why an older otlp-transformer: the agent's exporter (0.301) encodes with a hand-written writer,
 * so decoding its output with that same code would prove nothing. The devDependency
 * `otlp-official-protos` (npm alias of @opentelemetry/otlp-transformer@0.57.2) ships
 * build/src/generated/root.js, protobufjs static code that OpenTelemetry JS generated from
 * opentelemetry-proto: an independent decoder with the upstream field numbers and types.
 * It is CommonJS and its root.d.ts declares only a `Root`, hence createRequire and the small
 * structural types below for the part this file touches.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
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

export const EXPORT_PATH = '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export';

// ---------------------------------------------------------------------------------------------
// Decoded shapes (protobufjs toObject: camelCase, 64-bit integers as numbers, enums as names).
// Only the fields tests read; toObject also yields others (exemplars, flags, _sum...).

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

/**
 * ok = accept; unavailable / resource_exhausted / internal / unauthenticated = answer that gRPC
 * status; hang = never answer (deadline test); slow = accept, but answer after `slowMs`.
 */
export type ReceiverMode =
  | 'ok'
  | 'unavailable'
  | 'resource_exhausted'
  | 'internal'
  | 'unauthenticated'
  | 'hang'
  | 'slow';

const FAILING_MODES: Partial<Record<ReceiverMode, status>> = {
  unavailable: status.UNAVAILABLE,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  internal: status.INTERNAL,
  unauthenticated: status.UNAUTHENTICATED,
};

// ---------------------------------------------------------------------------------------------

const GENERATED_ROOT = 'otlp-official-protos/build/src/generated/root.js';

/** protobufjs toObject options (the subset used here). */
interface ConversionOptions {
  longs: NumberConstructor;
  enums: StringConstructor;
  arrays: boolean;
  oneofs: boolean;
}

/** The static methods of a protobufjs generated message class that this file calls. */
interface GeneratedMessageClass {
  decode(bytes: Uint8Array): object;
  toObject(message: object, options: ConversionOptions): object;
  encode(message: object): { finish(): Uint8Array };
}

interface MetricsServiceMessages {
  ExportMetricsServiceRequest: GeneratedMessageClass;
  ExportMetricsServiceResponse: GeneratedMessageClass;
}

function isMessageClass(v: unknown): v is GeneratedMessageClass {
  if (typeof v !== 'function') return false;
  return ['decode', 'toObject', 'encode'].every((m) => typeof Reflect.get(v, m) === 'function');
}

/** Walks root.opentelemetry.proto.collector.metrics.v1, failing with the path that is missing. */
function loadMetricsServiceMessages(): MetricsServiceMessages {
  const root: unknown = createRequire(import.meta.url)(GENERATED_ROOT);
  let node: unknown = root;
  for (const key of ['opentelemetry', 'proto', 'collector', 'metrics', 'v1']) {
    node = node !== null && typeof node === 'object' ? Reflect.get(node, key) : undefined;
    if (node === undefined) throw new Error(`${GENERATED_ROOT}: no namespace ${key}`);
  }
  const request: unknown = Reflect.get(node as object, 'ExportMetricsServiceRequest');
  const response: unknown = Reflect.get(node as object, 'ExportMetricsServiceResponse');
  if (!isMessageClass(request) || !isMessageClass(response)) {
    throw new Error(`${GENERATED_ROOT}: ExportMetricsService{Request,Response} not generated`);
  }
  return { ExportMetricsServiceRequest: request, ExportMetricsServiceResponse: response };
}

const MESSAGES = loadMetricsServiceMessages();

/**
 * The one place where decoded messages become the plain shapes above: every 64-bit integer
 * (protobufjs Long) becomes a number, enums their names, absent repeated fields [], and each
 * oneof names its set member (Metric.data). Counts stay exact; nanosecond timestamps lose their
 * last ~8 bits, which no test looks at.
 */
const CONVERSION: ConversionOptions = {
  longs: Number,
  enums: String,
  arrays: true,
  oneofs: true,
};

export function decodeExportRequest(bytes: Uint8Array): ExportMetricsServiceRequest {
  const type = MESSAGES.ExportMetricsServiceRequest;
  return type.toObject(type.decode(bytes), CONVERSION) as ExportMetricsServiceRequest;
}

function encodeEmptyResponse(): Buffer {
  return Buffer.from(MESSAGES.ExportMetricsServiceResponse.encode({}).finish());
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
  /** Date.now() of every request, in any mode (retry timing). */
  readonly attemptTimes: number[] = [];
  /** SHA-1 of every request's bytes, in any mode: a retry repeats its export's digest. */
  readonly attemptDigests: string[] = [];
  /** Metadata of every request, in any mode, keys lower-case. */
  readonly attemptMetadata: Record<string, string>[] = [];
  mode: ReceiverMode = 'ok';
  /**
   * Failing modes repeat the request's metadata in their error details, whole and word by word
   * ("invalid token abc" for "authorization: Bearer abc"), as chatty backends do.
   */
  echoMetadata = false;
  /** Delay of the answer in `slow` mode. */
  slowMs = 0;
  private slowTimers = new Set<NodeJS.Timeout>();
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
    this.attemptTimes.push(Date.now());
    this.attemptDigests.push(createHash('sha1').update(call.request).digest('hex'));
    this.attemptMetadata.push(metadataRecord(call));
    const failing = FAILING_MODES[this.mode];
    if (failing !== undefined) {
      const md = metadataRecord(call);
      const words = Object.values(md).flatMap((v) => v.split(' '));
      const echo = this.echoMetadata
        ? ` for ${JSON.stringify(md)}, words ${words.reverse().join(', ')}`
        : '';
      callback({ code: failing, details: `test collector answers ${status[failing]}${echo}` });
      return;
    }
    if (this.mode === 'hang') {
      this.hung.push(callback);
      return;
    }
    if (this.mode === 'slow') {
      const timer = setTimeout(() => {
        this.slowTimers.delete(timer);
        this.accept(call, callback);
      }, this.slowMs);
      this.slowTimers.add(timer);
      return;
    }
    this.accept(call, callback);
  }

  private accept(call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>): void {
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
    for (const t of this.slowTimers) clearTimeout(t);
    this.slowTimers.clear();
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
