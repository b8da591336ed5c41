export interface AuditCounts {
  [level: string]: number;
}
export type AuditResult =
  | { kind: 'clean'; counts: AuditCounts }
  | { kind: 'vulnerable'; failing: number; names: string[]; counts: AuditCounts }
  | { kind: 'unavailable'; reason: string };
export function classify(report: unknown): AuditResult;
