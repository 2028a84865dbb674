// A minimal typed client: an operation's document fixes its variables' and result's types.
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';

/** A GraphQL error as the server sends it, with its stable code. */
export class GraphQLError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export class BankClient {
  constructor(
    private readonly url: string,
    private readonly token?: string,
  ) {}

  /** The same client, authenticated as the holder of `token`. */
  as(token: string): BankClient {
    return new BankClient(this.url, token);
  }

  async request<Result, Variables>(document: TypedDocumentNode<Result, Variables>, variables: Variables): Promise<Result> {
    const response = await fetch(this.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      body: JSON.stringify({ query: print(document), variables }),
    });
    const body = (await response.json()) as { data?: Result; errors?: { message: string; extensions?: { code?: string } }[] };
    const error = body.errors?.[0];
    if (error) throw new GraphQLError(error.message, error.extensions?.code);
    if (!body.data) throw new GraphQLError(`no data (HTTP ${response.status})`, undefined);
    return body.data;
  }
}
