#!/usr/bin/env python3
"""Stage 2: the course's chat room, one thread per connection, done right.

    python3 threaded_room.py [PORT]     # default 5000, the chat-room assignment's port
    nc localhost 5000                   # in two or more other terminals

What the course's chat-room assignments ask for, and where it is met below:
  - a thread per new connection, which greets the client, shows on the console that it
    connected, then receives until the connection ends: serve();
  - a unique identifier per client: guest1, guest2, ... (never reused);
  - the welcome, sent by the server: "Welcome to the best chat in the universe!";
  - the console shows "[SERVER] Client: <Identifier> connected!" and "<Identifier>: Message";
  - ":q" closes the client's socket (so does "#LOGOUT", the other assignment's exit word);
  - each message goes to every other client, not back to the sender;
  - at least 6 clients at once (threads: as many as the machine allows).
"""
import signal
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
WELCOME = "Welcome to the best chat in the universe!"
EXIT_WORDS = {":q", "#logout"}  # compared in lower case, alone on the line

clients = {}  # socket -> identifier, shared by every thread: touched only under `lock`
lock = threading.Lock()


def broadcast(text, skip=None):
    """Prints `text` on the console and sends it to every client but `skip`. Hold `lock`.

    Holding the lock while sending keeps one order of lines for every client and the console.
    The price: when one client stops reading, sendall() blocks here with the lock held, and
    then every thread waits (README.md, "What breaks").
    """
    print(text)
    for other in clients:
        if other is not skip:
            try:
                other.sendall(f"{text}\n".encode())
            except OSError:
                pass  # that client is gone; its own thread removes it


def serve(conn, ident):
    """One client's thread: greet, announce, then relay its lines until it leaves."""
    pending = b""  # bytes after the last newline: the start of a line still arriving
    try:
        with lock:  # one step, so that no line slips in between
            conn.sendall(f"{WELCOME}\n[SERVER] You are {ident}. Type :q to leave.\n".encode())
            broadcast(f"[SERVER] Client: {ident} connected!")  # to the others: not in yet
            clients[conn] = ident
        while data := conn.recv(1024):
            # One recv is not one line: split what has arrived at the newlines and keep the
            # unfinished tail for the next recv.
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace").strip()
                if text.lower() in EXIT_WORDS:
                    with lock:  # the goodbye is its last line: out of the list at once
                        conn.sendall(b"[SERVER] Bye!\n")
                        del clients[conn]
                    return  # the finally below closes the socket
                if text:
                    with lock:
                        broadcast(f"{ident}: {text}", skip=conn)
    except OSError:
        pass  # a reset, or the server shutting down
    finally:
        with lock:
            clients.pop(conn, None)
            broadcast(f"[SERVER] Client: {ident} disconnected.")
        conn.close()


def main():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt
    sys.stdout.reconfigure(line_buffering=True)  # each console line out at once, even to a pipe
    # create_server() is socket(), setsockopt(SO_REUSEADDR), bind() and listen() in one call.
    srv = socket.create_server((HOST, PORT))
    print("[SERVER] Listening on %s:%d" % srv.getsockname())
    count = 0
    try:
        while True:
            try:
                conn, _ = srv.accept()  # only this thread accepts; each client gets its own
            except OSError:  # out of descriptors (ulimit -n): wait for someone to leave
                time.sleep(0.1)
                continue
            count += 1
            threading.Thread(target=serve, args=(conn, f"guest{count}"), daemon=True).start()
    except KeyboardInterrupt:
        pass
    srv.close()
    print("[SERVER] Server shutting down.")
    # A thread stuck in sendall() to a client that does not read may hold the lock: wait a
    # second for it, then go on without it (shutting that client down unsticks the thread).
    locked = lock.acquire(timeout=1)
    for conn in list(clients):
        try:  # tell each client without waiting, then end its recv() with end of stream
            conn.send(b"[SERVER] Server shutting down.\n", socket.MSG_DONTWAIT)
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if locked:
        lock.release()
    for thread in threading.enumerate():  # let each thread say its client disconnected
        if thread is not threading.current_thread():
            thread.join(timeout=1)  # daemon threads: none can keep the process alive


if __name__ == "__main__":
    main()
