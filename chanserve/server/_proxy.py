"""X-Forwarded-For / -Proto / -Port, believed only when they come from a trusted proxy."""

from ipaddress import ip_address, ip_network


class ProxyHeaders:
    """
    Work out the real client of a request that came through trusted proxies.

    @param trusted: addresses or networks (``"10.0.0.0/8"``) of the proxies
        whose ``X-Forwarded-*`` headers are believed.
    """

    _CACHE_LIMIT = 4096

    def __init__(self, trusted):
        self._networks = [ip_network(a, strict=False) for a in trusted]
        self._cache = {}

    def trusted(self, host):
        """True if ``host`` (a str) is one of the trusted proxies."""
        known = self._cache.get(host)
        if known is None:
            try:
                address = ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(address in network for network in self._networks)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = known
        return known

    def resolve(self, client, scheme, headers):
        """
        Return ``(client, scheme)`` for a request from ``client`` (``[host, port]``,
        or ``None`` for a unix socket's peer).

        Only when the direct peer is trusted (a unix socket's peer always is:
        only local processes the socket's file mode lets in reach it): the
        client is the right-most address in ``X-Forwarded-For`` that is not
        itself a trusted proxy (left of it, anything may be forged), with
        ``X-Forwarded-Port`` as its port; ``X-Forwarded-Proto``
        (``http``/``https``) sets the scheme.
        """
        if client is not None and not self.trusted(client[0]):
            return client, scheme
        forwarded_for = proto = port = None
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-port":
                port = value
        if forwarded_for is not None:
            chosen = None
            for hop in reversed(forwarded_for.decode("latin-1").split(",")):
                hop = _strip_port(hop.strip())
                try:
                    ip_address(hop)
                except ValueError:
                    break  # garbage: believe nothing further left
                chosen = hop
                if not self.trusted(hop):
                    break
            if chosen is not None:
                client = [chosen, int(port) if port is not None and port.isdigit()
                          and len(port) < 6 else 0]
        if proto is not None:
            value = proto.split(b",")[-1].strip().lower()
            if value in (b"http", b"https"):
                scheme = value.decode("ascii")
        return client, scheme


def _strip_port(hop):
    """``1.2.3.4:80`` → ``1.2.3.4``; ``[::1]:80`` → ``::1``; bare addresses unchanged."""
    if hop.startswith("["):
        end = hop.find("]")
        return hop[1:end] if end > 0 else hop
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
