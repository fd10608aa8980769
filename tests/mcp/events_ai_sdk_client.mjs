// The Vercel AI SDK's own MCP client (@ai-sdk/mcp), not mq9's code, subscribing to a real
// mq9-mcp's MCP Events with its events API, and its webhook receiver taking what comes: the
// whole consumer as it ships. One JSON line on stdout per step, for the test to read.
// argv: the MCP endpoint, the bearer token, the port to receive on, the event type, the mailbox.
import { createServer } from 'node:http';
import { experimental_createMCPClient, experimental_createMCPEventWebhook } from '@ai-sdk/mcp';

const [url, token, port, name, mailbox] = process.argv.slice(2);
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
