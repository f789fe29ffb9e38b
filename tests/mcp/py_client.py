"""Drives `jitc mcp` with the official Python MCP SDK (PyPI `mcp`), as a coding agent
would, and checks what comes back. Run by tests/tests/mcp.rs as an ordinary user, with
the agent already holding the secrets named below. Prints one `ok NAME` line per check
passed; any failure raises (a non-zero exit with the traceback).

Environment: JITC (the jitc binary), WORK (a writable directory), PASSPHRASE (to
approve as the human would), VALUES (the secret values, comma-separated, that no
message may carry in any form), TRANSCRIPT (where the server's messages are teed).
"""

import base64
import json
import os
import subprocess
import sys
import urllib.parse

import anyio
import jsonschema
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import Implementation

JITC = os.environ["JITC"]
WORK = os.environ["WORK"]
PASSPHRASE = os.environ["PASSPHRASE"]
VALUES = [v for v in os.environ["VALUES"].split(",") if v]
TRANSCRIPT = os.environ["TRANSCRIPT"]


def ok(name):
    print("ok", name, flush=True)


def server(tee=True):
    if tee:
        return StdioServerParameters(
            command="/bin/sh",
            args=["-c", f'"{JITC}" mcp | tee -a "{TRANSCRIPT}"'],
            env=dict(os.environ),
            cwd=WORK,
        )
    return StdioServerParameters(command=JITC, args=["mcp"], env=dict(os.environ), cwd=WORK)


def dump(result):
    return result.model_dump(by_alias=True, exclude_none=True)


async def session(params, body, name="py-test-client", version="1.2.3"):
    async with stdio_client(params) as (read, write):
        async with ClientSession(
            read, write, client_info=Implementation(name=name, version=version)
        ) as s:
            init = await s.initialize()
            return await body(s, init)


