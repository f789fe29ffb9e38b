"""A client that talks to jitc's gateway by hand (stdlib only, for /usr/bin/python3).

tunnel.py PROXY_URL CA_FILE HOST MODE
  status  CONNECT HOST:443 with the URL's credential; print the proxy's status code.
  ws      CONNECT, TLS (trusting CA_FILE), upgrade /ws to the upstream's echo protocol,
          print "ECHO <what came back>" and "OPEN", then wait: print "CLOSED" when the
          tunnel is closed under it.
"""
import base64
import socket
import ssl
import sys
from urllib.parse import urlsplit

proxy, ca, host, mode = sys.argv[1:5]
u = urlsplit(proxy)
s = socket.create_connection((u.hostname, u.port))
cred = base64.b64encode(f"{u.username}:{u.password}".encode()).decode()
try:
    s.sendall(
        f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic {cred}\r\n\r\n".encode()
    )
except OSError:
    pass  # closed before a word: the reply below says so
head = b""
while b"\r\n\r\n" not in head:
    try:
        chunk = s.recv(1)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        break
    head += chunk
code = head.split(b" ")[1].decode() if head else "closed"
if mode == "status":
    print(code, flush=True)
    sys.exit(0)
assert code == "200", head
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
t = ctx.wrap_socket(s, server_hostname=host)
t.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += t.recv(1)
assert b" 101 " in head.split(b"\r\n")[0], head
t.sendall(b"ping-123")
got = b""
while len(got) < 8:
    got += t.recv(8 - len(got))
print("ECHO", got.decode(), flush=True)
print("OPEN", flush=True)
try:
    while t.recv(4096):
        pass
except (ssl.SSLError, OSError):
    pass
print("CLOSED", flush=True)
