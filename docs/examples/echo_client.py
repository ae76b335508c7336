#!/usr/bin/env python3
"""Stage 1: the echo server's client. It sends one message in pieces and reads it back.

    python3 echo_client.py [PORT] [MESSAGE]     # default 1234 and "Hola, servidor!"

The message goes out in three send() calls with a pause between them, so the server's recv()
sees three pieces, not one message. The answer, too, may come in any number of recv()s: the
client keeps reading until the server closes, and only then has the whole echo.
"""
import socket
import sys
import time

HOST = "127.0.0.1"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 1234
MESSAGE = (sys.argv[2] if len(sys.argv) > 2 else "Hola, servidor!").encode()

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # socket(); no bind(): the kernel
sock.connect((HOST, PORT))                                 # picks a port in connect()
third = max(1, len(MESSAGE) // 3)
for piece in (MESSAGE[:third], MESSAGE[third:2 * third], MESSAGE[2 * third:]):
    sock.sendall(piece)                                    # one message, three sends
    time.sleep(0.1)                                        # so they leave as separate segments
sock.shutdown(socket.SHUT_WR)                              # FIN: "I have sent everything"
echo = b""
while chunk := sock.recv(1024):                            # b"" when the server has closed
    print(f"recv {len(chunk)} bytes: {chunk!r}")
    echo += chunk
sock.close()
print(f"sent {MESSAGE!r}, got back {echo!r}")
sys.exit(0 if echo == MESSAGE else 1)
