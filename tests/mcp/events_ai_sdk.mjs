// The Vercel AI SDK's MCP Events consumer (@ai-sdk/mcp), not written from mq9's code: its
// createMCPEventWebhook answers the callback verification, checks each delivery's Standard
// Webhooks signature and that webhook-id is the event's eventId, and acks. One JSON line on
// stdout per step, for the test to read. Two ways in:
//   handed PORT EVENT MAILBOX: the test subscribes and hands the subscription's id on stdin;
//   client URL TOKEN PORT EVENT MAILBOX: the SDK's own MCP client lists and subscribes.
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { experimental_createMCPClient, experimental_createMCPEventWebhook } from '@ai-sdk/mcp';

const mode = process.argv[2];
const [url, token] = mode === 'client' ? process.argv.slice(3, 5) : [];
const [port, name, mailbox] = process.argv.slice(mode === 'client' ? 5 : 3);
const say = record => process.stdout.write(JSON.stringify(record) + '\n');

const records = new Map();
const store = {
  get: async key => records.get(key),
  getById: async id => [...records.values()].find(r => r.id === id),
  set: async record => void records.set(record.key, record),
  update: async (key, patch) => void records.set(key, { ...records.get(key), ...patch }),
  delete: async key => void records.delete(key),
};

const webhook = experimental_createMCPEventWebhook({
  store,
  onEvent: async ({ subscription, event }) => say({ step: 'event', subscription: subscription.id, event }),
  onError: error => say({ step: 'error', message: String(error) }),
});

const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const request = new Request(`http://127.0.0.1:${port}${req.url}`, {
    method: req.method, headers: req.headers, body: Buffer.concat(chunks),
  });
  const answer = await webhook(request);
  say({ step: 'answered', status: answer.status, webhookId: req.headers['webhook-id'] });
  res.writeHead(answer.status, Object.fromEntries(answer.headers));
  res.end(Buffer.from(await answer.arrayBuffer()));
});
await new Promise(ready => server.listen(Number(port), '127.0.0.1', ready));

if (mode === 'client') {
  try {
    const client = await experimental_createMCPClient({
      transport: { type: 'http', url, headers: { Authorization: `Bearer ${token}` } },
      experimental_events: { store },
    });
    const listed = await client.experimental_events.list();
    say({ step: 'listed', names: listed.events.map(e => e.name) });
    const made = await client.experimental_events.subscribe({
      name, arguments: { mail_address: mailbox },
      delivery: { mode: 'webhook', url: `http://127.0.0.1:${port}/hooks/mq9`, allowInsecureLocalhost: true },
    });
    say({ step: 'subscribed', id: made.id ?? made.subscription?.id ?? null });
  } catch (error) {
    say({ step: 'refused', message: String(error?.message ?? error) });
  }
} else {
  // The test subscribes and hands this consumer the subscription the way the SDK's client
  // would store it: pending (verification answered, events refused 503) until its id is known.
  const key = crypto.randomUUID();
  const secret = `whsec_${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64')}`;
  const callback = `http://127.0.0.1:${port}/hooks/mq9?mcp_event_subscription=${key}`;
  const definition = { name, delivery: ['webhook'], inputSchema: {}, payloadSchema: {} };
  await store.set({
    key, name, arguments: { mail_address: mailbox }, definition,
    delivery: { mode: 'webhook', url: callback, secret }, cursor: null, truncated: false,
    status: 'pending',
  });
  say({ step: 'ready', url: callback, secret });
  for await (const line of createInterface({ input: process.stdin })) {
    const { id, refreshBefore } = JSON.parse(line);
    await store.update(key, { id, refreshBefore, status: 'active' });
    say({ step: 'subscribed', id });
  }
}