async def basics(s, init):
    assert init.protocol_version == "2025-11-25", init.protocol_version
    assert init.server_info.name == "jitc"
    assert "never" in (init.instructions or "") and "jitc approve" in init.instructions
    assert init.capabilities.tools is not None
    ok("initialize")
    tools = {t.name: t for t in (await s.list_tools()).tools}
    expected = {
        "list_secrets", "run_with_secrets", "start_with_secrets", "read_output",
        "stop_process", "list_leases", "revoke_lease", "scan_for_secrets", "request_secret",
        "import_env_file",
    }
    assert expected <= set(tools), sorted(tools)
    for t in tools.values():
        assert t.input_schema["type"] == "object", t.name
        assert t.output_schema and t.output_schema["type"] == "object", t.name
        assert t.annotations is not None and t.annotations.read_only_hint is not None, t.name
        assert t.title, t.name
    assert tools["list_secrets"].annotations.read_only_hint is True
    assert tools["run_with_secrets"].annotations.destructive_hint is True
    ok("tools")

    async def call(name, args):
        r = await s.call_tool(name, args)
        if r.structured_content is not None:
            jsonschema.validate(r.structured_content, tools[name].output_schema)
        return r

    r = await call("list_secrets", {})
    assert not r.is_error, dump(r)
    secrets = {x["name"]: x for x in r.structured_content["secrets"]}
    assert secrets["app/key"]["env_var"] == "APP_KEY"
    assert secrets["app/key"]["decision"] == "granted"
    assert secrets["prod/db"]["decision"] == "refused", secrets["prod/db"]
    assert secrets["gated/x"]["decision"] == "needs approval", secrets["gated/x"]
    ok("list_secrets")

    r = await call("run_with_secrets", {
        "command": ["sh", "-c", 'read line; echo "in=$line key=$APP_KEY"; echo oops >&2; exit 3'],
        "secrets": ["app/key"],
        "stdin": "hello\n",
        "task": "check the key",
    })
    assert r.is_error, dump(r)
    sc = r.structured_content
    assert sc["exit_code"] == 3, sc
    assert sc["stdout"] == "in=hello key=<concealed:app/key>\n", sc
    assert sc["stderr"].startswith("oops"), sc
    assert isinstance(sc["lease"], int), sc
    ok("run_with_secrets")

    r = await call("run_with_secrets", {
        "command": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo; echo $APP_KEY"],
        "secrets": ["app/key"],
    })
    sc = r.structured_content
    assert not r.is_error and sc["exit_code"] == 0, dump(r)
    assert sc["stdout_dropped"] > 200000, sc["stdout_dropped"]
    assert sc["stdout"].endswith("<concealed:app/key>\n"), sc["stdout"][-80:]
    assert len(sc["stdout"]) < 70000
    ok("truncation")

    r = await call("run_with_secrets", {"command": ["true"], "secrets": ["prod/db"]})
    assert r.is_error, dump(r)
    assert r.structured_content["refused"] and "/nonexistent/psql" in r.structured_content["refused"]
    assert r.structured_content["exit_code"] is None
    ok("refusal")

    r = await call("run_with_secrets", {"command": ["true"], "secrets": ["no/such"]})
    assert r.is_error and "no secret named" in r.structured_content["refused"], dump(r)
    ok("unknown")

    # Waiting for approval: progress says what to ask the user; the test approves.
    approvals = []

    async def prog(progress, total, message):
        approvals.append(message)
        if message and "jitc approve" in message:
            n = message.split("jitc approve ")[1].split("`")[0]
            subprocess.run([JITC, "approve", n, "--passphrase-stdin"],
                           input=PASSPHRASE + "\n", text=True, check=True,
                           capture_output=True)

    r = await s.call_tool("run_with_secrets", {
        "command": ["sh", "-c", "echo $GATED_X"], "secrets": ["gated/x"], "task": "gated",
    }, progress_callback=prog)
    assert not r.is_error, dump(r)
    assert r.structured_content["stdout"] == "<concealed:gated/x>\n"
    assert any("jitc approve" in (m or "") for m in approvals), approvals
    ok("approval")

    r = await call("scan_for_secrets", {"path": os.path.join(WORK, "tree")})
    assert not r.is_error, dump(r)
    kinds = {(os.path.basename(f["path"]), f["line"]) for f in r.structured_content["findings"]}
    assert (".env", 1) in kinds, kinds
    ok("scan")

    r = await call("request_secret", {"name": "stripe/test", "description": "payments in tests"})
    assert not r.is_error and r.structured_content["command"] == "jitc add stripe/test", dump(r)
    r = await call("list_secrets", {})
    assert [w["name"] for w in r.structured_content["requested"]] == ["stripe/test"], dump(r)
    # The user adds it (the value typed at their terminal, never through MCP).
    subprocess.run([JITC, "add", "stripe/test"], input="sk_test_added_by_user_123\n",
                   text=True, check=True, capture_output=True)
    r = await call("list_secrets", {})
    assert r.structured_content["requested"] == [], dump(r)
    assert "stripe/test" in {x["name"] for x in r.structured_content["secrets"]}
    ok("request_secret")

    # Import: the user approves (out of band), the reference file works as env_file.
    approvals.clear()
    dotenv = os.path.join(WORK, "app", ".env")
    r = await s.call_tool("import_env_file", {"path": dotenv, "prefix": "app/"},
                          progress_callback=prog)
    assert not r.is_error, dump(r)
    jsonschema.validate(r.structured_content, tools["import_env_file"].output_schema)
    assert sorted(r.structured_content["stored"]) == ["app/DB_PASSWORD", "app/STRIPE_KEY"], dump(r)
    assert r.structured_content["kept"] == ["PORT"], dump(r)
    ref = r.structured_content["reference_file"]
    text = open(ref).read()
    assert "STRIPE_KEY=jitc://app/STRIPE_KEY" in text and "PORT=8080" in text, text
    assert any("jitc approve" in (m or "") for m in approvals), approvals
    r = await call("run_with_secrets", {
        "command": ["sh", "-c", "echo $STRIPE_KEY $PORT"], "env_file": ref,
    })
    assert r.structured_content["stdout"] == "<concealed:app/STRIPE_KEY> 8080\n", dump(r)
    # Never replaces: the same import again is refused before anyone is asked.
    r = await call("import_env_file", {"path": dotenv, "prefix": "app/",
                                        "reference_file": os.path.join(WORK, "ref2")})
    assert r.is_error and "never replaces" in r.content[0].text, dump(r)
    ok("import_env_file")

    r = await call("list_leases", {})
    assert not r.is_error
    r = await call("revoke_lease", {"lease": 999999})
    assert r.is_error
    ok("leases")
    return True


async def approval_timeout(s, init):
    # Nobody approves: the agent's approval_timeout (1 s here) denies it; the progress
    # notifications said what to ask the user meanwhile.
    seen = []

    async def watch(progress, total, message):
        seen.append(message)

    r = await s.call_tool("run_with_secrets", {
        "command": ["true"], "secrets": ["gated/x"],
    }, progress_callback=watch)
    assert r.is_error and "timed out" in r.structured_content["refused"], dump(r)
    assert any("jitc approve" in (m or "") for m in seen), seen
    ok("approval_timeout")
    return True


