"""The Gunicorn worker: Gunicorn's threaded worker, made safe without a buffering proxy.

Gunicorn's gthread worker hands a connection to a request thread as soon as its first byte
arrives, and the thread then reads the rest with no deadline: a few clients that send their
headers slowly hold every thread. Here a thread reads only what has arrived, without
waiting; a request that is not complete goes back to the event loop, which reads the rest
as it comes, without blocking, and gives it to a thread once complete. A client that has not
sent its whole request (line, headers, body) within GUNICORN_REQUEST_READ_TIMEOUT seconds
gets 408 and is disconnected: a thread never waits for a client to send.

Liveness and readiness probes never wait behind stuck requests: when every request thread is
busy (waiting on a stalled database, say), the event loop reads new requests itself and gives
probes to threads of their own.

With one thread (GUNICORN_THREADS=1: one request at a time per worker, for code that is not
thread-safe) the loop answers each request itself, as Gunicorn's sync worker does, with no
hand-over between threads, and closes the connection after the response: requests then queue
in the kernel, shared by every worker, instead of behind one worker's busy thread (keep-alive
would pin each client to one worker). A standby thread takes the loop over while a request
runs longer than STALLED_AFTER_S, so probes are still answered; other requests read in full
meanwhile wait for the loop thread.

TLS connections (Gunicorn's certfile) are read as Gunicorn reads them, in the thread.
"""

from __future__ import annotations

import errno
import html
import json
import re
import selectors
import socket
import struct
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import TConn
from gunicorn.workers.gthread import ThreadWorker

from . import deadline
from . import lifecycle
from .probes import PROBE_PATHS
from .settings import load_server_settings
from .settings import load_settings

# Threads that answer probes while the request threads are stalled.
PROBE_THREADS = 2
# A one-thread worker's request has stalled when it has run this long.
STALLED_AFTER_S = 0.2
# How often the standby thread of a one-thread worker looks whether the request has stalled.
STANDBY_TICK_S = 0.1
# The longest a one-thread worker waits on a client that sent more than its request, when
# closing its connection.
GRACEFUL_CLOSE_S = 0.2
_RECEIVE_SIZE = 65536
_HEAD_END = b"\r\n\r\n"
_FRAMING = re.compile(rb"\r\n(?:content-length|transfer-encoding):", re.I)
_CHUNKED = re.compile(rb"^transfer-encoding:.*chunked", re.M)  # on the lower-cased head
_COMPLETE, _INCOMPLETE, _CLOSED = object(), object(), object()  # what receive() found
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[^\r\n]*\r\n")


class BufferedConnection(TConn):
    """A connection whose request is read without blocking (receive()) before Gunicorn's
    parser takes it: the parser starts from the bytes received."""

    received = b""
    received_at = 0.0  # when its request was complete, or taken by a thread
    read_in_full = False  # the whole request has been received
    read_more = False  # a thread found the request incomplete: the event loop reads on
    on_request_thread = False
    continued = False  # 100 Continue sent for the request being read

    def init(self) -> None:
        super().init()
        deadline.arrived(self.received_at)
        self.continued = self.read_in_full = False
        if self.received:
            self.parser.unreader.unread(self.received)
            self.received = b""


