"""`run_with_secrets` with `proxy: true` through `jitc mcp` (the official Python SDK):
the command's request gets the credential, the command and the result only the
placeholder; without `proxy` a custody-only secret is refused with what to do."""
import os
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

JITC, TOKEN = os.environ["JITC"], os.environ["TOKEN"]


async def main():
    params = StdioServerParameters(command=JITC, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            cmd = ["sh", "-c", "curl -sS --fail https://api.test/from-mcp && echo $API_TOKEN"]
            r = await s.call_tool("run_with_secrets", {"command": cmd, "secrets": ["api/token"]})
            text = str(r.model_dump())
            assert r.is_error and "proxy: true" in text, text
            r = await s.call_tool(
                "run_with_secrets", {"command": cmd, "secrets": ["api/token"], "proxy": True}
            )
            out = r.structured_content["stdout"]
            assert not r.is_error and '"ok":true' in out and "jitc-placeholder-" in out, r
            assert TOKEN not in str(r.model_dump())
            print("ok mcp proxy", flush=True)


anyio.run(main)
