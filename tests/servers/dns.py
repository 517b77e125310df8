"""A real DNS server on loopback, answering from a table of records.

No DNS server is reachable from the tests, so discovery's resolver (dnspython) is
pointed here: it sends real queries over UDP and parses real answers, MX, TXT (long
ones split into several strings, as real SPF records are), SRV and CNAME, with
NXDOMAIN for unknown names and an empty answer for a known name without the type.
Names can be made silent (the query is swallowed) to test the time bounds.
"""

import socket
import threading
from collections import defaultdict

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


class ZoneDnsServer:
    def __init__(self):
        self.records: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.silent: set[tuple[str, str]] = set()
        self.queries: list[tuple[str, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    # -- the zone ----------------------------------------------------------------

    def add(self, name: str, rdtype: str, *rdatas: str) -> None:
        self.records[(name.lower().rstrip("."), rdtype.upper())].extend(rdatas)

    def mx(self, domain: str, *hosts: str) -> None:
        self.add(domain, "MX", *(f"{10 * (n + 1)} {host}." for n, host in enumerate(hosts)))

    def txt(self, name: str, text: str) -> None:
        # Split into 255-byte strings as a real zone must (RFC 1035 character-strings).
        pieces = [text[i : i + 200] for i in range(0, len(text), 200)] or [""]
        self.add(name, "TXT", " ".join(f'"{piece}"' for piece in pieces))

    def srv(self, name: str, host: str, port: int = 443, priority: int = 0) -> None:
        self.add(name, "SRV", f"{priority} 0 {port} {host}.")

    def cname(self, name: str, target: str) -> None:
        self.add(name, "CNAME", f"{target}.")

    def silence(self, name: str, rdtype: str) -> None:
        self.silent.add((name.lower().rstrip("."), rdtype.upper()))

    def clear(self) -> None:
        self.records.clear()
        self.silent.clear()
        self.queries.clear()

    def resolver(self):
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        # No cache: each test's zone is its own.
        resolver.cache = None
        return resolver

    # -- serving -----------------------------------------------------------------

    def start(self) -> "ZoneDnsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                reply = self._answer(dns.message.from_wire(data))
            except dns.exception.DNSException:
                reply = None  # a malformed query gets no answer
            if reply is not None:
                self.sock.sendto(reply.to_wire(max_size=65535), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if (name, rdtype) in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        current, seen = name, 0
        while seen < 8:
            seen += 1
            rdatas = self.records.get((current, rdtype))
            if rdatas:
                response.answer.append(self._rrset(current, rdtype, rdatas))
                return response
            alias = self.records.get((current, "CNAME"))
            if alias and rdtype != "CNAME":
                response.answer.append(self._rrset(current, "CNAME", alias[:1]))
                current = alias[0].rstrip(".").lower()
                continue
            break
        known = any(key[0] == current for key in self.records)
        if not known and not response.answer:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    @staticmethod
    def _rrset(name: str, rdtype: str, rdatas: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(dns.name.from_text(name), 300, "IN", rdtype, rdatas)
