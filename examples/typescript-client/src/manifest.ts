// Writes persisted-documents.json, hash → document, for every operation in operations/: the manifest a server
// started with TRUSTED_DOCUMENTS runs, and nothing else.
import { writeFileSync } from 'node:fs';
import type { DocumentNode } from 'graphql';
import { print } from 'graphql';
import { documentId } from './documents.js';
import * as generated from './generated/graphql.js';

const manifest: Record<string, string> = {};
for (const [name, value] of Object.entries(generated)) {
  if (name.endsWith('Document')) {
    const document = value as DocumentNode;
    manifest[documentId(document)] = print(document);
  }
}
writeFileSync('persisted-documents.json', `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`persisted-documents.json: ${Object.keys(manifest).length} documents`);
