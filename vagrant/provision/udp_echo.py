"""The backends' UDP echo: every datagram goes back to its sender as is.

Usage: udp_echo.py ADDRESS PORT
"""

import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = sock.recvfrom(65535)
    sock.sendto(data, peer)
