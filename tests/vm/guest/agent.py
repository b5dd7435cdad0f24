#!/usr/bin/python3
"""liveupd test agent: runs inside the guest VM, talks to the harness over virtio-serial.

Test infrastructure only, not part of liveupd. Standard library only: the guest has
Debian's python3 and nothing else is guaranteed.

Protocol: one JSON object per line in each direction.

Request:  {"id": str, "op": "ping" | "run" | "spawn" | "read_file" | "write_file", ...}
Reply:    {"id": str, "boot_id": str, "ok": bool, "error": str (when not ok), ...}

  run        argv (list) or shell (str); user, env, stdin_b64, cwd, timeout (seconds)
             -> rc (int, -N for a signal, null on timeout), timed_out, stdout_b64,
                stderr_b64, duration
  spawn      argv or shell; user, env, cwd -> unit (the transient systemd unit) or pid.
             The command runs in its own transient unit (systemd-run), outside the
             agent's cgroup, so stopping the agent during a shutdown does not kill it.
  read_file  path -> data_b64
  write_file path, data_b64, mode (int), user (owner, optional) -> {}
  ping       -> release, uptime

Every reply carries the request id and this boot's boot_id, so the harness can match
replies across a kexec (the host end of the port stays connected; a request sent while
the guest is down is read by the next boot's agent).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

PORT_NAME = "org.liveupd.test.agent"
BOOT_ID = open("/proc/sys/kernel/random/boot_id").read().strip()  # noqa: SIM115
RELEASE = os.uname().release
MAX_OUTPUT = 64 * 1024 * 1024

_write_lock = threading.Lock()


def log(msg: str) -> None:
    print(f"liveupd-test-agent: {msg}", file=sys.stderr, flush=True)


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def send(fd: int, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with _write_lock:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except InterruptedError:
                continue
            view = view[n:]


def user_context(user: str | None, env: dict[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for subprocess: the right uid/gids/env/cwd for `user`."""
    base_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    }
    kwargs: dict[str, Any] = {}
    if user is None or user == "root":
        base_env.update({"HOME": "/root", "USER": "root", "LOGNAME": "root"})
    else:
        pw = pwd.getpwnam(user)
        base_env.update({"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name})
        runtime_dir = f"/run/user/{pw.pw_uid}"
        if os.path.isdir(runtime_dir):
            base_env["XDG_RUNTIME_DIR"] = runtime_dir
        kwargs.update(
            user=pw.pw_uid,
            group=pw.pw_gid,
            extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
            cwd=pw.pw_dir if os.path.isdir(pw.pw_dir) else "/",
        )
    if env:
        base_env.update(env)
    kwargs["env"] = base_env
    return kwargs


def command_argv(req: dict[str, Any]) -> list[str]:
    if req.get("argv") is not None:
        argv = req["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a non-empty list of strings")
        return argv
    if isinstance(req.get("shell"), str):
        return ["/bin/sh", "-c", req["shell"]]
    raise ValueError("request needs argv (list) or shell (str)")


def op_run(req: dict[str, Any]) -> dict[str, Any]:
    argv = command_argv(req)
    kwargs = user_context(req.get("user"), req.get("env"))
    if req.get("cwd"):
        kwargs["cwd"] = req["cwd"]
    stdin = base64.b64decode(req["stdin_b64"]) if req.get("stdin_b64") else b""
    timeout = req.get("timeout")
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kwargs,
    )
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return {
        "rc": None if timed_out else proc.returncode,
        "timed_out": timed_out,
        "stdout_b64": base64.b64encode(out[:MAX_OUTPUT]).decode(),
        "stderr_b64": base64.b64encode(err[:MAX_OUTPUT]).decode(),
        "duration": time.monotonic() - start,
    }


def op_spawn(req: dict[str, Any]) -> dict[str, Any]:
    argv = command_argv(req)
    user = req.get("user")
    env = req.get("env") or {}
    if shutil.which("systemd-run") and os.path.isdir("/run/systemd/system"):
        unit = f"liveupd-test-spawn-{uuid.uuid4().hex[:12]}"
        cmd = ["systemd-run", "--quiet", "--no-block", "--collect", f"--unit={unit}"]
        if user and user != "root":
            cmd.append(f"--uid={user}")
        if req.get("cwd"):
            cmd.append(f"--working-directory={req['cwd']}")
        for key, value in env.items():
            cmd.append(f"--setenv={key}={value}")
        cmd += ["--", *argv]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return {"unit": unit + ".service"}
    kwargs = user_context(user, env)
    if req.get("cwd"):
        kwargs["cwd"] = req["cwd"]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )
    # Reap it in the background so it does not linger as a zombie.
    threading.Thread(target=proc.wait, daemon=True).start()
    return {"pid": proc.pid}


