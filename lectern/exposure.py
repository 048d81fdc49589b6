"""Who can reach a server lectern starts, and a model server lectern sends passages to: the one
loopback rule (`is_loopback`) and the one refusal for a server beyond it without a secret
(`check_exposure`), used by `lectern ui`, `lectern serve` and the remote-model warning alike."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lectern.errors import Exposed


def bare_host(host: str) -> str:
    """`host` as a socket takes it: spaces and an IPv6 literal's brackets (`[::1]`) dropped."""
    host = host.strip()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1 (also as `[::1]`), and the
    names RFC 6761 reserves for it (`localhost`, `localhost.`, `*.localhost`). Any other name may
    resolve anywhere, so it is not."""
    host = bare_host(host).lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Service:
    """What a server exposes and how its operator secures it, for the one refusal and warning."""

    what: str  # "the web UI (which can read any file the server can)"
    secret: str  # "a password"
    how: str  # "set a password (LECTERN_UI_PASSWORD or --password-file)"
    opt_out: str  # "--no-password"


def check_exposure(host: str, service: Service, has_secret: bool, opted_out: bool) -> str | None:
    """None when `host` is safe to bind as asked; the warning to print when the operator opted out of
    the secret; Exposed when an address beyond loopback has neither."""
    if has_secret or is_loopback(host):
        return None
    if not opted_out:
        raise Exposed(host, service.what, service.how, service.opt_out)
    return (
        f"serving {service.what} on {host} without {service.secret} ({service.opt_out}): anyone who "
        "can reach this address can use it"
    )


WEB_UI = Service(
    what="the web UI (which can read and ingest any file the server can)",
    secret="a password",
    how="set a password (LECTERN_UI_PASSWORD or --password-file)",
    opt_out="--no-password",
)
API_SERVER = Service(
    what="the model and the collections (lectern serve)",
    secret="an API key",
    how="give --api-key KEY (or LECTERN_SERVE_API_KEY)",
    opt_out="--insecure-no-api-key",
)