class RequestBufferingWorker(ThreadWorker):
    """gthread whose threads never wait for a client to send, with probes that skip the queue
    while the request threads are stalled."""

    def __init__(self, *args, **kwargs) -> None:
        """In the master, before fork: a worker must be ready for SIGTERM as soon as it runs,
        so what takes time (reading the settings) is done here, not in init_process()."""
        super().__init__(*args, **kwargs)
        self.read_timeout = float(load_server_settings().request_read_timeout)
        self.socket_timeout = struct.pack("ll", int(self.read_timeout), 0)
        self.max_body = load_settings().max_content_length
        # The longest request head Gunicorn's own limits let through.
        cfg = self.cfg
        self.max_head = cfg.limit_request_line + cfg.limit_request_fields * (
            cfg.limit_request_field_size + 2
        )
        self.probe_targets = tuple(
            f"{method} {path} ".encode() for method in ("GET", "HEAD") for path in PROBE_PATHS
        )
        self.timeout_response = _request_timeout_response(self.read_timeout)
        self.single_thread = self.cfg.threads == 1 and not self.cfg.is_ssl

    def init_process(self) -> None:
        self.probe_pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe")
        self.reading: deque[BufferedConnection] = deque()  # in deadline order
        self.busy = 0  # requests given to the request threads and not yet finished
        # One thread: whichever thread runs the loop holds loop_lock; the request the loop
        # thread is answering started at request_started; takeovers counts the standby's turns.
        self.loop_lock = threading.Lock()
        self.request_started: float | None = None
        self.takeovers = 0
        self.standby_has_loop = False
        self.waiting: deque[BufferedConnection] = deque()  # read in full by the standby
        if self.single_thread:
            # Each response closes its connection: the next request queues in the kernel for
            # whichever worker is free first.
            self.max_keepalived = 0
            self.defer_accept()
            threading.Thread(target=self.standby, name="standby", daemon=True).start()
        super().init_process()

    def defer_accept(self) -> None:
        """Let the kernel hand over a TCP connection once its first bytes have arrived: the
        loop then reads the request at once instead of waiting for it."""
        for listener in self.sockets:
            if listener.FAMILY in (socket.AF_INET, socket.AF_INET6):
                try:
                    listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
                except OSError:
                    pass  # not on this platform: the loop reads the request as it comes

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # A thread's blocking reads and writes on this socket (a body above the size limit
        # being drained, a response to a client that stopped reading) give up after the read
        # timeout. Set in the kernel once: Gunicorn switches the socket between blocking and
        # non-blocking for every request, which would undo a Python socket timeout.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.socket_timeout)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.socket_timeout)
        connection = BufferedConnection(self.cfg, client, address, listener.getsockname())
        self.enqueue_req(connection)

    def enqueue_req(self, conn: TConn) -> None:
        """The connection's next request: a thread reads what has arrived, or, while the
        request threads are stalled, this loop reads it so that a probe can skip the queue."""
        if self.cfg.is_ssl or not isinstance(conn, BufferedConnection):
            super().enqueue_req(conn)
            return
        # Bytes a previous request's parser read ahead (a pipelined request) come first;
        # Gunicorn hands such a connection over still blocking.
        if conn.parser is not None and conn.parser.unreader.buf.tell():
            conn.received = conn.parser.unreader.take_buffered()
            conn.sock.setblocking(False)
        now = time.monotonic()
        conn.timeout = now + self.read_timeout  # the read deadline
        # Every request thread busy: the loop reads the request, so that a probe never waits
        # in the queue behind requests that may be stuck (finish_reading()).
        if self.single_thread or self.busy >= self.cfg.threads:
            self.read_here(conn, self.receive(conn))
        else:
            conn.received_at = now
            self.submit(conn, self.tpool)

    def read_here(self, conn: BufferedConnection, outcome: object) -> None:
        """Go on reading in this loop: until complete, closed, or past the deadline."""
        if outcome is _INCOMPLETE:
            self.reading.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn)
            )
        else:
            self.finish_reading(conn, outcome)

    def on_request_bytes(self, conn: BufferedConnection, _sock: socket.socket) -> None:
        outcome = self.receive(conn)
        if outcome is not _INCOMPLETE:
            self.poller.unregister(conn.sock)
            self.reading.remove(conn)
            self.finish_reading(conn, outcome)

    def finish_reading(self, conn: BufferedConnection, outcome: object) -> None:
        if outcome is _CLOSED:
            self.drop(conn)
            return
        conn.read_in_full = True
        conn.received_at = time.monotonic()
        # A probe never queues: while the request threads are busy, or (one thread) while
        # requests wait for the loop thread, one of the probe threads answers it.
        queued = self.busy >= self.cfg.threads or self.waiting
        if queued and conn.received.startswith(self.probe_targets):
            self.submit(conn, self.probe_pool)
        else:
            self.submit(conn, self.tpool)

    def submit(self, conn: BufferedConnection, pool: ThreadPoolExecutor) -> None:
        if pool is self.tpool and self.single_thread:
            if self.standby_has_loop or self.waiting:
                # For the loop thread once its request is answered, after those read before.
                self.waiting.append(conn)
            else:
                self.answer_here(conn)
            return
        if pool is self.tpool:
            self.busy += 1
            conn.on_request_thread = True
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done)
        )

    def answer_here(self, conn: BufferedConnection) -> None:
        """One thread: answer the request in this loop thread. The loop is the standby's to
        take while the request runs."""
        self.busy += 1
        conn.on_request_thread = True
        future: Future = Future()
        self.request_started = time.monotonic()
        self.loop_lock.release()
        try:
            future.set_result(self.handle(conn))
        except Exception as exc:  # handle() answers errors itself; this is Gunicorn's own
            future.set_exception(exc)
        finally:
            self.request_started = None
            if self.standby_has_loop:
                self.method_queue.defer(_nothing)  # wake the standby's select: its turn is over
            self.loop_lock.acquire()
        self.finish_request(conn, future)

    def standby(self) -> None:
        """One thread: take the loop over while the loop thread's request runs longer than
        STALLED_AFTER_S (a stalled database, say), reading requests and answering probes,
        until that request is answered."""
        while self.alive:
            started = self.request_started
            if started is None or time.monotonic() - started < STALLED_AFTER_S:
                time.sleep(STANDBY_TICK_S)
                continue
            if not self.loop_lock.acquire(timeout=STANDBY_TICK_S):
                continue
            try:
                if self.request_started != started:
                    continue  # answered meanwhile
                self.standby_has_loop = True
                self.takeovers += 1
                while self.alive and self.request_started == started:
                    super().wait_for_and_dispatch_events(STANDBY_TICK_S)
                    self.murder_keepalived()
                    self.murder_pending()
            finally:
                self.standby_has_loop = False
                self.loop_lock.release()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if not self.single_thread:
            super().wait_for_and_dispatch_events(timeout)
            return
        if self.waiting:  # requests the standby read in full, oldest first
            self.answer_here(self.waiting.popleft())
            timeout = 0
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        takeovers = self.takeovers
        for key, _mask in events:
            if self.takeovers != takeovers:
                # The standby ran the loop while a request was answered: the rest of these
                # events may be handled already (the poller reports what is still pending).
                break
            key.data(key.fileobj)

    def run(self) -> None:
        self.loop_lock.acquire()  # the loop is this thread's, but while it answers a request
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)

    def handle(self, conn: TConn):
        """In a thread: read what has arrived without waiting; an incomplete request goes
        back to the event loop (read_more), a complete one to Gunicorn."""
        if isinstance(conn, BufferedConnection) and not conn.read_in_full:
            outcome = self.receive(conn)
            if outcome is _CLOSED:
                return False
            if outcome is _INCOMPLETE:
                conn.read_more = True
                return False
            conn.read_in_full = True
        conn.data_ready = True
        return super().handle(conn)

    def handle_request(self, req, conn: TConn):
        if lifecycle.draining():
            # Each response closes its connection: keep-alive clients reconnect, through the
            # balancer, to an instance that is not going away.
            self.max_keepalived = 0
        return super().handle_request(req, conn)

    def finish_request(self, conn: TConn, fs) -> None:
        if isinstance(conn, BufferedConnection):
            if conn.on_request_thread:
                conn.on_request_thread = False
                self.busy -= 1
            if conn.read_more:
                conn.read_more = False
                if self.alive:
                    self.read_here(conn, _INCOMPLETE)
                else:
                    self.drop(conn)
                return
            if self.single_thread and not self.keeps(fs):
                self.nr_conns -= 1
                _close_at_once(conn.sock)
                return
        super().finish_request(conn, fs)

    @staticmethod
    def keeps(fs) -> bool:
        """Whether the request left its connection open (a pipelined or deferred one)."""
        return not fs.cancelled() and fs.exception() is None and fs.result() is not False

    def receive(self, conn: BufferedConnection) -> object:
        """Read what the client has sent so far: _COMPLETE, _INCOMPLETE or _CLOSED."""
        data = conn.received
        while True:
            try:
                chunk = conn.sock.recv(_RECEIVE_SIZE)
            except BlockingIOError:
                break
            except OSError:
                return _CLOSED
            if not chunk:
                return _CLOSED
            data = data + chunk if data else chunk
            if len(chunk) < _RECEIVE_SIZE:
                break
        conn.received = data
        if self.complete(data):
            return _COMPLETE
        if not conn.continued:
            self.continue_if_expected(conn)
        return _INCOMPLETE

    def continue_if_expected(self, conn: BufferedConnection) -> None:
        """A client that sent `Expect: 100-continue` waits for 100 Continue before its body.
        Gunicorn sends one when a thread takes the request; the client then receives a second,
        which HTTP/1.1 clients accept (RFC 9110, section 15.2)."""
        received = conn.received
        end = received.find(_HEAD_END)
        if end < 0 or not received[: received.find(b"\r\n")].endswith(b" HTTP/1.1"):
            return  # HTTP/1.0 has no 100 Continue
        if b"\nexpect: 100-continue" in received[:end].lower():
            conn.continued = True
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                pass  # the client's receive buffer is full or it is gone: the deadline ends it

    def complete(self, data: bytes) -> bool:
        """Whether data holds a whole request, or enough for Gunicorn's parser to refuse it.

        Only framing is read here; Gunicorn's parser still parses, and rejects, the request.
        """
        end = data.find(_HEAD_END)
        if end < 0:
            return len(data) > self.max_head
        if _FRAMING.search(data, 0, end) is None:
            return True  # no body
        # Field names have no space before their colon (Gunicorn refuses one that has).
        head = data[:end].lower()
        body_start = end + len(_HEAD_END)
        if b"\ntransfer-encoding:" in head:
            if _CHUNKED.search(head):
                return _chunks_complete(data[body_start:], self.max_body)
            return True  # refused by the parser
        at = head.find(b"\ncontent-length:")
        if at < 0:
            return True
        if head.find(b"\ncontent-length:", at + 1) >= 0:
            return True  # two lengths: refused by the parser
        value_end = head.find(b"\r", at + 1)
        value = head[at + len(b"\ncontent-length:") : value_end if value_end >= 0 else None]
        value = value.strip(b" \t")
        if not value.isdigit():
            return True  # refused by the parser
        length = int(value)
        # A body above the limit is refused (413) without being read.
        return length > self.max_body or len(data) - body_start >= length

    def drop(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also answer 408 to clients whose request is not complete by its deadline."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].timeout <= now:
            conn = self.reading.popleft()
            self.poller.unregister(conn.sock)
            if conn.received:  # a connection that sent nothing is closed without an answer
                try:
                    conn.sock.send(self.timeout_response)
                except OSError:
                    pass  # the client's receive buffer is full or it is gone; close anyway
                self.log.debug(
                    "no complete request from %s within %ss", conn.client, self.read_timeout
                )
            self.drop(conn)

    def handle_error(self, req, client, addr, exc) -> None:
        """Gunicorn answers a request it cannot take (a request line or headers above its
        limits, a malformed request) itself, in HTML: here the same status, as problem+json
        like every other error of the service."""
        super().handle_error(req, ProblemJsonWriter(client), addr, exc)


class ProblemJsonWriter:
    """A client socket for Gunicorn's error page: what it sends becomes problem+json."""

    _STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)\r\n")
    _MESSAGE = re.compile(rb"</h1>(.*)</body>", re.S)

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def __getattr__(self, name: str):
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        status_line = self._STATUS_LINE.match(data)
        if status_line is None:  # not Gunicorn's error page: as it is
            self._sock.sendall(data)
            return
        status, title = int(status_line.group(1)), status_line.group(2).decode("latin-1")
        message = self._MESSAGE.search(data)
        detail = html.unescape(message.group(1).decode("latin-1")).strip() if message else ""
        self._sock.sendall(http_problem(status, title, detail))


