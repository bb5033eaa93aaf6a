"""Child processes of the stack: started detached so they outlive `stack up`, stopped
gracefully then forcibly, and described by their log tail when they fail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from flowledger.codes import (
    STACK_BINARY_MISSING,
    STACK_COMMAND_FAILED,
    STACK_DATA_IN_USE,
    STACK_PORT_IN_USE,
    STACK_TIMEOUT,
)
from flowledger.errors import StackError

# Ports handed out by this process: the kernel may give the same free port to the next
# caller before the first service has bound it, and no two listeners may share one.
_HANDED: set[int] = set()


def free_port(avoid: Collection[int] = ()) -> int:
    """A free loopback port, none of `avoid` and none handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid and port not in _HANDED:
            _HANDED.add(port)
            return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port whose last owner just died still has connections
        # in TIME_WAIT, which must not stop the service from taking it back.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def claim_port(service: str, wanted: int) -> int:
    if wanted == 0:
        return free_port()
    if not port_is_free(wanted):
        raise StackError(
            f"port {wanted} for {service} is already in use",
            code=STACK_PORT_IN_USE,
            service=service,
            port=wanted,
        )
    return wanted


def spawn(
    argv: Sequence[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise StackError(
                f"cannot run {argv[0]}: not found", code=STACK_BINARY_MISSING, binary=argv[0]
            ) from exc


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        # Reap it if it is our own exited child, so a zombie does not look alive.
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # A killed service that is no child of ours waits for whoever adopted it to reap
    # it; until then signal 0 still reaches it, yet it serves nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _signal(pid: int, sig: int) -> None:
    # Our children lead their own process group (start_new_session); others may not.
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(pid: int | None, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left."""
    if not alive(pid):
        return
    assert pid is not None
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _working_in(directory: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == directory:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until_unused(directory: Path, timeout: float, what: str) -> None:
    """Wait until no process works in `directory`. A PostgreSQL postmaster killed
    outright leaves its backends (which run in the data directory) holding the shared
    memory for a moment; a new postmaster started before they go refuses to run."""
    deadline = time.monotonic() + timeout
    while busy := [p for p in _working_in(directory.resolve()) if alive(p)]:
        if time.monotonic() > deadline:
            raise StackError(
                f"{what} still run in {directory} (pids {busy[:5]})",
                code=STACK_DATA_IN_USE,
                retryable=True,
                pids=busy[:5],
            )
        time.sleep(0.05)


def tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 16384))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def run_checked(
    argv: Sequence[str], what: str, timeout: float = 300.0, cwd: Path | None = None
) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
        )
    except FileNotFoundError as exc:
        raise StackError(
            f"{what}: {argv[0]} not found", code=STACK_BINARY_MISSING, binary=argv[0]
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s", code=STACK_TIMEOUT) from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise StackError(
            f"{what} failed (exit {done.returncode}): " + " | ".join(detail),
            code=STACK_COMMAND_FAILED,
        )
    return done.stdout
