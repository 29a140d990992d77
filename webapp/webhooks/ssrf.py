"""The SSRF guard: which addresses a webhook may reach, and resolving a host to one of them.

An address is refused when it is not globally routable: private, loopback, link-local (the
cloud metadata services live there or in similar ranges, listed too), multicast, reserved,
unspecified or shared. IPv4-mapped and 6to4 IPv6 addresses are judged by the IPv4 address they
carry. Host names are resolved at delivery time and every answer must pass (one bad answer
refuses the lot: no picking the good one on the next resolution); the caller connects to the
address returned here, so nothing is resolved twice. Legacy IPv4 spellings (`2130706433`,
`0x7f000001`, `0177.1`) are what the resolver turns them into, and `literal_address` decodes
them the same way for the checks made when a URL is saved.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services (AWS, GCP, Azure: 169.254.169.254; AWS IPv6; ECS task credentials; Alibaba;
# Oracle): link-local or shared already, named so that the refusal says what they are.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200", "192.0.0.192")
)
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


class Refused(Exception):
    """The target is not allowed; the message says why (never fetched)."""


def _embedded_v4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        # IPv4-compatible (::a.b.c.d, deprecated but still parsed by some stacks).
        if int(ip) >> 32 == 0 and int(ip) > 1:
            return ipaddress.IPv4Address(int(ip))
    return ip


def refusal(address: IPAddress) -> str | None:
    """Why this address may not be reached, or None when it may."""
    ip = _embedded_v4(address)
    if ip in METADATA or address in METADATA:
        return "cloud metadata address"
    for reason, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ):
        if flag:
            return f"{reason} address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, in any form a resolver accepts, or None for a name."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        # inet_aton takes the legacy forms: one decimal or hex number, octal parts, a.b / a.b.c.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str, *, allow_private: bool) -> None:
    """What can be judged without resolving, when an endpoint is saved. Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise ValueError("must be an https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username or parts.password:
        raise ValueError("must not hold credentials")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if allow_private:
        return
    host = parts.hostname.rstrip(".").lower()
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        raise ValueError("must not point at this machine")
    literal = literal_address(host)
    reason = refusal(literal) if literal is not None else None
    if reason:
        raise ValueError(f"must not point at a {reason}")


def resolve(host: str, port: int, *, allow_private: bool) -> IPAddress:
    """The address to connect to (pinned by the caller). Raises Refused."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"cannot resolve host: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in answers]
    if not addresses:
        raise Refused("host resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise Refused(f"host resolves to a {reason} ({address})")
    return addresses[0]
