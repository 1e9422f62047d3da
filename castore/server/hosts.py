"""Which ``Host`` header values a server answers: the guard against DNS rebinding.

A web page from ``evil.example`` can make the browser that shows it send requests to
``evil.example``, then have that name resolve to 127.0.0.1 (DNS rebinding): the browser
then talks to a castore server on the same machine as if it were the page's own origin,
reads the answers and sends PUT and DELETE, while the ``Host`` header still says
``evil.example``. A server without access tokens would serve it. So a request whose
``Host`` is not one of the server's names is refused (421) before anything else looks at
it (``castore serve --allowed-hosts``, :class:`castore.server.middleware.AllowedHost`).

An entry of the list is a name (``files.example``), an IP address (``10.0.0.5``,
``::1`` or ``[::1]``), a network (``10.0.0.0/8``: every IP address in it), or ``*`` (any
``Host`` at all). Names and addresses are compared without their port, case and a
trailing dot (``LOCALHOST.:9999`` is ``localhost``).

A request without ``Host`` passes if it is HTTP/1.0 (no browser sends one without it, and
simple health probes do), and gets 400 if it is HTTP/1.1, as RFC 9112 requires; two
``Host`` headers get 400 too.

Standard library only: the master of ``castore serve`` uses it before it forks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ANSWERS_KEPT", "ANY", "ANY_ADDRESS", "LISTEN_ALL", "LOCAL_NAMES", "AllowedHosts", "default_allowed_hosts", "host_name",
]

ANY = "*"
"""The entry that allows any ``Host``."""
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
"""Loopback names a server always answers by default, whatever address it listens on."""
LISTEN_ALL = ("", "0.0.0.0", "::")
"""``--host`` values that listen on every address of the machine."""
ANY_ADDRESS = ("0.0.0.0/0", "::/0")
"""Networks holding every IPv4 and IPv6 address."""

ANSWERS_KEPT = 256
"""``Host`` values whose answer a server remembers (per process)."""

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_name(value: str) -> str | None:
    """The name or address in a ``Host`` value (or a list entry), normalised; None if malformed.

    Lower case, without the port and a trailing dot; an IP address in its canonical form,
    IPv6 without brackets (``[::1]:9999`` → ``::1``). An IPv6 address without brackets is
    taken as none (a ``Host`` must bracket it; a list entry may not: :func:`_entry`).
    """
    text = value.strip().lower()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if colon and (":" in name or not _is_port(colon + port)):
        return None
    name = name.removesuffix(".")
    if not name or any(c.isspace() or c in "/@\\" for c in name):
        return None
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _is_port(text: str) -> bool:
    """``:`` and decimal digits (none: an empty port, which RFC 3986 allows)."""
    return text.startswith(":") and text[1:].isascii() and (text[1:].isdigit() or not text[1:])


def _entry(text: str) -> str | _Network | None:
    """One list entry: a normalised name or address, or a network; None for ``*``. ValueError if malformed."""
    text = text.strip()
    if text == ANY:
        return None
    if ANY in text:
        raise ValueError(f"{text!r}: * stands alone (any Host); list each name instead of a pattern")
    if "/" in text:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    if text.count(":") > 1 and not text.startswith("["):
        return str(ipaddress.IPv6Address(text))  # a bare IPv6 address (ValueError if it is not one)
    name = host_name(text)
    if name is None:
        raise ValueError(f"{text!r} is not a host name, an IP address, a network or *")
    return name


@dataclass(frozen=True)
class AllowedHosts:
    """The ``Host`` values a server answers (:meth:`parse` makes one from a list's entries)."""

    names: frozenset[str]
    networks: tuple[_Network, ...] = ()
    any: bool = False
    _answers: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)
    """``Host`` values looked at before and the answer (a client sends the same one every
    time: normalising it costs more than the rest of a small request's routing)."""

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        """From entries such as ``files.example``, ``10.0.0.5``, ``[::1]``, ``10.0.0.0/8``, ``*``.

        An entry may hold several, comma-separated. ValueError for a malformed one.
        """
        names: set[str] = set()
        networks: list[_Network] = []
        for entry in (part for item in entries for part in item.split(",") if part.strip()):
            parsed = _entry(entry)
            if parsed is None:
                return cls(frozenset(), (), any=True)
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(parsed)
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str) -> bool:
        """Whether a ``Host`` header value names this server."""
        if self.any:
            return True
        known = self._answers.get(host)
        if known is None:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()  # many different values (a scan): start again, never grow
            known = self._answers[host] = self._allows(host)
        return known

    def _allows(self, host: str) -> bool:
        name = host_name(host)
        if name is None:
            return False
        if name in self.names:
            return True
        address = _address(name)
        return address is not None and any(address in network for network in self.networks)

    def refusal(self, headers: Sequence[tuple[bytes, bytes]], http_version: str) -> tuple[int, str] | None:
        """Why a request with these headers is not answered (status, message), or None to answer it."""
        if self.any:
            return None
        hosts = [value for name, value in headers if name == b"host"]
        if not hosts:
            return None if http_version == "1.0" else (400, "an HTTP/1.1 request needs a Host header")
        if len(hosts) > 1:
            return 400, "a request may have one Host header only"
        host = hosts[0].decode("latin-1")
        if self.allows(host):
            return None
        return 421, (f"this server does not answer to the name {host!r} "
                     "(castore serve --allowed-hosts names the ones it does)")


def _address(name: str) -> _Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def default_allowed_hosts(listen_host: str, bound_address: str | None = None) -> list[str]:
    """What a server listening on ``listen_host`` answers to when ``--allowed-hosts`` is not given.

    Always the loopback names (``localhost``, ``127.0.0.1``, ``[::1]``). A server on one
    address (``--host 10.0.0.5`` or a name) adds that value and ``bound_address``, the
    address it is bound to. A server on every address (``0.0.0.0``, ``::``) adds the
    machine's host name and fully qualified name, and every IP address: clients reach it
    by any of the machine's addresses (behind NAT or in a container, ones it cannot know),
    and an IP address cannot be rebound by DNS — a browser sends a page's own address as
    ``Host`` only to that address. Other names (a DNS alias, a name a reverse proxy
    sends) must be listed with ``--allowed-hosts``.
    """
    entries = list(LOCAL_NAMES)
    if listen_host in LISTEN_ALL:
        entries += [socket.gethostname(), socket.getfqdn(), *ANY_ADDRESS]
    else:
        entries.append(listen_host)
        if bound_address:
            entries.append(bound_address)
    return list(dict.fromkeys(entry for entry in entries if entry))
