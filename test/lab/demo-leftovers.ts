/**
 * What a lab run may leave on the machine, looked up from outside: its network namespaces
 * (alt-<id>-*), veths (altv<id>N), bridge (altbr<id>), state files (/run/alt-lab/<id>.*),
 * cgroup directories and processes. The demo checks it after its teardown; its test after exit.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

function output(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** A process that exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export interface LeftoverQuery {
  labId: string;
  cgroupDirs?: readonly string[];
  pids?: readonly number[];
  dirs?: readonly string[];
}

/** Everything of lab `labId` still present, one description each; empty when nothing is. */
export function leftovers(q: LeftoverQuery): string[] {
  const left: string[] = [];
  for (const line of output('ip', ['netns', 'list']).split('\n')) {
    const ns = line.trim().split(/\s+/)[0] ?? '';
    if (ns.startsWith(`alt-${q.labId}-`)) left.push(`network namespace ${ns}`);
  }
  const linkRe = new RegExp(`^(altv${q.labId}\\d+|altbr${q.labId})$`);
  for (const line of output('ip', ['-o', 'link', 'show']).split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)/.exec(line);
    if (m && linkRe.test(m[1])) left.push(`link ${m[1]}`);
  }
  for (const f of [`/run/alt-lab/${q.labId}.pid`, `/run/alt-lab/${q.labId}.cgroups`]) {
    if (existsSync(f)) left.push(`state file ${f}`);
  }
  for (const d of q.cgroupDirs ?? []) if (existsSync(d)) left.push(`cgroup directory ${d}`);
  for (const d of q.dirs ?? []) if (existsSync(d)) left.push(`directory ${d}`);
  for (const pid of q.pids ?? []) if (processAlive(pid)) left.push(`process ${pid}`);
  return left;
}
