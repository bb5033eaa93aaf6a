"""The private PostgreSQL cluster the way a managed one is reached: TLS on, and one
login role with a SCRAM password that may connect only over TLS (plaintext and
password-less connections are rejected by pg_hba). Used by the secured-service tests
on a cluster started by database.start_postgres."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import create_engine, text

from flowledger.stack import database
from flowledger.stack.state import ServiceState

HBA = "hostssl all all 127.0.0.1/32 scram-sha-256\n"


def require_tls_and_password(
    service: ServiceState, cert: Path, key: Path, user: str, password: SecretStr
) -> str:
    """Turn TLS on with this certificate, create `user` (owner of the flowledger
    database) with `password`, and from then on accept only TLS with a password.
    Returns the database's URL, without the password."""
    data = Path(service.data_dir or "")
    # PostgreSQL reads its key only if its own user owns it, unreadable to others.
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        target = data / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        database.hand_to_postgres(target)
    admin = create_engine(service.endpoint, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("alter system set ssl = on"))
            conn.execute(text("alter system set password_encryption = 'scram-sha-256'"))
            conn.execute(text("select pg_reload_conf()"))
            # The literal is bound by the server's own quoting, not pasted in.
            quoted = conn.execute(
                text("select quote_literal(:p)"), {"p": password.get_secret_value()}
            ).scalar()
            conn.execute(text(f'create role "{user}" login password {quoted}'))
            conn.execute(text(f'alter database "{database.DB_NAME}" owner to "{user}"'))
            (data / "pg_hba.conf").write_text(HBA, encoding="utf-8")
            conn.execute(text("select pg_reload_conf()"))
    finally:
        admin.dispose()
    port = service.details.get("port")
    return f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database.DB_NAME}"