def http_problem(status: int, title: str, detail: str) -> bytes:
    """A whole HTTP response that closes the connection, with a problem+json body."""
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    encoded = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(encoded)}\r\n\r\n"
    )
    return head.encode("latin-1") + encoded


def _close_at_once(sock: socket.socket) -> None:
    """Close after a response without waiting for the client to close first: the loop thread
    of a one-thread worker must not wait on a client. When the client has sent nothing more
    (what clients do after "Connection: close"), closing cannot reset the response it has yet
    to read; otherwise Gunicorn's graceful close reads what it sent, for a moment at most."""
    try:
        sock.shutdown(socket.SHUT_WR)
        pending = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing more sent (BlockingIOError), or gone already
        pending = b""
    if pending:
        util.close_graceful(sock, timeout=GRACEFUL_CLOSE_S)
    else:
        util.close(sock)


def _nothing() -> None:
    """A callback that only wakes the loop."""


def _chunks_complete(body: bytes, limit: int) -> bool:
    """Whether a chunked body is whole (its last chunk and trailers received), is above the
    size limit, or is malformed (Gunicorn's parser refuses it)."""
    position = 0
    size_total = 0
    while True:
        match = _CHUNK_SIZE.match(body, position)
        if match is None:
            # Not yet a whole size line, or not one at all.
            line_end = body.find(b"\r\n", position)
            return line_end >= 0 or len(body) - position > 1024
        size = int(match.group(1), 16)
        position = match.end()
        if size == 0:  # the last chunk: then an empty line, or trailers and an empty line
            return body.startswith(b"\r\n", position) or body.find(_HEAD_END, position) >= 0
        size_total += size
        if size_total > limit:
            return True
        position += size + 2  # the chunk and its CRLF
        if position > len(body):
            return False


def _request_timeout_response(seconds: float) -> bytes:
    detail = f"the request was not received in full within {seconds:g} s"
    return http_problem(408, "Request Timeout", detail)
