#!/usr/bin/env python3
"""Stage 4: the chat room of threaded_room.py in one thread, as a `selectors` event loop.

    python3 selectors_room.py [PORT]    # default 5000, the chat-room assignment's port

Sockets are non-blocking: the only wait is select(), which returns the sockets that can make
progress now (epoll on Linux, level-triggered). Per client, instead of a thread: an input
buffer (the unfinished line) and an output queue, written when the socket is writable. A client
that stops reading costs its own queue, not everyone's time, and is dropped past MAX_PENDING.
"""
import itertools
import selectors
import signal
import socket
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
EXIT_WORDS = {":q", "#logout"}  # compared in lower case, alone on the line
MAX_PENDING = 256 * 1024  # bytes owed to a client before it is dropped as too slow
sel, clients, ids = selectors.DefaultSelector(), {}, itertools.count(1)  # one thread: no lock


class Client:  # all the loop keeps per client
    def __init__(self, sock):
        self.sock, self.ident = sock, f"guest{next(ids)}"
        self.inbuf, self.out, self.leaving = b"", bytearray(), False


def send(c, text):  # queue a line, and ask to be told when the socket can take it
    c.out += f"{text}\n".encode()
    if len(c.out) > MAX_PENDING:  # too slow: forget what it is owed, drop it when writable
        c.out.clear()
        c.leaving = True
    sel.modify(c.sock, selectors.EVENT_WRITE | (0 if c.leaving else selectors.EVENT_READ), c)


def broadcast(text, skip=None):
    print(text, flush=True)
    for c in list(clients.values()):
        if c is not skip and not c.leaving:
            send(c, text)


def drop(c):
    del clients[c.sock]
    sel.unregister(c.sock)
    c.sock.close()
    broadcast(f"[SERVER] Client: {c.ident} disconnected.")


def on_accept(srv):
    try:
        sock, _ = srv.accept()
    except OSError:  # the client gave up before we got to it
        return
    sock.setblocking(False)
    c = clients[sock] = Client(sock)
    sel.register(sock, selectors.EVENT_READ, c)
    send(c, "Welcome to the best chat in the universe!")
    send(c, f"[SERVER] You are {c.ident}. Type :q to leave.")
    broadcast(f"[SERVER] Client: {c.ident} connected!", skip=c)


def on_readable(c):
    try:
        data = c.sock.recv(4096)  # level-triggered: what is left is reported again
    except OSError:
        data = b""
    if not data:
        return drop(c)
    *lines, c.inbuf = (c.inbuf + data).split(b"\n")  # keep the unfinished tail
    for raw in lines:
        text = raw.decode("utf-8", "replace").strip()
        if text.lower() in EXIT_WORDS:
            c.leaving = True  # read no more; drop it once the goodbye is written
            return send(c, "[SERVER] Bye!")
        if text:
            broadcast(f"{c.ident}: {text}", skip=c)


def on_writable(c):
    try:
        del c.out[: c.sock.send(c.out)]  # what the kernel takes now; the rest waits
    except OSError:
        return drop(c)
    if not c.out and c.leaving:  # goodbye written: now close
        drop(c)
    elif not c.out:  # nothing owed: stop asking for writable
        sel.modify(c.sock, selectors.EVENT_READ, c)


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt
    srv = socket.create_server(("127.0.0.1", PORT))  # socket, setsockopt, bind, listen
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ)
    print("[SERVER] Listening on %s:%d" % srv.getsockname(), flush=True)
    try:
        while True:
            for key, events in sel.select():
                c = key.data
                if c is None:
                    on_accept(srv)
                    continue
                if events & selectors.EVENT_READ and not c.leaving:
                    on_readable(c)
                if events & selectors.EVENT_WRITE and c.sock in clients:  # not just dropped
                    on_writable(c)
    except KeyboardInterrupt:
        print("[SERVER] Server shutting down.", flush=True)
        for sock in clients:  # a last goodbye, without waiting; then close
            try:
                sock.send(b"[SERVER] Server shutting down.\n")
            except OSError:
                pass
            sock.close()
        srv.close()


if __name__ == "__main__":
    main()
