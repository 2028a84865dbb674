// GraphiQL in headless Chromium against a running server (SERVER_URL, started by scripts/with-server, which
// creates the user `carol`): the page loads with no request leaving the server, runs a query and shows the result,
// and sends the Authorization header set in its Headers tab.
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
    const login = await fetch(`${server}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: 'mutation { login(input: {username: "carol", password: "correct horse battery"}) { accessToken } }',
      }),
    }).then((r) => r.json());
    const token = login.data.login.accessToken;
    await page.evaluate((t) => localStorage.setItem('graphiql:headers', JSON.stringify({ Authorization: `Bearer ${t}` })), token);
    await run(page, '{ me { username } }');
    await resultContains(page, '"carol"');
  });
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
