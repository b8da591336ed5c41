/**
 * bpf/audio_event.h and src/abi.ts describe the same bytes. This compiles a small C program
 * against the header (with the host's cc, into a temporary directory) that prints every size,
 * offset and enum value as JSON, and compares them with the TypeScript mirror.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  AEV_HEADER_SIZE,
  AEV_MAX_CAPTURE,
  AEV_BULK_BYTES_PER_SEC,
  AEV_MAX_CHUNKS,
  AudioEventLayout,
  Direction,
  Encoding,
  EventFlag,
  FlowKeyLayout,
  KERNEL_STAT_COUNT,
  KernelStat,
  PORT_MAP_WORDS,
  RtpFlowLayout,
  RtpFlowState,
  SIG_RECORD_SIZE,
  SigRecordLayout,
  TcpFlowLayout,
  TcpKeyLayout,
  TcpStateFlag,
} from '../src/abi.js';

// dist/test/abi.test.js -> repository root
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEADER_DIR = join(ROOT, 'bpf');

/** C field name, TypeScript layout key, C size of the field's type. */
type Field = readonly [c: string, ts: string, size: number];

const AUDIO_EVENT_FIELDS: readonly Field[] = [
  ['ts_ns', 'tsNs', 8],
  ['ifindex', 'ifindex', 4],
  ['direction', 'direction', 1],
  ['family', 'family', 1],
  ['protocol', 'protocol', 1],
  ['encoding', 'encoding', 1],
  ['saddr', 'saddr', 16],
  ['daddr', 'daddr', 16],
  ['sport', 'sport', 2],
  ['dport', 'dport', 2],
  ['payload_off', 'payloadOff', 2],
  ['payload_len', 'payloadLen', 2],
  ['captured_len', 'capturedLen', 2],
  ['flags', 'flags', 2],
  ['seq', 'seq', 4],
  ['cgroup_id', 'cgroupId', 8],
  ['data', 'data', AEV_MAX_CAPTURE],
];

const SIG_RECORD_FIELDS: readonly Field[] = [
  ['ts_ns', 'tsNs', 8],
  ['sig_lo', 'sigLo', 4],
  ['sig_hi', 'sigHi', 4],
  ['saddr', 'saddr', 16],
  ['daddr', 'daddr', 16],
  ['sport', 'sport', 2],
  ['dport', 'dport', 2],
  ['ifindex', 'ifindex', 4],
  ['direction', 'direction', 1],
  ['family', 'family', 1],
  ['protocol', 'protocol', 1],
  ['encoding', 'encoding', 1],
  ['cgroup_id', 'cgroupId', 8],
];

const FLOW_KEY_FIELDS: readonly Field[] = [
  ['saddr', 'saddr', 16],
  ['daddr', 'daddr', 16],
  ['sport', 'sport', 2],
  ['dport', 'dport', 2],
  ['family', 'family', 1],
  ['protocol', 'protocol', 1],
];

const RTP_FLOW_FIELDS: readonly Field[] = [
  ['ssrc', 'ssrc', 4],
  ['id', 'id', 8],
  ['state', 'state', 1],
];

const TCP_KEY_FIELDS: readonly Field[] = [
  ['flow', 'flow', FlowKeyLayout.size],
  ['ifindex', 'ifindex', 4],
  ['direction', 'direction', 1],
];

const TCP_FLOW_FIELDS: readonly Field[] = [
  ['last_seen_ns', 'lastSeenNs', 8],
  ['next_seq', 'nextSeq', 4],
  ['flags', 'flags', 4],
  ['window_ns', 'windowNs', 8],
  ['window_bytes', 'windowBytes', 4],
];

