"""Where a webhook may point: public addresses only, unless the admin allows private ones.

A project owner chooses the URL and sees the receiver's answer, so without this rule any owner could make
the server send requests into the network it sits in (cloud metadata at 169.254.169.254, an internal
admin page on 10.x, the database's port on localhost) and read what comes back. Names are resolved
again right before each delivery, because what a name resolves to can change after it was accepted.
"""
import ipaddress
import socket
from urllib.parse import urlsplit

HINT = ("An admin can allow webhooks to private addresses (a chat server on your own network) with "
        "PEFTLAB_WEBHOOK_PRIVATE_HOSTS=true.")


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    """The host's addresses: itself when it is a literal address, else what DNS says (None: unresolvable)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    found = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        found.append(address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address)
    return found


def refusal(url: str, *, allow_private: bool, unresolvable_ok: bool) -> str | None:
    """Why the server will not send to `url`, or None when it may.

    unresolvable_ok: a name that does not resolve now is accepted (when the webhook is created: DNS may
    know it later; a delivery refuses it)."""
    if allow_private:
        return None
    host = urlsplit(url).hostname or ""
    addresses = _addresses(host)
    if addresses is None:
        return None if unresolvable_ok else f"{host} could not be resolved."
    private = [str(a) for a in addresses if not a.is_global or a.is_multicast]
    if private:
        return f"{host} is a private or local address ({', '.join(dict.fromkeys(private))}). {HINT}"
    return None
