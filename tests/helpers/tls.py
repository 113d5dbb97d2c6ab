"""TLS for the secured-Kafka tests: certificates made on the spot (``trustme``: a CA, a server
certificate for 127.0.0.1 as an IP SAN, a client certificate), and a TLS-terminating TCP proxy to put
in front of the embedded broker, which cannot speak TLS itself (``/work/shared/notes/tansu.md``):
the broker advertises the proxy's address, so every client must reach it through TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA both sides trust, the server's and a client's certificate and key, and a
    CA nobody uses (to prove that trust is checked)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh CA, a server certificate for 127.0.0.1 and a client certificate under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="segment-worker tests")
    server = ca.issue_cert("127.0.0.1", common_name="kafka-proxy")
    client = ca.issue_cert("segment-worker-client", common_name="segment-worker-client")
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


class TlsProxy:
    """Accepts TLS on 127.0.0.1 and forwards the plaintext bytes to ``upstream`` (set once the broker
    behind it listens). ``require_client_cert``: mutual TLS (a client without a certificate signed by
    the CA is refused during the handshake, with the TLS alert a real broker sends).

    Blocking sockets in threads, not asyncio: a test that blocks its own event loop (waiting for a
    subprocess, say) must not freeze the traffic behind it, and asyncio's TLS server drops a refused
    handshake without sending the alert, which would leave clients guessing."""

    def __init__(self, files: TlsFiles, *, require_client_cert: bool) -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(files.server_cert, files.server_key)
        if require_client_cert:
            ctx.load_verify_locations(files.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._ssl = ctx
        self.upstream: int | None = None
        self.connections = 0  # TLS sessions that reached the broker
        self.refused = 0  # handshakes that failed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> TlsProxy:
        """Accept connections in a background thread."""
        threading.Thread(target=self._accept_loop, name="tls-proxy", daemon=True).start()
        return self

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._track(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            tls = self._ssl.wrap_socket(conn, server_side=True)  # the handshake (refusal sends an alert)
            tls.settimeout(None)
        except (OSError, ssl.SSLError):
            self.refused += 1
            conn.close()
            return
        self._track(tls)
        if self.upstream is None:
            tls.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            up.settimeout(None)
        except OSError:
            tls.close()
            return
        self._track(up)
        self.connections += 1
        threading.Thread(target=self._pipe, args=(up, tls), daemon=True).start()
        self._pipe(tls, up)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in (src, dst):  # either side gone: close the other too
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def stop(self) -> None:
        """Stop listening and cut every connection."""
        self._stopping = True
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
