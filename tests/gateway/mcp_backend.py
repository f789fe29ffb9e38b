"""jitc mcp with a team backend (official Python SDK): list_secrets names the backend,
and run_with_secrets takes bao:// references in `env`; the value never reaches the
client."""
import os

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

JITC, VALUE = os.environ["JITC"], os.environ["VALUE"]


async def main():
    params = StdioServerParameters(command=JITC, args=["mcp"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            r = await s.call_tool("list_secrets", {})
            assert r.structured_content["backends"] == ["team"], r
            r = await s.call_tool("run_with_secrets", {
                "command": ["sh", "-c", 'test "$PW" = "$WANT" && echo "$PW"'],
                "env": {"PW": "bao://team/secret/app#password"},
            })
            assert not r.is_error, r
            assert r.structured_content["stdout"] == "<concealed:bao://team/secret/app#password>\n", r
            assert VALUE not in str(r.model_dump())
            print("ok mcp backend", flush=True)


anyio.run(main)
