# The TCP/UDP client of coursework assignment 004 (the course's own text), copied verbatim:
# TCP port 65432, UDP port 65433, protocol and messages from input().
import socket

HOST = '127.0.0.1'
TCP_PORT = 65432
UDP_PORT = 65433

protocol = input("¿Quieres usar TCP o UDP? (tcp/udp): ").strip().lower()

if protocol == "tcp":
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect((HOST, TCP_PORT))
    while True:
        msg = input("Escribe un mensaje (TCP): ")
        client.sendall(msg.encode())
        response = client.recv(1024).decode()
        print("Servidor TCP respondió:", response)
        if msg.lower() == 'exit':
            break
    client.close()

elif protocol == "udp":
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        msg = input("Escribe un mensaje (UDP): ")
        client.sendto(msg.encode(), (HOST, UDP_PORT))
        response, _ = client.recvfrom(1024)
        print("Servidor UDP respondió:", response.decode())
        if msg.lower() == 'exit':
            break
    client.close()