async def cancellation(s, init):
    # The command says it started (a FIFO), then the call is cancelled: jitc exec ends
    # its whole process group and the lease.
    fifo = os.path.join(WORK, "started")
    os.mkfifo(fifo)
    async with anyio.create_task_group() as tg:
        async def run():
            await s.call_tool("run_with_secrets", {
                "command": ["sh", "-c", f"sleep 3091 & echo up > {fifo}; sleep 3092"],
                "secrets": ["app/key"],
            })
        tg.start_soon(run)
        # (Opened in a thread: opening a FIFO blocks until the writer comes.)
        await anyio.to_thread.run_sync(lambda: open(fifo).read())
        tg.cancel_scope.cancel()
    # Wait (on the agent, not the clock) until no lease is left.
    for _ in range(600):
        out = subprocess.run([JITC, "leases", "--json"], capture_output=True, text=True)
        if json.loads(out.stdout) == []:
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError("the lease outlived the cancelled call")
    # The processes go as they handle the signal (on a busy machine, a little after
    # the lease): wait for them, never for a fixed time.
    await until_gone("sleep 309[12]", "the cancelled call's command outlived it")
    ok("cancellation")
    return True


async def server_process(s, init):
    port_file = os.path.join(WORK, "port")
    script = (
        "import http.server, os, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = ('token=' + os.environ['APP_KEY']).encode()\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
        "    def log_message(self, *a):\n"
        "        print('served', *a, flush=True)\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        f"open({port_file!r}, 'w').write(str(s.server_port))\n"
        "print('listening', os.environ['APP_KEY'], flush=True)\n"
        "s.serve_forever()\n"
    )
    r = await s.call_tool("start_with_secrets", {
        "command": ["/usr/bin/python3", "-c", script], "secrets": ["app/key"],
    })
    assert not r.is_error, dump(r)
    pid = r.structured_content["process"]
    text, offset = "", 0
    # The whole line: the masker may still hold back the end of a split read that
    # could begin the value.
    while "listening" not in text or "\n" not in text[text.find("listening"):]:
        r = await s.call_tool("read_output", {"process": pid, "offset": offset, "wait_ms": 5000})
        text += r.structured_content["text"]
        offset = r.structured_content["next_offset"]
    assert "listening <concealed:app/key>" in text, text
    port = int(open(port_file).read())
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read().decode()
    assert body.startswith("token="), body
    r = await s.call_tool("stop_process", {"process": pid})
    assert not r.is_error, dump(r)
    r = await s.call_tool("read_output", {"process": pid})
    assert r.is_error
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        raise AssertionError("the server still answers")
    except OSError:
        pass
    ok("start_read_stop")
    return True


async def two_clients():
    async def one(name):
        async def body(s, init):
            r = await s.call_tool("run_with_secrets", {
                "command": ["sh", "-c", "echo $APP_KEY"], "secrets": ["app/key"],
            })
            assert r.structured_content["stdout"] == "<concealed:app/key>\n", dump(r)
            return True
        await session(server(), body, name=name)
    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "client-a")
        tg.start_soon(one, "client-b")
    ok("two_clients")


def forms(v):
    b = v.encode()
    out = {v, b.hex(), b.hex().upper(), base64.b64encode(b).decode().rstrip("="),
           base64.urlsafe_b64encode(b).decode().rstrip("="), urllib.parse.quote(v),
           json.dumps(v)[1:-1]}
    return {f for f in out if len(f) >= 6}


async def sandboxed(s, init):
    r = await s.call_tool("run_with_secrets", {
        "command": ["sh", "-c", "echo $APP_KEY"], "secrets": ["app/key"],
    })
    assert r.structured_content["stdout"] == "<concealed:app/key>\n", dump(r)
    ok("sandboxed")
    return True


async def limits():
    # One run at a time (--max-runs 1): a second is refused while a started command
    # holds the slot; timeout_s stops a command (its process group); and what was
    # started ends with the session.
    params = StdioServerParameters(command=JITC, args=["mcp", "--max-runs", "1"],
                                   env=dict(os.environ), cwd=WORK)

    async def body(s, init):
        r = await s.call_tool("start_with_secrets", {
            "command": ["sh", "-c", "sleep 3095 & sleep 3096"], "secrets": ["app/key"],
        })
        assert not r.is_error, dump(r)
        r = await s.call_tool("run_with_secrets", {"command": ["true"]})
        assert r.is_error and "running already" in r.content[0].text, dump(r)
        return True

    await session(params, body)
    for _ in range(600):
        left = subprocess.run(["pgrep", "-f", "sleep 309[56]"], capture_output=True, text=True)
        if left.stdout == "":
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError("a started command outlived the session")
    ok("session_end_stops_started")

    async def timeout(s, init):
        r = await s.call_tool("run_with_secrets", {
            "command": ["sh", "-c", "sleep 3097 & sleep 3098"], "secrets": ["app/key"],
            "timeout_s": 1,
        })
        assert r.is_error and r.structured_content["timed_out"], dump(r)
        await until_gone("sleep 309[78]", "a timed-out command outlived its timeout")
        return True

    await session(params, timeout)
    ok("max_runs_and_timeout")


