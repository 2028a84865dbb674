// Runs the README's walk-through against a live server (SERVER_URL) and checks every answer. The server must have
// a banker `carol` with the password below, as scripts/with-server sets up.
import { BankClient, GraphQLError } from './client.js';
import {
  DepositDocument, EntryAddedDocument, LogInDocument, MeDocument, NewestEntryDocument, NodeDocument, NodesDocument, OldestEntriesDocument,
  OpenAccountDocument, SignUpDocument, StatementDocument, TransferDocument, WithdrawDocument,
} from './generated/graphql.js';

const PASSWORD = 'correct horse battery';
const server = new BankClient(`${process.env.SERVER_URL ?? 'http://127.0.0.1:8000'}/graphql`);

function expect(condition: boolean, what: string): void {
  if (!condition) throw new Error(`expected ${what}`);
}

async function logIn(username: string): Promise<BankClient> {
  const { login } = await server.request(LogInDocument, { input: { username, password: PASSWORD } });
  expect(login.user.username === username, `a session for ${username}`);
  return server.as(login.accessToken);
}

for (const username of ['alice', 'bob']) {
  const { createUser } = await server.request(SignUpDocument, {
    input: { username, password: PASSWORD, fullName: `${username} Example`, email: `${username}@example.com` },
  });
  expect(createUser.role === 'DEPOSITOR', 'new users to be depositors');
}
const [alice, bob, banker] = await Promise.all(['alice', 'bob', 'carol'].map(logIn));
if (!alice || !bob || !banker) throw new Error('three sessions');

const { createAccount: aliceUsd } = await alice.request(OpenAccountDocument, { currency: 'USD' });
const { createAccount: bobUsd } = await bob.request(OpenAccountDocument, { currency: 'USD' });
expect(aliceUsd.balance === '0', 'a new account to be empty');

const { deposit } = await banker.request(DepositDocument, { input: { accountId: aliceUsd.id, amount: '10000' } });
expect(deposit.account.balance === '10000', 'the deposit to arrive');

// Alice watches her ledger from its newest entry (the deposit's), so that no entry after it can be missed however
// soon after the socket opens the transfer commits.
const { account } = await alice.request(NewestEntryDocument, { id: aliceUsd.id });
const after = account?.entries?.edges[0]?.cursor;
expect(after !== undefined, "a cursor for alice's deposit");
const socket = alice.socket();
const events = socket.subscribe(EntryAddedDocument, { accountId: aliceUsd.id, after });

const input = { fromAccountId: aliceUsd.id, toAccountId: bobUsd.id, amount: '2500', currency: 'USD' as const, idempotencyKey: 'ts-client-1' };
const first = await alice.request(TransferDocument, { input });
const retry = await alice.request(TransferDocument, { input });
expect(first.createTransfer.transfer.id === retry.createTransfer.transfer.id, 'a retry to return the same transfer');
expect(retry.createTransfer.fromAccount.balance === '7500', 'the money to move once');

const event = await Promise.race([
  events.next(),
  new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no event within 10 s')), 10_000).unref()),
]);
expect(!event.done && event.value.entryAdded.node.amount === '-2500', 'the transfer pushed to alice');
expect(!event.done && event.value.entryAdded.node.balanceAfter === '7500', 'the event to carry the balance after it');
await events.return(undefined);
await socket.close();

// Ids are global: any object comes back by its id alone, as its own query answers it.
const { node } = await alice.request(NodeDocument, { id: aliceUsd.id });
expect(node?.__typename === 'Account' && node.id === aliceUsd.id && node.balance === '7500', "alice's account by its id");
const { nodes } = await alice.request(NodesDocument, { ids: [first.createTransfer.transfer.id, aliceUsd.id] });
expect(nodes.map((n) => n?.__typename).join() === 'Transfer,Account', 'the transfer and the account, in the order asked');
try {
  await alice.request(NodeDocument, { id: bobUsd.id });
  throw new Error("expected bob's account to be refused to alice");
} catch (err) {
  expect(err instanceof GraphQLError && err.code === 'FORBIDDEN', "FORBIDDEN for someone else's account");
}

// Bob pays alice back by her username, then takes cash out.
const payBack = { fromAccountId: bobUsd.id, toUsername: 'alice', amount: '500', currency: 'USD' as const };
const { createTransfer: paid } = await bob.request(TransferDocument, { input: payBack });
expect(paid.fromAccount.balance === '2000', 'a payment by username to leave bob with 2000');
const { withdraw } = await bob.request(WithdrawDocument, { input: { accountId: bobUsd.id, amount: '500', idempotencyKey: 'atm-1' } });
expect(withdraw.kind === 'WITHDRAWAL' && withdraw.balanceAfter === '1500', 'a withdrawal to leave bob with 1500');

// Bob's statement from before he had an account until now: everything above, adding up.
const { account: statementOf } = await bob.request(StatementDocument, {
  id: bobUsd.id, since: '2000-01-01T00:00:00Z', until: new Date(Date.now() + 60_000).toISOString(),
});
const statement = statementOf?.statement;
expect(statement?.openingBalance === '0' && statement.closingBalance === '1500', "bob's statement to run from 0 to 1500");
expect(statement?.totalIn === '2500' && statement.totalOut === '1000' && statement.entryCount === 3, "bob's statement totals");

// Paging backwards: bob's oldest entry is the transfer in, and there are three in all.
const { account: oldest } = await bob.request(OldestEntriesDocument, { id: bobUsd.id, last: 1 });
expect(oldest?.entries?.totalCount === 3 && oldest.entries.pageInfo.hasPreviousPage, 'three entries, more before the last');
expect(oldest?.entries?.edges[0]?.node.kind === 'TRANSFER_IN', "bob's oldest entry to be alice's transfer");

try {
  await bob.request(DepositDocument, { input: { accountId: bobUsd.id, amount: '1' } });
  throw new Error('expected a depositor to be refused');
} catch (err) {
  expect(err instanceof GraphQLError && err.code === 'FORBIDDEN', 'FORBIDDEN for a depositor depositing');
}

const { me } = await bob.request(MeDocument, {});
expect(me.accounts?.[0]?.balance === '1500', "bob's balance to be 1500");
console.log('typescript client: sign-up, log-in, accounts, deposit, idempotent transfer, the subscribed event, node and nodes by global id, payment by username, withdrawal, statement, backward paging and me all answered as expected');
