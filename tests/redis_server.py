"""
Real ``redis-server`` processes for tests.

``RedisServer()`` starts one on a free loopback port (and a unix socket) in
its own temporary directory, without persistence, and returns once it
accepts connections: ``start()`` reads the server's log until it says
"Ready to accept connections" (no sleeps, no polling). ``kill()`` sends
SIGKILL (a crash); ``start()`` again brings it back on the same port.
``stop()`` ends it and removes its directory.

``shared_server()`` is one server per test process, started on first use
and stopped when the process exits; tests that kill their server start their
own instead.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

_READY = b"Ready to accept connections"


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` child process on 127.0.0.1:``port`` and a unix socket."""

    def __init__(self, port=None, start=True, timeout=20.0, args=(), tls=False):
        self.args = list(args)
        self.port = port or free_port()
        self.directory = tempfile.mkdtemp(prefix="chanserve-redis-")
        self.tls_port = None
        self.ca_file = None
        if tls:
            # A self-signed certificate for "localhost", also the CA to trust.
            self.tls_port = free_port()
            self.ca_file, key_file = _self_signed(self.directory)
            self.args += ["--tls-port", str(self.tls_port), "--tls-cert-file", self.ca_file,
                          "--tls-key-file", key_file, "--tls-ca-cert-file", self.ca_file,
                          "--tls-auth-clients", "no"]
        self.unix_socket = os.path.join(self.directory, "redis.sock")
        self.timeout = timeout
        self.process = None
        if start:
            self.start()

    @property
    def url(self):
        """``redis://127.0.0.1:<port>/0``"""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self):
        """``rediss://localhost:<tls port>/0?ssl_ca_certs=<its certificate>``"""
        return f"rediss://localhost:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"

    @property
    def unix_url(self):
        """``unix://<socket path>``"""
        return f"unix://{self.unix_socket}"

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        """Start (or restart) the server and wait until it accepts connections."""
        if self.running:
            return self
        args = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", self.unix_socket, "--unixsocketperm", "700",
            "--dir", self.directory, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--logfile", "", "--loglevel", "notice",
            "--databases", "4", "--protected-mode", "no", *self.args,
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=self.directory)
        log = []
        timer = threading.Timer(self.timeout, self._kill_process, [self.process])
        timer.start()
        try:
            for line in self.process.stdout:
                log.append(line)
                if _READY in line:
                    break
            else:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start:\n"
                    + b"".join(log).decode("utf-8", "replace"))
        finally:
            timer.cancel()
        # Keep draining its log so it never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        return self

    @staticmethod
    def _drain(process):
        for _ in process.stdout:
            pass

    @staticmethod
    def _kill_process(process):
        if process.poll() is None:
            process.kill()

    def kill(self):
        """Crash the server (SIGKILL) and wait for it to be gone; its data is lost."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process.stdout.close()
            self.process = None

    def pause(self):
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, like a network cut."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        """Unfreeze a paused server (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    def stop(self):
        """Stop the server and remove its directory."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process.stdout.close()
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def command(self, *args, password=None):
        """Run one Redis command over a blocking socket (for test set-up and checks)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout) as s:
            f = s.makefile("rb")
            if password is not None:
                s.sendall(_encode(("AUTH", password)))
                _read_reply(f)
            s.sendall(_encode(args))
            return _read_reply(f)


def _self_signed(directory):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_file = os.path.join(directory, "tls.crt")
    key_file = os.path.join(directory, "tls.key")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    return cert_file, key_file


def _encode(args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


def _read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"bad reply {line!r}")


_shared = {}
_shared_lock = threading.Lock()


def shared_server(index=0):
    """
    The ``index``-th ``RedisServer`` shared by the tests of this process
    (tests never kill these; ``shared_server(1)`` is a second one for sharding).
    """
    with _shared_lock:
        server = _shared.get(index)
        if server is None or not server.running:
            if server is not None:
                server.stop()
            server = _shared[index] = RedisServer()
            atexit.register(server.stop)
        return server