/** C enumerator, TypeScript value it must equal. */
const ENUMS: readonly (readonly [string, number])[] = [
  ['AEV_DIR_INGRESS', Direction.Ingress],
  ['AEV_DIR_EGRESS', Direction.Egress],
  ['AEV_ENC_RAW_LE16', Encoding.RawLe16],
  ['AEV_ENC_PCMU', Encoding.Pcmu],
  ['AEV_ENC_PCMA', Encoding.Pcma],
  ['AEV_ENC_L16_BE', Encoding.L16Be],
  ['AEV_ENC_OPAQUE', Encoding.Opaque],
  ['AEV_F_RTP', EventFlag.Rtp],
  ['AEV_F_TRUNCATED', EventFlag.Truncated],
  ['AEV_F_VLAN', EventFlag.Vlan],
  ['AEV_F_STREAM_START', EventFlag.StreamStart],
  ['AEV_F_GAP', EventFlag.Gap],
  ['AEV_F_STREAM_END', EventFlag.StreamEnd],
  ['AEV_F_CHUNK', EventFlag.Chunk],
  ['AEV_MAX_CHUNKS', AEV_MAX_CHUNKS],
  ['AEV_STAT_PACKETS', KernelStat.Packets],
  ['AEV_STAT_UDP', KernelStat.Udp],
  ['AEV_STAT_PORT_MISS', KernelStat.PortMiss],
  ['AEV_STAT_AUDIO', KernelStat.Audio],
  ['AEV_STAT_EVENTS', KernelStat.Events],
  ['AEV_STAT_LOST', KernelStat.Lost],
  ['AEV_STAT_TRUNCATED', KernelStat.Truncated],
  ['AEV_STAT_MALFORMED', KernelStat.Malformed],
  ['AEV_STAT_FRAGMENTS', KernelStat.Fragments],
  ['AEV_STAT_NOT_AUDIO', KernelStat.NotAudio],
  ['AEV_STAT_TCP_SEGMENTS', KernelStat.TcpSegments],
  ['AEV_STAT_TCP_RETRANS_BYTES', KernelStat.TcpRetransBytes],
  ['AEV_STAT_TCP_OUT_OF_ORDER', KernelStat.TcpOutOfOrder],
  ['AEV_STAT_TCP_RESYNC', KernelStat.TcpResync],
  ['AEV_STAT_TCP_FLOWS_EXPIRED', KernelStat.TcpFlowsExpired],
  ['AEV_STAT_ENCRYPTED_FLOWS', KernelStat.EncryptedFlows],
  ['AEV_STAT_ENCRYPTED_SEGMENTS', KernelStat.EncryptedSegments],
  ['AEV_STAT_GSO_CHUNKS', KernelStat.GsoChunks],
  ['AEV_STAT_GSO_TRUNCATED', KernelStat.GsoTruncated],
  ['AEV_STAT_BULK_FLOWS', KernelStat.BulkFlows],
  ['AEV_STAT_BULK_SEGMENTS', KernelStat.BulkSegments],
  ['AEV_STAT_MAX', KERNEL_STAT_COUNT],
  ['AEV_RTP_NONE', RtpFlowState.None],
  ['AEV_RTP_RAW', RtpFlowState.Raw],
  ['AEV_RTP_YES', RtpFlowState.Rtp],
  ['AEV_TCP_ENCRYPTED', TcpStateFlag.Encrypted],
  ['AEV_TCP_START_PENDING', TcpStateFlag.StartPending],
  ['AEV_TCP_BULK', TcpStateFlag.Bulk],
  ['AEV_TCP_ENDED', TcpStateFlag.Ended],
  ['AEV_BULK_BYTES_PER_SEC', AEV_BULK_BYTES_PER_SEC],
  ['AEV_MAX_CAPTURE', AEV_MAX_CAPTURE],
  ['AEV_HEADER_SIZE', AEV_HEADER_SIZE],
  ['PORT_MAP_WORDS', PORT_MAP_WORDS],
  ['SIG_RECORD_SIZE', SIG_RECORD_SIZE],
];

interface CLayout {
  size: number;
  fields: Record<string, { offset: number; size: number }>;
}
interface CAbi {
  audio_event: CLayout;
  sig_record: CLayout;
  aev_config: CLayout;
  aev_flow_key: CLayout;
  aev_rtp_flow: CLayout;
  aev_tcp_key: CLayout;
  aev_tcp_flow: CLayout;
  values: Record<string, number>;
}

function cLayout(struct: string, fields: readonly string[]): string {
  const lines = fields.map(
    (f) =>
      `  printf("\\"${f}\\":{\\"offset\\":%zu,\\"size\\":%zu}${f === fields.at(-1) ? '' : ','}", ` +
      `offsetof(struct ${struct}, ${f}), sizeof(((struct ${struct} *)0)->${f}));`,
  );
  return [
    `  printf("\\"${struct}\\":{\\"size\\":%zu,\\"fields\\":{", sizeof(struct ${struct}));`,
    ...lines,
    '  printf("}},");',
  ].join('\n');
}

function cProgram(): string {
  const values = ENUMS.map(
    ([name], i) =>
      `  printf("\\"${name}\\":%lld${i + 1 < ENUMS.length ? ',' : ''}", (long long)(${name}));`,
  );
  return [
    '#include <stddef.h>',
    '#include <stdio.h>',
    '#include <linux/types.h>',
    '#include "audio_event.h"',
    'int main(void)',
    '{',
    '  printf("{");',
    cLayout('audio_event', [...AUDIO_EVENT_FIELDS.map(([c]) => c)]),
    cLayout('sig_record', [...SIG_RECORD_FIELDS.map(([c]) => c), '_pad']),
    cLayout('aev_config', ['all_ports', '_pad']),
    cLayout('aev_flow_key', [...FLOW_KEY_FIELDS.map(([c]) => c), '_pad']),
    cLayout('aev_rtp_flow', [...RTP_FLOW_FIELDS.map(([c]) => c), '_pad']),
    cLayout('aev_tcp_key', [...TCP_KEY_FIELDS.map(([c]) => c), '_pad']),
    cLayout('aev_tcp_flow', [...TCP_FLOW_FIELDS.map(([c]) => c), '_pad']),
    '  printf("\\"values\\":{");',
    ...values,
    '  printf("}}\\n");',
    '  return 0;',
    '}',
  ].join('\n');
}

