"""Host end of the guest agent's virtio-serial channel (tests/vm/guest/agent.py).

Line-delimited JSON. The connection persists across guest reboots and kexecs, so a
reply may come from a later boot than the one a request was sent to: replies are
matched by id and carry the guest's boot_id. Lines that do not parse (a boot cut off
in the middle of a reply) are ignored.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from typing import Any


class AgentError(RuntimeError):
    """The agent answered with ok=false."""


class AgentTimeoutError(TimeoutError):
    """No reply before the deadline (guest down, rebooting, or the command hung)."""


class AgentClosedError(ConnectionError):
    """The channel closed: QEMU exited."""


class AgentClient:
    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._cond = threading.Condition()
        self._replies: dict[str, dict[str, Any]] = {}
        self._started_boots: list[str] = []  # boot_ids from "agent-started" events
        self._closed = False
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._reader, name="vm-agent", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        buf = b""
        try:
            while True:
                try:
                    chunk = self._conn.recv(1 << 20)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._dispatch(line)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError:
            return  # a reply torn by a reboot, or noise
        if not isinstance(msg, dict):
            return
        with self._cond:
            if msg.get("id") is None:
                if msg.get("event") == "agent-started" and isinstance(msg.get("boot_id"), str):
                    self._started_boots.append(msg["boot_id"])
            else:
                self._replies[str(msg["id"])] = msg
            self._cond.notify_all()

    def send(self, op: str, fields: dict[str, Any] | None = None) -> str:
        """Send a request; returns its id (wait for the reply with `wait_reply`)."""
        req_id = uuid.uuid4().hex
        data = (json.dumps({**(fields or {}), "id": req_id, "op": op}) + "\n").encode()
        with self._send_lock:
            try:
                self._conn.sendall(data)
            except OSError as exc:
                raise AgentClosedError(f"agent channel closed: {exc}") from exc
        return req_id

    def wait_reply(self, req_id: str, deadline: float) -> dict[str, Any]:
        with self._cond:
            while req_id not in self._replies:
                if self._closed:
                    raise AgentClosedError("agent channel closed (QEMU exited)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentTimeoutError(f"no reply from the guest agent to request {req_id}")
                self._cond.wait(remaining)
            return self._replies.pop(req_id)

    def request(self, op: str, fields: dict[str, Any], wait: float) -> dict[str, Any]:
        """Send and wait up to `wait` seconds; raise AgentError if the agent failed."""
        reply = self.wait_reply(self.send(op, fields), time.monotonic() + wait)
        if not reply.get("ok"):
            raise AgentError(f"guest agent: {op} failed: {reply.get('error')}")
        return reply

    def forget(self, req_id: str) -> None:
        """Drop a reply that may still arrive for an abandoned request."""
        with self._cond:
            self._replies.pop(req_id, None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self._thread.join(timeout=10)
