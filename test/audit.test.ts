/**
 * The CI audit step (scripts/audit-runtime.mjs): reads `npm audit --json` reports as npm 11
 * writes them, fails on high/critical advisories, and never passes an audit that could not run
 * off as clean.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';

type AuditModule = typeof import('../scripts/audit-runtime.mjs');
// The script runs from scripts/ (not compiled): load it there from dist/test/.
const SCRIPT = new URL('../../scripts/audit-runtime.mjs', import.meta.url);
const { classify } = (await import(SCRIPT.href)) as AuditModule;

function report(counts: Record<string, number>, vulns: Record<string, string>): unknown {
  const vulnerabilities = Object.fromEntries(
    Object.entries(vulns).map(([name, severity]) => [
      name,
      {
        name,
        severity,
        isDirect: false,
        via: [],
        effects: [],
        range: '*',
        nodes: [],
        fixAvailable: true,
      },
    ]),
  );
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return {
    auditReportVersion: 2,
    vulnerabilities,
    metadata: {
      vulnerabilities: { info: 0, low: 0, moderate: 0, high: 0, critical: 0, ...counts, total },
      dependencies: { prod: 120, dev: 0, optional: 2, peer: 0, peerOptional: 0, total: 121 },
    },
  };
}

test('a report without advisories is clean', () => {
  assert.equal(classify(report({}, {})).kind, 'clean');
});

test('moderate and low advisories do not fail the audit', () => {
  const r = classify(report({ low: 2, moderate: 1 }, { a: 'low', b: 'low', c: 'moderate' }));
  assert.equal(r.kind, 'clean');
});

test('high and critical advisories fail it, naming the packages', () => {
  const r = classify(
    report({ high: 1, critical: 1, low: 1 }, { x: 'high', y: 'critical', z: 'low' }),
  );
  assert.equal(r.kind, 'vulnerable');
  if (r.kind !== 'vulnerable') return;
  assert.equal(r.failing, 2);
  assert.deepEqual(r.names.sort(), ['x (high)', 'y (critical)']);
});

test('a registry that refuses the audit endpoint is "unavailable", never clean', () => {
  // What npm 11 prints when the registry answers 405 to the bulk advisory request.
  const refused = {
    message:
      '405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
    method: 'POST',
    uri: 'https://registry.npmjs.org/-/npm/v1/security/advisories/bulk',
    statusCode: 405,
    body: '',
    error: { summary: '', detail: '' },
  };
  const r = classify(refused);
  assert.equal(r.kind, 'unavailable');
  if (r.kind === 'unavailable') assert.match(r.reason, /HTTP 405/);
  assert.equal(classify(null).kind, 'unavailable');
  assert.equal(classify({}).kind, 'unavailable');
});
