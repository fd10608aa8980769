// Interop driver for tests/robustmq/test_sdk_interop_js.py (langchain-mq9's own code).
//
// Usage: node interop_driver.mjs <built SDK dir> <nats url> <name prefix> <section>
//
// Loads the official mq9 JavaScript SDK from a directory where it was built (dist/ and
// node_modules/, outside this repository), runs one section of calls against the broker and
// prints exactly one JSON object on stdout: for every call, {"value": ...} or
// {"error": <message>, "type": <error class name>}. Messages are reported as
// {msgId, priority, createTime, payload: <hex of the bytes the SDK handed out>}.
// The Python test holds every expectation; this file only records what happened.

import { createRequire } from "node:module";
import path from "node:path";

const [sdkDir, url, prefix, section] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const sdk = require(path.join(sdkDir, "dist", "index.js"));

const results = {};

function plain(value) {
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    if ("msgId" in value && value.payload instanceof Uint8Array) {
      return {
        msgId: value.msgId,
        priority: value.priority,
        createTime: value.createTime,
        payload: plain(value.payload),
      };
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value === undefined ? null : value;
}

async function step(name, call) {
  try {
    results[name] = { value: plain(await call()) };
  } catch (err) {
    results[name] = { error: String(err?.message ?? err), type: err?.name ?? typeof err };
  }
  return results[name].value;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition, ms) {
  const until = Date.now() + ms;
  while (!condition() && Date.now() < until) await sleep(10);
}

function card(name, mailbox) {
  return {
    name,
    description: "Turns Japanese contracts into English",
    version: "2.1.0",
    supportedInterfaces: [
      { url: `mq9://${mailbox}`, protocolBinding: "mq9", protocolVersion: "1.0" },
    ],
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [{ id: "contracts", name: "legal translation", description: "Japanese", tags: ["ja"] }],
  };
}

async function connected() {
  const client = new sdk.Mq9Client(url, { requestTimeout: 5000, reconnectAttempts: 0 });
  await client.connect();
  return client;
}

const sections = {
  async mailbox(client) {
    await step("not_connected", () => new sdk.Mq9Client(url).mailboxCreate());
    await step("named", () => client.mailboxCreate({ name: `${prefix}.inbox`, ttl: 0 }));
    await step("named_ttl", () => client.mailboxCreate({ name: `${prefix}.short`, ttl: 60 }));
    await step("generated", () => client.mailboxCreate());
    await step("generated_again", () => client.mailboxCreate());
    await step("duplicate", () => client.mailboxCreate({ name: `${prefix}.inbox` }));
    await step("bad_name", () => client.mailboxCreate({ name: "Upper.Case" }));
  },

  async send(client) {
    const box = `${prefix}.inbox`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    await step("plain", () => client.send(box, "plain text"));
    await step("object", () => client.send(box, { task: 1 }, { priority: sdk.Priority.URGENT }));
    await step("keyed", () => client.send(box, "v1", { key: "k", tags: ["a", "b"], ttl: 60 }));
    await step("keyed_again", () => client.send(box, "v2", { key: "k", tags: ["b"] }));
    await step("critical", () =>
      client.send(box, "abcd", { priority: sdk.Priority.CRITICAL, ttl: 60 })
    );
    await step("bytes", () => client.send(box, new Uint8Array([0x68, 0x69])));
    await step("delayed", () => client.send(box, "later", { delay: 30 }));
    await step("delayed_zero", () => client.send(box, "now-ish", { delay: 0 }));
    await step("missing", () => client.send(`${prefix}.nobody`, "x"));
  },

  async fetch(client) {
    const box = `${prefix}.work`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    await client.send(box, "n0");
    await client.send(box, "u1", { priority: sdk.Priority.URGENT });
    await client.send(box, "n2");
    await client.send(box, "c3", { priority: sdk.Priority.CRITICAL });
    const group = { groupName: "g", deliver: "earliest", maxWaitMs: 0 };
    await step("group_first", () => client.fetch(box, group));
    await step("group_again", () => client.fetch(box, group));
    await step("ack", () => client.ack(box, "g", 1));
    await step("group_after_ack", () => client.fetch(box, group));
    await step("force", () => client.fetch(box, { ...group, forceDeliver: true }));
    await step("after_force", () => client.fetch(box, group));
    await step("from_id", () =>
      client.fetch(box, { groupName: "h", deliver: "from_id", fromId: 2, maxWaitMs: 0 })
    );
    await step("num_msgs", () =>
      client.fetch(box, { groupName: "n", deliver: "earliest", numMsgs: 1, maxWaitMs: 0 })
    );
    await step("ack_unknown_mailbox", () => client.ack(`${prefix}.nobody`, "g", 0));
    await step("missing", () => client.fetch(`${prefix}.nobody`, { maxWaitMs: 0 }));
  },

  // fetch() without a groupName sends group_name "": one group shared by every caller.
  async shared(client) {
    const box = `${prefix}.shared`;
    const fresh = `${prefix}.fresh`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    await client.mailboxCreate({ name: fresh, ttl: 0 });
    for (const text of ["m0", "m1", "m2", "m3"]) await client.send(box, text);
    for (const text of ["f0", "f1", "f2"]) await client.send(fresh, text);
    const stateless = { maxWaitMs: 0 };
    await step("before_1", () => client.fetch(box, stateless));
    await step("before_2", () => client.fetch(box, stateless));
    await step("fresh_before", () => client.fetch(fresh, stateless));
    const anyone = await connected();
    await step("ack_by_anyone", () => anyone.ack(box, "", 0));
    await anyone.close();
    await step("after_1", () => client.fetch(box, stateless));
    await step("after_2", () => client.fetch(box, stateless));
    await step("fresh_after", () => client.fetch(fresh, stateless));
  },

  async query(client) {
    const box = `${prefix}.inbox`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    await client.send(box, "plain text");
    await client.send(box, { task: 1 }, { priority: sdk.Priority.URGENT });
    await client.send(box, "v1", { key: "k", tags: ["a"] });
    await client.send(box, "v2", { key: "k", tags: ["b"] });
    await client.send(box, "abcd", { priority: sdk.Priority.CRITICAL });
    await client.send(box, "héllo=wörld");
    await step("all", () => client.query(box));
    await step("key", () => client.query(box, { key: "k" }));
    await step("limit", () => client.query(box, { limit: 2 }));
    await step("since", () => client.query(box, { since: 4102444800 }));
    await step("delete", () => client.delete(box, 0));
    await step("delete_unknown_id", () => client.delete(box, 999));
    await step("after_delete", () => client.query(box));
    await step("delete_missing_mailbox", () => client.delete(`${prefix}.nobody`, 0));
    await step("query_missing_mailbox", () => client.query(`${prefix}.nobody`));
  },

  async consume(client) {
    const box = `${prefix}.jobs`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    await client.send(box, "j0");
    await client.send(box, "j1");
    await client.send(box, "j2", { priority: sdk.Priority.CRITICAL });

    const grouped = [];
    const withGroup = await client.consume(
      box,
      async (msg) => {
        grouped.push(plain(msg));
      },
      { groupName: "c", deliver: "earliest", maxWaitMs: 0 }
    );
    await waitFor(() => grouped.length >= 4, 5000);
    await sleep(300); // long enough for further (unexpected) deliveries to show up
    await step("group_stop", () => withGroup.stop());
    results.group_seen = { value: grouped };
    results.group_processed = { value: withGroup.processedCount };
    results.group_running = { value: withGroup.isRunning };
    await step("group_then", () => client.fetch(box, { groupName: "c", maxWaitMs: 0 }));

    const ungrouped = [];
    const withoutGroup = await client.consume(
      box,
      async (msg) => {
        ungrouped.push(plain(msg));
      },
      { maxWaitMs: 0 }
    );
    await waitFor(() => ungrouped.length >= 5, 5000);
    await step("nogroup_stop", () => withoutGroup.stop());
    results.nogroup_seen = { value: ungrouped.slice(0, 5) };
    results.nogroup_processed = { value: withoutGroup.processedCount >= 5 };
  },

  async agents(client) {
    const box = `${prefix}.agent`;
    const name = `${prefix}-translator`;
    await client.mailboxCreate({ name: box, ttl: 0 });
    const a2a = card(name, box);
    await step("register_card", () => client.agentRegister(a2a));
    await step("register_card_with_mailbox", () => client.agentRegister({ ...a2a, mailbox: box }));
    await step("register_name_payload", () =>
      client.agentRegister({ name, mailbox: box, payload: JSON.stringify(a2a) })
    );
    await step("discover_text", () => client.agentDiscover({ text: "japanese" }));
    await step("discover_text_page", () =>
      client.agentDiscover({ text: "japanese", limit: 1, page: 2 })
    );
    await step("discover_semantic", () => client.agentDiscover({ semantic: "translate a contract" }));
    await step("discover_list", () => client.agentDiscover());
    await step("report_by_name", () => client.agentReport({ name, report_info: "busy" }));
    await step("report_mailbox_only", () =>
      client.agentReport({ mailbox: box, report_info: "busy" })
    );
    await step("report_object_info", () =>
      client.agentReport({ mailbox: box, name, report_info: { load: 0.5 } })
    );
    await step("report", () => client.agentReport({ mailbox: box, name, report_info: "busy" }));
    await step("unregister_mailbox", () => client.agentUnregister(box));
    await step("unregister_name", () => client.agentUnregister(name));
    await step("discover_list_after", () => client.agentDiscover());
  },
};

const run = sections[section];
if (!run) {
  process.stderr.write(`unknown section ${section}; one of ${Object.keys(sections)}\n`);
  process.exit(2);
}
const client = await connected();
try {
  await run(client);
} finally {
  await client.close();
}
process.stdout.write(JSON.stringify(results), () => process.exit(0));