async def cleared():
    # The host passes the server almost nothing (as Codex does): HOME and PATH.
    params = StdioServerParameters(
        command=JITC, args=["mcp"], cwd=WORK,
        env={"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin"},
    )

    async def body(s, init):
        r = await s.call_tool("list_secrets", {})
        assert not r.is_error, dump(r)
        assert [x["name"] for x in r.structured_content["secrets"]] == ["app/key"], dump(r)
        return True

    await session(params, body)
    ok("cleared_environment")


def gone(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return out.stdout == ""


async def until_gone(pattern, what):
    for _ in range(600):
        if gone(pattern):
            return
        await anyio.sleep(0.05)
    raise AssertionError(what)


async def review(s, init):
    # Review findings. A timed-out command's group ends even where it ignores SIGTERM
    # (the lease is revoked through the agent first).
    r = await s.call_tool("run_with_secrets", {
        "command": ["sh", "-c", "(trap '' TERM; exec sleep 3101) & sleep 3102"],
        "secrets": ["app/key"], "timeout_s": 1,
    })
    assert r.structured_content["timed_out"], dump(r)
    assert gone("sleep 310[12]")
    ok("timeout_ends_what_ignores_sigterm")
    # Without secrets: the call returns when the command does, and what it left behind
    # (holding the output pipes) is ended.
    r = await s.call_tool("run_with_secrets", {
        "command": ["sh", "-c", "(trap '' TERM; exec sleep 3103) & echo started"],
        "timeout_s": 60,
    })
    assert not r.is_error and r.structured_content["stdout"] == "started\n", dump(r)
    assert gone("sleep 3103")
    ok("leftovers_end_with_the_call")
    # Not a regular file: never read to its end.
    r = await s.call_tool("import_env_file", {"path": "/dev/zero"})
    assert r.is_error and "not a regular file" in r.content[0].text, dump(r)
    r = await s.call_tool("run_with_secrets", {"command": ["true"], "env_file": "/dev/zero"})
    assert r.is_error, dump(r)
    ok("devices_are_not_env_files")
    # The reference file is made, never written through a symlink put in its place.
    plain = os.path.join(WORK, "plain.env")
    open(plain, "w").write("PORT=8080\n")
    link = os.path.join(WORK, "ref-link")
    target = os.path.join(WORK, "victim")
    os.symlink(target, link)
    r = await s.call_tool("import_env_file", {"path": plain, "reference_file": link})
    assert r.is_error and not os.path.exists(target), dump(r)
    ok("reference_file_not_through_a_symlink")
    return True


async def main():
    if sys.argv[1:] == ["review"]:
        await session(server(tee=False), review)
        return
    if sys.argv[1:] == ["cleared"]:
        await cleared()
        return
    if sys.argv[1:] == ["limits"]:
        await limits()
        return
    if sys.argv[1:] == ["timeout"]:
        await session(server(), approval_timeout)
        return
    if sys.argv[1:] == ["sandboxed"]:
        await session(server(tee=False), sandboxed, name="sandboxed-agent")
        return
    await session(server(), basics)
    await session(server(), cancellation)
    await session(server(), server_process)
    await two_clients()
    # The server ends cleanly when its stdin closes: before a session, and after one.
    p = subprocess.Popen([JITC, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=WORK)
    out, err = p.communicate(b"", timeout=60)
    assert p.returncode == 0 and out == b"", (p.returncode, out, err)
    hello = (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
        '"capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}\n'
        '{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
    )
    p = subprocess.Popen([JITC, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=WORK)
    out, err = p.communicate(hello.encode(), timeout=60)
    assert p.returncode == 0, (p.returncode, err)
    # Stdout carries MCP messages only.
    for line in out.decode().splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0", line
    ok("exit_on_eof")
    transcript = open(TRANSCRIPT).read()
    assert '"jsonrpc"' in transcript
    for v in VALUES:
        for f in forms(v):
            assert f not in transcript, f"a form of a value reached the client: {f!r}"
    ok("no_value_in_any_message")


anyio.run(main)
