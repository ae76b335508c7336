#!/usr/bin/env python3
"""Stage 1: a blocking echo server, one client at a time (the course's echo assignment).

    python3 echo_server.py [PORT]       # default 1234, the assignment's port

Every call blocks: accept() until a client connects, recv() until bytes arrive, sendall()
until the kernel has taken every byte. So while one client is connected, the next one waits
in the listen backlog: this server serves clients strictly one after another.
"""
import signal
import socket
import sys

HOST = "127.0.0.1"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 1234

# Ctrl-C raises KeyboardInterrupt, even if a shell started us with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)    # socket(): TCP over IPv4
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once after a restart
srv.bind((HOST, PORT))                                     # bind(): take the address
srv.listen()                                               # listen(): accept connections
print("[SERVER] Listening on %s:%d" % srv.getsockname(), flush=True)  # port 0: any free one
try:
    while True:
        conn, addr = srv.accept()                          # accept(): a new socket per client
        print(f"[SERVER] Client: {addr[0]}:{addr[1]} connected!", flush=True)
        with conn:                                         # close() when the block ends
            while True:
                data = conn.recv(1024)                     # recv(): whatever has arrived
                if not data:                               # b"": the client closed its side
                    break
                # One recv is not one message: TCP is a byte stream. A message sent in one
                # piece may come in several recvs, several messages in one. Print the sizes
                # to see it; an echo server need not care, it sends the bytes back as they are.
                print(f"recv {len(data)} bytes: {data!r}", flush=True)
                conn.sendall(data)                         # sendall(): loops over send()
        print(f"[SERVER] Client: {addr[0]}:{addr[1]} disconnected.", flush=True)
except KeyboardInterrupt:
    print("[SERVER] Shutting down.", flush=True)
finally:
    srv.close()
