// GraphiQL in headless Chromium against a running server (SERVER_URL, started by scripts/with-server, which
// creates the banker `carol`): the page loads with no request leaving the server, runs a query and shows the
// result, sends the Authorization header set in its Headers tab, runs a subscription over the server's socket, and
// fetches the account it watched by its global id with `node`.
import { chromium } from 'playwright-core';

const server = process.env.SERVER_URL ?? 'http://127.0.0.1:8000';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
let passed = 0;
let failed = 0;
async function check(name, body) {
  try {
    await body();
    passed++;
    console.log(`PASS ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
  }
}

async function run(page, query) {
  await page.goto(`${server}/?query=${encodeURIComponent(query)}`);
  await page.waitForSelector('.graphiql-execute-button', { timeout: 30_000 });
  await page.click('.graphiql-execute-button');
}

async function resultContains(page, text) {
  await page.waitForFunction((t) => document.querySelector('.result-window')?.innerText.includes(t), text, {
    timeout: 30_000,
  });
}

async function graphql(query, variables, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = await fetch(`${server}/graphql`, { method: 'POST', headers, body: JSON.stringify({ query, variables }) })
    .then((r) => r.json());
  if (body.errors) throw new Error(`${query}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const login = async (username) =>
  (await graphql('mutation($u: String!) { login(input: {username: $u, password: "correct horse battery"}) { accessToken } }',
    { u: username })).login.accessToken;

try {
  const page = await browser.newPage();
  const elsewhere = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(server)) elsewhere.push(request.url());
  });

  await check('GraphiQL loads from the server alone and opens with how to log in', async () => {
    await page.goto(server);
    await page.waitForSelector('.graphiql-execute-button', { timeout: 30_000 });
    const html = await page.content();
    if (!html.includes('mutation Login')) throw new Error('the default query does not show how to log in');
    if (elsewhere.length) throw new Error(`requests left the server: ${elsewhere.join(', ')}`);
  });

  await check('a query runs and its result shows', async () => {
    await run(page, '{ __typename }');
    await resultContains(page, '"Query"');
  });

  await check('the Authorization header set in the Headers tab is sent', async () => {
    const token = await login('carol');
    await page.evaluate((t) => localStorage.setItem('graphiql:headers', JSON.stringify({ Authorization: `Bearer ${t}` })), token);
    await run(page, '{ me { username } }');
    await resultContains(page, '"carol"');
  });

  let account;
  let dave;
  await check('a subscription runs over the socket with the header as its credentials, and a deposit shows', async () => {
    await graphql(`mutation { createUser(input: {username: "dave", password: "correct horse battery",
      fullName: "Dave Example", email: "dave@example.com"}) { username } }`);
    dave = await login('dave');
    const carol = await login('carol');
    account = (await graphql('mutation { createAccount(currency: USD) { id } }', {}, dave)).createAccount.id;
    const deposit = (amount) => graphql('mutation($a: ID!, $n: Money!) { deposit(input: {accountId: $a, amount: $n}) { id } }',
      { a: account, n: amount }, carol);
    // From the cursor of a first deposit, so that the second shows however soon after the socket opens it commits.
    await deposit(100);
    const cursor = (await graphql('query($a: ID!) { account(id: $a) { entries(first: 1) { edges { cursor } } } }',
      { a: account }, dave)).account.entries.edges[0].cursor;
    await page.evaluate((t) => localStorage.setItem('graphiql:headers', JSON.stringify({ Authorization: `Bearer ${t}` })), dave);
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(socket.url()));
    await run(page, `subscription { entryAdded(accountId: "${account}", after: "${cursor}") { node { amount balanceAfter } } }`);
    await deposit(4242);
    await resultContains(page, '"4342"');
    if (!sockets.some((url) => url.startsWith(server.replace(/^http/, 'ws')))) throw new Error(`sockets: ${sockets}`);
  });

  await check('node fetches the account by its global id', async () => {
    await page.evaluate((t) => localStorage.setItem('graphiql:headers', JSON.stringify({ Authorization: `Bearer ${t}` })), dave);
    await run(page, `{ node(id: "${account}") { __typename ... on Account { balance } } }`);
    await resultContains(page, '"balance": "4342"');
  });
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