function compileAndRun(): CAbi {
  const dir = mkdtempSync(join(tmpdir(), 'alt-abi-'));
  try {
    const src = join(dir, 'abi.c');
    const bin = join(dir, 'abi');
    writeFileSync(src, cProgram());
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', '-I', HEADER_DIR, src, '-o', bin], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    return JSON.parse(execFileSync(bin, { encoding: 'utf8' })) as CAbi;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const abi = compileAndRun();

function checkFields(
  c: CLayout,
  fields: readonly Field[],
  layout: Readonly<Record<string, number>>,
): void {
  for (const [cName, tsName, size] of fields) {
    const f = c.fields[cName];
    assert.ok(f, `C field ${cName} missing`);
    assert.equal(f.offset, layout[tsName], `offset of ${cName} (abi.ts ${tsName})`);
    assert.equal(f.size, size, `size of ${cName}`);
  }
}

test('struct audio_event matches AudioEventLayout', () => {
  checkFields(abi.audio_event, AUDIO_EVENT_FIELDS, AudioEventLayout);
  assert.equal(abi.audio_event.size, AudioEventLayout.size);
  assert.equal(
    abi.audio_event.fields.data.offset,
    AEV_HEADER_SIZE,
    'AEV_HEADER_SIZE is offsetof(data)',
  );
  // The header's fields cover every byte before data: no hidden compiler padding.
  const header = AUDIO_EVENT_FIELDS.filter(([c]) => c !== 'data');
  const covered = header.reduce((n, [c]) => n + abi.audio_event.fields[c].size, 0);
  assert.equal(covered, AEV_HEADER_SIZE);
  const cgroup = abi.audio_event.fields.cgroup_id;
  assert.equal(cgroup.offset + cgroup.size, AEV_HEADER_SIZE, 'cgroup_id ends the header');
  // A whole event (the ring buffer reserves it per record) stays within 2056 bytes.
  assert.ok(abi.audio_event.size <= 2056, `struct audio_event is ${abi.audio_event.size} bytes`);
  assert.equal(AEV_HEADER_SIZE % 8, 0, 'data[] starts 8-byte aligned');
});

test('struct sig_record matches SigRecordLayout', () => {
  checkFields(abi.sig_record, SIG_RECORD_FIELDS, SigRecordLayout);
  assert.equal(abi.sig_record.size, SIG_RECORD_SIZE);
  // Fields and the explicit padding cover every byte: no hidden compiler padding.
  const covered = Object.values(abi.sig_record.fields).reduce((n, f) => n + f.size, 0);
  assert.equal(covered, SIG_RECORD_SIZE);
  // Records are read through 32-bit views of the batch: the u64 must sit on a word pair.
  assert.equal(SigRecordLayout.cgroupId % 8, 0);
  assert.equal(SIG_RECORD_SIZE % 8, 0, 'consecutive records keep cgroup_id 8-byte aligned');
});

test('struct aev_config is the 8-byte layout the addon writes', () => {
  // Written only by native/loader.cc (no TypeScript mirror): pin its layout here.
  assert.equal(abi.aev_config.size, 8);
  assert.deepEqual(abi.aev_config.fields.all_ports, { offset: 0, size: 4 });
});

test('struct aev_flow_key and struct aev_rtp_flow match their layouts, with no hidden padding', () => {
  // A hash map key is hashed byte for byte: padding the compiler added would be hashed uninitialised.
  for (const [c, fields, layout] of [
    [abi.aev_flow_key, FLOW_KEY_FIELDS, FlowKeyLayout],
    [abi.aev_rtp_flow, RTP_FLOW_FIELDS, RtpFlowLayout],
  ] as const) {
    checkFields(c, fields, layout);
    assert.equal(c.size, layout.size);
    const pad = c.fields._pad;
    assert.equal(pad.offset + pad.size, layout.size, 'explicit padding ends the struct');
    const covered = Object.values(c.fields).reduce((n, f) => n + f.size, 0);
    assert.equal(covered, layout.size, 'fields and explicit padding cover every byte');
  }
});

test('struct aev_tcp_key and struct aev_tcp_flow match their layouts, with no hidden padding', () => {
  for (const [c, fields, layout] of [
    [abi.aev_tcp_key, TCP_KEY_FIELDS, TcpKeyLayout],
    [abi.aev_tcp_flow, TCP_FLOW_FIELDS, TcpFlowLayout],
  ] as const) {
    checkFields(c, fields, layout);
    assert.equal(c.size, layout.size);
    const covered = Object.values(c.fields).reduce((n, f) => n + f.size, 0);
    assert.equal(covered, layout.size, 'fields and explicit padding cover every byte');
  }
  // The key embeds struct aev_flow_key whole: its own layout (checked above) applies inside.
  assert.equal(abi.aev_tcp_key.fields.flow.size, abi.aev_flow_key.size);
});

test('enum values and constants match abi.ts', () => {
  for (const [name, value] of ENUMS) assert.equal(abi.values[name], value, name);
});
