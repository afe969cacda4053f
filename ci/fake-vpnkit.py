#!/usr/bin/python3
"""A stand-in for vpnkit in the integration tests (vpnkit is not packaged for Debian).

Run as `vpnkit --ethernet SOCKET --mtu N [--host-ip 0.0.0.0]`, like rootlesskit runs vpnkit.
It serves just enough of vpnkit's vmnet protocol on SOCKET: the init exchange, one virtual
interface per UUID (the same MAC and address for a UUID each time it is asked for), a DHCP offer
for a discover, ARP for the gateway 192.168.65.1, and echo at the gateway: ICMP echo and UDP
port 7. Everything else is dropped.

$FAKE_VPNKIT_LOG, when set, gets one line "<pid> <argv...>" at start. $FAKE_VPNKIT_REFUSE, when
set, is the text of a refusal sent instead of any interface. $FAKE_VPNKIT_FAIL, when set, is
printed to stderr before exiting with status 3 at once.
"""

import os
import socket
import struct
import sys
import threading

GW_IP = bytes([192, 168, 65, 1])
GW_MAC = bytes([0x02, 0x50, 0x00, 0x00, 0x00, 0x01])
FIRST_CLIENT = 3

args = sys.argv[1:]
log = os.environ.get("FAKE_VPNKIT_LOG")
if log:
    with open(log, "a") as f:
        f.write(f"{os.getpid()} {' '.join(args)}\n")
fail = os.environ.get("FAKE_VPNKIT_FAIL")
if fail:
    print(fail, file=sys.stderr)
    sys.exit(3)
path = args[args.index("--ethernet") + 1]
mtu = int(args[args.index("--mtu") + 1]) if "--mtu" in args else 1500

lock = threading.Lock()
vifs = {}  # uuid text -> (mac, ip)


def vif_for(uuid):
    with lock:
        if uuid not in vifs:
            n = FIRST_CLIENT + len(vifs)
            vifs[uuid] = (bytes([0x02, 0x50, 0x00, 0x12, 0x34, n]), bytes([192, 168, 65, n]))
        return vifs[uuid]


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, payload):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack("!H", checksum(h)) + h[12:]
    return h + payload


def ether(dst, ethertype, payload):
    return dst + GW_MAC + struct.pack("!H", ethertype) + payload


def dhcp_offer(frame, mac, ip):
    bootp = frame[14 + 20 + 8:]
    xid = bootp[4:8]
    body = struct.pack("!BBBB4sHH4s4s4s4s", 2, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, ip, GW_IP, b"\0" * 4)
    body += mac + b"\0" * 10 + b"\0" * 64 + b"\0" * 128
    body += bytes([0x63, 0x82, 0x53, 0x63, 53, 1, 2, 54, 4]) + GW_IP
    body += bytes([1, 4, 255, 255, 255, 0, 3, 4]) + GW_IP + bytes([6, 4]) + GW_IP + bytes([255])
    udp = struct.pack("!HHHH", 67, 68, 8 + len(body), 0) + body
    return ether(mac, 0x0800, ipv4(GW_IP, b"\xff" * 4, 17, udp))


def answer(frame, mac, ip):
    """The frame to send back for `frame` from the client, or None."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    if ethertype == 0x0806 and len(frame) >= 42:
        arp = frame[14:42]
        op = struct.unpack("!H", arp[6:8])[0]
        if op == 1 and arp[24:28] == GW_IP:
            reply = arp[:6] + struct.pack("!H", 2) + GW_MAC + GW_IP + arp[8:14] + arp[14:18]
            return ether(frame[6:12], 0x0806, reply)
        return None
    if ethertype != 0x0800 or len(frame) < 34:
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[14 + 9]
    src, dst = frame[26:30], frame[30:34]
    l4 = frame[14 + ihl:]
    if proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        if dport == 67:
            return dhcp_offer(frame, mac, ip)
        if dst == GW_IP and dport == 7:
            data = l4[8:]
            udp = struct.pack("!HHHH", 7, sport, 8 + len(data), 0) + data
            return ether(frame[6:12], 0x0800, ipv4(GW_IP, src, 17, udp))
    if proto == 1 and dst == GW_IP and len(l4) >= 8 and l4[0] == 8:
        icmp = b"\0\0\0\0" + l4[4:]
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        return ether(frame[6:12], 0x0800, ipv4(GW_IP, src, 1, icmp))
    return None


def serve(conn):
    try:
        init = read_exact(conn, 49)
        if init[:5] != b"VMN3T":
            return
        conn.sendall(b"VMN3T" + struct.pack("<I", 22) + b"f" * 40)
        req = read_exact(conn, 41)
        uuid = req[1:37].decode()
        refuse = os.environ.get("FAKE_VPNKIT_REFUSE")
        if refuse:
            conn.sendall(bytes([0, len(refuse)]) + refuse.encode())
            return
        mac, ip = vif_for(uuid)
        conn.sendall(bytes([1]) + struct.pack("<HH", mtu, mtu + 50) + mac + b"\0" * 247)
        while True:
            (n,) = struct.unpack("<H", read_exact(conn, 2))
            reply = answer(read_exact(conn, n), mac, ip)
            if reply is not None:
                conn.sendall(struct.pack("<H", len(reply)) + reply)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main():
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
