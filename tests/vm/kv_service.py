"""A tiny stateful TCP key-value server for the guest, and the client that asks it.

It holds a random value only in memory and answers every connection with
``<value> <pid>``: after a kernel update, the same value means the process kept
its memory (CRIU restored it), a new one that it was started fresh.  Used by
tests/vm/test_preserve.py and by the benchmark's "service back with its state"
(bench/service_back.py).
"""

from __future__ import annotations

from tests.vm.guest_vm import GuestVM

SERVER = "/usr/local/bin/kv-server"
SERVER_PY = """#!/usr/bin/python3
import os, socket, sys
port = int(sys.argv[1])
held = open(sys.argv[2], "rb") if len(sys.argv) > 2 else None  # a device file, for CRIU to refuse
value = os.urandom(8).hex()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
print(f"serving {value} on {port}", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(f"{value} {os.getpid()}\\n".encode())
    c.close()
"""
CLIENT = (
    "import socket,sys; c=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 10); "
    "print(c.makefile().readline().strip())"
)


def unit_text(port: int, extra: str = "") -> str:
    return (
        "[Unit]\nDescription=liveupd test: a key-value server\n"
        f"[Service]\nExecStart={SERVER} {port}{extra}\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def install_server(vm: GuestVM) -> None:
    vm.write_file(SERVER, SERVER_PY, mode=0o755)


def ask_port(vm: GuestVM, port: int) -> tuple[str, int]:
    """The value and PID the server on ``port`` answers with (retried while it starts)."""
    r = vm.run(
        f'for i in $(seq 100); do python3 -c "{CLIENT}" {port} && exit 0; sleep 0.2; done; exit 1',
        timeout=60,
    )
    value, pid = r.stdout.split()
    return value, int(pid)
