// A minimal typed client: an operation's document fixes its variables' and result's types.
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import { documentId } from './documents.js';
// Node 20 has no WebSocket of its own that graphql-ws accepts: `ws` is one.
import WebSocket from 'ws';

/** A GraphQL error as the server sends it, with its stable code. */
export class GraphQLError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** Whether to name documents by their hash (see manifest.ts) rather than send their text: for a server started with
 * TRUSTED_DOCUMENTS. */
const persisted = process.env.PERSISTED_DOCUMENTS === '1';

export class BankClient {
  constructor(
    private readonly url: string,
    private readonly token?: string,
  ) {}

  /** The same client, authenticated as the holder of `token`. */
  as(token: string): BankClient {
    return new BankClient(this.url, token);
  }

  /** A socket for subscriptions (`graphql-transport-ws` on the same path), authenticated as this client. */
  socket(): BankSocket {
    return new BankSocket(this.url.replace(/^http/, 'ws'), this.token);
  }

  async request<Result, Variables>(document: TypedDocumentNode<Result, Variables>, variables: Variables): Promise<Result> {
    const response = await fetch(this.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      body: JSON.stringify(persisted ? { documentId: documentId(document), variables } : { query: print(document), variables }),
    });
    const body = (await response.json()) as { data?: Result; errors?: { message: string; extensions?: { code?: string } }[] };
    const error = body.errors?.[0];
    if (error) throw new GraphQLError(error.message, error.extensions?.code);
    if (!body.data) throw new GraphQLError(`no data (HTTP ${response.status})`, undefined);
    return body.data;
  }
}

/** Subscriptions over one socket, opened on the first and closed after the last (graphql-ws's `lazy`). */
export class BankSocket {
  private readonly client: Client;

  constructor(url: string, token?: string) {
    this.client = createClient({
      url,
      webSocketImpl: WebSocket,
      // The access token travels in connection_init's payload; a function, so that a reconnect (the server closes
      // the socket with 4403 when the session ends or the token expires) could send a fresh one.
      connectionParams: () => (token ? { authorization: `Bearer ${token}` } : {}),
    });
  }

  /** The operation's events; a refusal (say FORBIDDEN) is thrown as a {@link GraphQLError}. */
  async *subscribe<Result, Variables>(document: TypedDocumentNode<Result, Variables>, variables: Variables): AsyncGenerator<Result> {
    const results = this.client.iterate<Result>({
      query: print(document),
      variables: variables as Record<string, unknown>,
      ...(persisted ? { extensions: { persistedQuery: { version: 1, sha256Hash: documentId(document) } } } : {}),
    });
    for await (const result of results) {
      const error = result.errors?.[0];
      if (error) throw new GraphQLError(error.message, error.extensions?.code as string | undefined);
      if (result.data) yield result.data;
    }
  }

  async close(): Promise<void> {
    await this.client.dispose();
  }
}