def op_read_file(req: dict[str, Any]) -> dict[str, Any]:
    with open(req["path"], "rb") as f:
        return {"data_b64": base64.b64encode(f.read()).decode()}


def op_write_file(req: dict[str, Any]) -> dict[str, Any]:
    path = req["path"]
    data = base64.b64decode(req.get("data_b64", ""))
    mode = int(req.get("mode", 0o644))
    tmp = f"{path}.liveupd-agent-tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        if req.get("user"):
            pw = pwd.getpwnam(req["user"])
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return {}


def op_ping(req: dict[str, Any]) -> dict[str, Any]:
    return {"release": RELEASE, "uptime": uptime()}


OPS = {
    "ping": op_ping,
    "run": op_run,
    "spawn": op_spawn,
    "read_file": op_read_file,
    "write_file": op_write_file,
}


def handle(fd: int, line: bytes) -> None:
    try:
        req = json.loads(line)
        if not isinstance(req, dict):
            raise ValueError("request is not an object")
    except ValueError as exc:
        log(f"ignoring malformed line ({exc}): {line[:200]!r}")
        return
    reply: dict[str, Any] = {"id": req.get("id"), "boot_id": BOOT_ID}
    try:
        op = OPS[req.get("op", "")]
    except KeyError:
        reply.update(ok=False, error=f"unknown op {req.get('op')!r}")
    else:
        try:
            reply.update(op(req))
            reply["ok"] = True
        except Exception as exc:  # every failure goes back to the caller
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    try:
        send(fd, reply)
    except OSError as exc:
        log(f"cannot send reply to {req.get('id')!r}: {exc}")


def find_port() -> str | None:
    """The port's device node, found through sysfs.

    devtmpfs creates /dev/vportNpM as soon as virtio_console (loaded by the initrd)
    sees the port, long before udev makes the /dev/virtio-ports/<name> symlink: going
    by sysfs lets the agent start right after the root filesystem is writable.
    """
    base = "/sys/class/virtio-ports"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        entries = []
    for entry in entries:
        try:
            with open(f"{base}/{entry}/name") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name == PORT_NAME and os.path.exists(f"/dev/{entry}"):
            return f"/dev/{entry}"
    link = f"/dev/virtio-ports/{PORT_NAME}"
    return link if os.path.exists(link) else None


def main() -> int:
    port = find_port()
    if port is None:
        # systemd restarts us; udev also starts us when the port appears.
        log(f"no virtio-serial port named {PORT_NAME} (yet)")
        return 1
    fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    log(f"listening on {port} (boot_id {BOOT_ID}, kernel {RELEASE})")
    # A previous boot may have been cut off in the middle of a reply: end that line so
    # the harness can parse the next one.
    try:
        send(fd, {"id": None, "boot_id": BOOT_ID, "ok": True, "event": "agent-started"})
    except OSError as exc:
        log(f"cannot announce start: {exc}")
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            # The host end is not connected: virtio-console returns EOF at once.
            # Wait for it to come back without spinning.
            time.sleep(0.2)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                threading.Thread(target=handle, args=(fd, line), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
