// Drives `jitc mcp` with the official TypeScript SDK (npm @modelcontextprotocol/sdk),
// as a Node-based coding agent would. Run by tests/tests/mcp.rs as an ordinary user.
// Prints `ok NAME` per check passed; any failure throws (non-zero exit).
// Environment: JITC, WORK, PASSPHRASE, VALUES (comma-separated).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const { JITC, WORK, PASSPHRASE, VALUES } = process.env;
const ok = (name) => console.log(`ok ${name}`);
const assert = (cond, what) => { if (!cond) throw new Error(`failed: ${what}`); };

const received = [];
function connect(name) {
  const transport = new StdioClientTransport({
    command: JITC, args: ["mcp"], cwd: WORK, env: process.env, stderr: "inherit",
  });
  const client = new Client({ name, version: "0.9.1" });
  return client.connect(transport).then(() => {
    // Keep every message the server sent, to look for values in them.
    const handler = transport.onmessage;
    transport.onmessage = (m) => { received.push(JSON.stringify(m)); handler?.(m); };
    return client;
  });
}

const client = await connect("ts-test-client");
assert(client.getServerVersion().name === "jitc", "server name");
assert(client.getInstructions().includes("jitc approve"), "instructions");
const { tools } = await client.listTools();
const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
for (const t of tools) {
  assert(t.outputSchema && t.outputSchema.type === "object", `outputSchema of ${t.name}`);
  assert(t.annotations && typeof t.annotations.readOnlyHint === "boolean", `annotations of ${t.name}`);
}
assert(byName.list_secrets.annotations.readOnlyHint === true, "list_secrets read-only");
ok("initialize_and_tools");

let r = await client.callTool({ name: "list_secrets", arguments: {} });
const names = r.structuredContent.secrets.map((s) => s.name);
assert(names.includes("app/key") && !JSON.stringify(r).includes("app-value"), "list_secrets");
ok("list_secrets");

r = await client.callTool({
  name: "run_with_secrets",
  arguments: { command: ["sh", "-c", "echo $APP_KEY"], secrets: ["app/key"] },
});
assert(!r.isError && r.structuredContent.stdout === "<concealed:app/key>\n", JSON.stringify(r));
ok("run_with_secrets");

r = await client.callTool({
  name: "run_with_secrets",
  arguments: { command: ["true"], secrets: ["prod/db"] },
});
assert(r.isError && r.structuredContent.refused.includes("/nonexistent/psql"), JSON.stringify(r));
ok("refusal");

// Approval: progress names the request; the test approves as the user would.
let approved = false;
r = await client.callTool(
  { name: "run_with_secrets", arguments: { command: ["sh", "-c", "echo $GATED_X"], secrets: ["gated/x"] } },
  undefined,
  {
    timeout: 120_000,
    resetTimeoutOnProgress: true,
    onprogress: (p) => {
      const m = /jitc approve (\d+)/.exec(p.message ?? "");
      if (m && !approved) {
        approved = true;
        execFileSync(JITC, ["approve", m[1], "--passphrase-stdin"], { input: `${PASSPHRASE}\n` });
      }
    },
  },
);
assert(approved && !r.isError && r.structuredContent.stdout === "<concealed:gated/x>\n", JSON.stringify(r));
ok("approval");

// Cancellation (AbortSignal): once the command says it runs, abort; the whole process
// group ends, and the lease with it.
const fifo = `${WORK}/ts-started`;
if (!existsSync(fifo)) execFileSync("mkfifo", [fifo]);
const ac = new AbortController();
const call = client.callTool(
  { name: "run_with_secrets", arguments: { command: ["sh", "-c", `sleep 3093 & echo up > ${fifo}; sleep 3094`], secrets: ["app/key"] } },
  undefined,
  { signal: ac.signal, timeout: 120_000 },
).catch((e) => e);
await readFile(fifo); // (in a worker thread) until the command has started
ac.abort("the user changed their mind");
const err = await call;
assert(err instanceof Error, "the aborted call rejects");
for (let i = 0; ; i++) {
  const leases = JSON.parse(execFileSync(JITC, ["leases", "--json"]).toString());
  if (leases.length === 0) break;
  assert(i < 600, "the lease outlived the aborted call");
  await new Promise((res) => setTimeout(res, 50));
}
// The lease ends as the group is signalled; the processes go as they handle it (on a
// busy machine, a little later): wait for them, never for a fixed time.
for (let i = 0; ; i++) {
  let left = "";
  try { left = execFileSync("pgrep", ["-f", "sleep 309[34]"]).toString(); } catch { left = ""; }
  if (left === "") break;
  assert(i < 600, `left behind: ${left}`);
  await new Promise((res) => setTimeout(res, 50));
}
ok("cancellation");

await client.close();
for (const v of VALUES.split(",").filter(Boolean)) {
  for (const f of [v, Buffer.from(v).toString("hex"), Buffer.from(v).toString("base64").replace(/=+$/, "")]) {
    assert(!received.some((m) => m.includes(f)), `a form of a value reached the client: ${f}`);
  }
}
assert(received.length > 5, "messages were seen");
ok("no_value_in_any_message");
