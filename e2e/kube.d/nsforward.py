#!/usr/bin/env python3
"""e2e/kube.d/nsforward.py NETNS_PATH LISTEN_HOST:PORT TARGET_HOST:PORT [MARK]

A TCP forwarder that straddles two network namespaces: it listens on LISTEN inside the namespace NETNS_PATH
(e.g. /run/netns/popfleet-node) and connects to TARGET in the namespace it was started in (the host's).
The node's kubelet reaches the control plane, which listens on the host's 127.0.0.1 only, through it, without
a route, a NAT rule or a sysctl on the host. Used by e2e/kube.d/node.sh; loopback and namespaces only.
"""
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(conn, target):
    try:
        up = socket.create_connection(target, timeout=10)
        up.settimeout(None)
    except OSError as e:
        print(f"nsforward: connect {target}: {e}", file=sys.stderr, flush=True)
        conn.close()
        return
    t = threading.Thread(target=pipe, args=(up, conn), daemon=True)
    t.start()
    pipe(conn, up)
    t.join()
    conn.close()
    up.close()


def main():
    if len(sys.argv) not in (4, 5):  # a 4th argument (the state dir) only marks the command line
        sys.exit(__doc__)
    netns, listen, target = sys.argv[1], hostport(sys.argv[2]), hostport(sys.argv[3])
    # setns changes only the calling thread, and sockets keep the namespace they were made in: enter the
    # node's namespace, make the listening socket, go back, and make every outgoing connection from here.
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    setns(netns)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(listen)
    ls.listen(128)
    if libc.setns(home, CLONE_NEWNET) != 0:
        sys.exit("nsforward: could not return to the original network namespace")
    os.close(home)
    print(f"nsforward: {netns} {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", file=sys.stderr, flush=True)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn, target), daemon=True).start()


if __name__ == "__main__":
    main()
