"""The projection database: a SQLite file by default, or a private PostgreSQL cluster
(initdb + pg_ctl of the machine's PostgreSQL), run as the `postgres` user when we
are root because PostgreSQL refuses to run as root."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
from pathlib import Path

from sqlalchemy import create_engine, text

from flowledger.codes import STACK_POSTGRES_MISSING
from flowledger.errors import StackError
from flowledger.settings import StackSettings
from flowledger.stack import processes
from flowledger.stack.state import ServiceState

PG_USER = "postgres"
DB_NAME = "flowledger"


def sqlite(state_dir: Path) -> ServiceState:
    state_dir.mkdir(parents=True, exist_ok=True)
    file = (state_dir / "flowledger.db").resolve()
    return ServiceState(
        name="database",
        endpoint=f"sqlite:///{file}",
        mode="managed",
        data_dir=str(file),
        details={"kind": "sqlite"},
    )


def attached(url: str) -> ServiceState:
    return ServiceState(
        name="database", endpoint=url, mode="attached", details={"kind": url.split(":", 1)[0]}
    )


def pg_bin_dir(stack: StackSettings) -> Path:
    if stack.postgres_bin_dir:
        return stack.postgres_bin_dir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise StackError(
        "PostgreSQL binaries (initdb, pg_ctl) are not installed", code=STACK_POSTGRES_MISSING
    )


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


def hand_to_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(PG_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def start_postgres(
    stack: StackSettings, state_dir: Path, previous: ServiceState | None = None
) -> ServiceState:
    """Start (initdb once) the private cluster; with `previous` on its recorded port."""
    bin_dir = pg_bin_dir(stack)
    known = previous.details.get("port") if previous is not None else None
    port = processes.claim_port("postgres", int(known) if known else stack.postgres_port)
    home = (state_dir / "postgres").resolve()
    data = home / "data"
    log = home / "postgres.log"
    home.mkdir(parents=True, exist_ok=True)
    hand_to_postgres(home)
    # The postgres user must be able to reach its folder through ours.
    for parent in [home.parent, *home.parent.parents]:
        if parent.stat().st_mode & 0o001 == 0 and os.geteuid() == 0:
            os.chmod(parent, parent.stat().st_mode | 0o111)
    if previous is not None:
        processes.wait_until_unused(data, stack.ready_timeout_s, "PostgreSQL's last processes")
        _drop_stale_lock(data)
    if not (data / "PG_VERSION").exists():
        processes.run_checked(
            _as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            "initdb",
            timeout=120,
        )
    processes.run_checked(
        _as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-c listen_addresses=127.0.0.1 -c port={port} "
                f"-c unix_socket_directories='' -c fsync=off "
                f"-c synchronous_commit=off -c max_connections=200",
                "start",
            ]
        ),
        "starting PostgreSQL",
        timeout=90,
    )
    pid = _postmaster_pid(data)
    admin_url = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/postgres"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("select 1 from pg_database where datname = :n"), {"n": DB_NAME}
            ).scalar()
            if not exists:
                conn.execute(text(f'create database "{DB_NAME}"'))
    finally:
        engine.dispose()
    return ServiceState(
        name="database",
        endpoint=f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{DB_NAME}",
        pid=pid,
        log=str(log),
        data_dir=str(data),
        details={"kind": "postgresql", "bin_dir": str(bin_dir), "port": port},
    )


def _drop_stale_lock(data: Path) -> None:
    """A postmaster killed outright may stay a zombie when nothing reaps it (a container
    whose PID 1 does not); PostgreSQL's own check of its lock file counts a zombie as a
    running server and refuses to start. Nothing works in the directory any more (we
    waited for that), so a lock file naming a dead or zombie pid is stale."""
    pid = _postmaster_pid(data)
    if pid is not None and not processes.alive(pid):
        (data / "postmaster.pid").unlink(missing_ok=True)


def _postmaster_pid(data: Path) -> int | None:
    pid_file = data / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_postgres(service: ServiceState) -> None:
    bin_dir = Path(service.details.get("bin_dir", ""))
    data = service.data_dir
    if data and (bin_dir / "pg_ctl").exists() and processes.alive(service.pid):
        with contextlib.suppress(StackError):
            processes.run_checked(
                _as_postgres(
                    [str(bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "30", "stop"]
                ),
                "stopping PostgreSQL",
                timeout=45,
            )
    processes.stop(service.pid)


def probe(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2} if "postgres" in url else {})
    try:
        with engine.connect() as conn:
            return conn.execute(text("select 1")).scalar() == 1
    except Exception:  # not ready yet; the caller owns the deadline
        return False
    finally:
        engine.dispose()
