"""The MCP layer's cost (BENCHMARKS.md, "jitc mcp"): run_with_secrets of `true` through
the official Python SDK beside `jitc exec -s X -- true` started the way an agent's shell
tool would (a subprocess), interleaved, medians; and the server's RSS idle and with four
commands running. Needs an agent holding secret X (see bench-mcp.sh)."""
import os, statistics, subprocess, sys, time

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

JITC = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_pid():
    out = subprocess.run(["pgrep", "-n", "-f", f"{JITC} mcp"], capture_output=True, text=True)
    return int(out.stdout.split()[0])


async def main():
    params = StdioServerParameters(command=JITC, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            pid = server_pid()
            args = {"command": ["true"], "secrets": ["X"]}
            for _ in range(20):
                await s.call_tool("run_with_secrets", args)
                subprocess.run([JITC, "exec", "-s", "X", "--", "true"], check=True)
            mcp, shell = [], []
            for _ in range(RUNS):
                t = time.perf_counter()
                res = await s.call_tool("run_with_secrets", args)
                mcp.append(time.perf_counter() - t)
                assert not res.is_error, res
                t = time.perf_counter()
                subprocess.run([JITC, "exec", "-s", "X", "--", "true"], check=True)
                shell.append(time.perf_counter() - t)
            m, e = statistics.median(mcp), statistics.median(shell)
            print(f"run_with_secrets(true) over MCP  median {m*1e3:7.3f} ms")
            print(f"jitc exec -s X -- true (subprocess) median {e*1e3:7.3f} ms")
            print(f"the MCP layer adds {(m-e)*1e3:.3f} ms at the median ({m/e:.2f}x)")
            idle = rss(pid)
            started = []
            for _ in range(4):
                res = await s.call_tool("start_with_secrets", {"command": ["sleep", "300"], "secrets": ["X"]})
                started.append(res.structured_content["process"])
            busy = rss(pid)
            for p in started:
                await s.call_tool("stop_process", {"process": p})
            print(f"jitc mcp RSS: {idle} KiB idle, {busy} KiB with 4 commands running")


anyio.run(main)
