// How this client names a document it persisted: the SHA-256 of its printed text, the key of
// persisted-documents.json (see manifest.ts) and the hash Apollo's persisted queries send.
import { createHash } from 'node:crypto';
import type { DocumentNode } from 'graphql';
import { print } from 'graphql';

export function documentId(document: DocumentNode): string {
  return createHash('sha256').update(print(document)).digest('hex');
}
