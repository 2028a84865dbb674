// The GraphQL-over-HTTP spec's audits (the graphql-http package's `auditServer`) against a server URL.
// usage: npm ci && node audit.mjs http://127.0.0.1:8000/graphql
// Prints each audit that did not pass, then "N passed, N failed" (a failed MUST or SHOULD counts as failed).
// Exit status: 1 if any MUST audit failed ("error"), 2 if only SHOULD audits failed ("warn"), else 0.
import { auditServer } from 'graphql-http';

const url = process.argv[2] ?? 'http://127.0.0.1:8000/graphql';
let results;
try {
  results = await auditServer({ url });
} catch (e) {
  // An unreachable server is a failure, not a skip: the audit has nothing it may leave out.
  console.log(`cannot audit ${url}: ${e.cause?.code ?? e.message}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
let passed = 0, must = 0, should = 0;
for (const r of results) {
  if (r.status === 'ok' || r.status === 'notice') { passed++; continue; }
  if (r.status === 'error') must++; else should++;
  console.log(`${r.status === 'error' ? 'MUST  ' : 'SHOULD'} ${r.id} ${r.name}: ${r.reason ?? ''}`.slice(0, 300));
}
console.log(`${passed} passed, ${must + should} failed`);
process.exit(must ? 1 : should ? 2 : 0);
