/**
 * What BPF programs are attached where, seen from outside the agent: TCX links (bpftool link
 * show; the owning process's /proc/<pid>/fdinfo gives their interface) and classic tc filters
 * (tc filter show). Used to prove the agent attached while running and detached on SIGTERM.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export const AGENT_PROG_NAMES: ReadonlySet<string> = new Set(['tc_ingress', 'tc_egress']);
const LINK_TYPE_TCX = 11; // enum bpf_link_type: bpftool 7.1 prints it as a number
export const BPF_TCX_INGRESS = 46; // enum bpf_attach_type
export const BPF_TCX_EGRESS = 47;

export interface BpfLink {
  id: number;
  type: string;
  progId: number;
  progName?: string;
  ifindex?: number;
}

function output(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return '';
  }
}

function progNames(): Map<number, string> {
  const names = new Map<number, string>();
  const text = output('bpftool', ['-j', 'prog', 'show']);
  if (!text) return names;
  for (const p of JSON.parse(text) as { id: number; name?: string }[]) {
    if (p.name) names.set(p.id, p.name);
  }
  return names;
}

function normaliseType(t: unknown): string {
  if (t === LINK_TYPE_TCX || t === 'tcx') return 'tcx';
  return String(t);
}

/** Every BPF link on the machine, with its program's name (and interface when bpftool knows). */
export function bpfLinks(): BpfLink[] {
  const text = output('bpftool', ['-j', 'link', 'show']);
  if (!text) return [];
  const names = progNames();
  return (
    JSON.parse(text) as { id: number; type: unknown; prog_id: number; ifindex?: number }[]
  ).map((l) => ({
    id: l.id,
    type: normaliseType(l.type),
    progId: l.prog_id,
    progName: names.get(l.prog_id),
    ifindex: l.ifindex,
  }));
}

/** The TCX links a live process holds, with interface index and attach type, from fdinfo. */
export function processTcxLinks(
  pid: number,
): { linkId: number; ifindex: number; attachType: number }[] {
  const out: { linkId: number; ifindex: number; attachType: number }[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== 'anon_inode:bpf_link') continue;
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const field = (k: string): number =>
        Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(info)?.[1]);
      if (!/^link_type:\s*tcx/m.test(info)) continue;
      out.push({
        linkId: field('link_id'),
        ifindex: field('ifindex'),
        attachType: field('attach_type'),
      });
    } catch {
      // fd closed meanwhile
    }
  }
  return out;
}

export function ifindexOf(iface: string): number | undefined {
  const text = output('ip', ['-j', 'link', 'show', 'dev', iface]);
  if (!text) return undefined;
  return (JSON.parse(text) as { ifindex: number }[])[0]?.ifindex;
}

/** tc filter lines on an interface's ingress and egress hooks that name one of our programs. */
export function agentTcFilters(iface: string): string[] {
  const found: string[] = [];
  for (const dir of ['ingress', 'egress']) {
    // Fails harmlessly ("Cannot find specified qdisc") when there is no clsact qdisc at all.
    const text = output('tc', ['filter', 'show', 'dev', iface, dir]);
    for (const line of text.split('\n')) {
      if ([...AGENT_PROG_NAMES].some((n) => line.includes(n)))
        found.push(`${iface} ${dir}: ${line.trim()}`);
    }
  }
  return found;
}

/**
 * The agent's attachments visible on `ifaces`: tc filters by program name, TCX links whose
 * interface bpftool reports, and links whose ids are in `knownLinkIds` (taken from the agent's
 * fdinfo while it ran: bpftool 7.1 shows no interface for TCX links). One line per finding.
 */
export function agentAttachments(
  ifaces: string[],
  knownLinkIds: ReadonlySet<number> = new Set(),
): string[] {
  const found: string[] = [];
  for (const i of ifaces) found.push(...agentTcFilters(i));
  const indexes = new Set(ifaces.map(ifindexOf).filter((x): x is number => x !== undefined));
  for (const l of bpfLinks()) {
    const ours = l.progName !== undefined && AGENT_PROG_NAMES.has(l.progName);
    if (knownLinkIds.has(l.id) || (ours && l.ifindex !== undefined && indexes.has(l.ifindex))) {
      found.push(
        `link ${l.id} type ${l.type} prog ${l.progName ?? l.progId} ifindex ${l.ifindex ?? '?'}`,
      );
    }
  }
  return found;
}
