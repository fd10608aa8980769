// A webhook consumer of MCP Events written with the Vercel AI SDK (@ai-sdk/mcp), not with mq9's
// code: its createMCPEventWebhook answers the callback verification, checks each delivery's
// Standard Webhooks signature and that webhook-id is the event's eventId, and acks. One JSON
// line on stdout per step, for the test to read; the subscription's id comes on stdin.
// argv: the port to receive on, the event type, the mailbox watched.
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { experimental_createMCPEventWebhook } from '@ai-sdk/mcp';

const [port, name, mailbox] = process.argv.slice(2);
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

// The SDK's client subscribes only to a server whose capabilities carry a top-level `events`
// (the design sketch's form); mq9-mcp declares the extension as SEP-3415 Final has it, so the
// test subscribes and hands this consumer the subscription the way its client would store it:
// pending (verification answered, events refused 503) until the subscription's id is known.
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
