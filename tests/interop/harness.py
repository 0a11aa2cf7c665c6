"""Small helpers for run.sh: pick free loopback addresses, wait for a server to answer.

Standard library only, so run.sh can use it with any Python 3.
"""

import argparse
import http.client
import os
import socket
import ssl
import sys
import time
import urllib.parse

PORTS = (8008, 8090, 8448)


def bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def pick_addrs(_args) -> int:
    """Prints three loopback addresses, one per homeserver, whose ports are all free.

    127.0.0.11/.12/.13 unless something already listens there (another run, another service);
    then 127.0.N.11/.12/.13 for the first free N.
    """
    for n in range(0, 64):
        ips = (f"127.0.{n}.11", f"127.0.{n}.12", f"127.0.{n}.13")
        if all(bindable(ip, port) for ip in ips for port in PORTS):
            print(*ips)
            return 0
    print("no three free loopback addresses for ports", PORTS, file=sys.stderr)
    return 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by run.sh) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_http(args) -> int:
    """Polls URL until it answers (with --status if given); fails when the process dies or time runs out."""
    url = urllib.parse.urlsplit(args.url)
    deadline = time.monotonic() + args.timeout
    context = None
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=args.cafile)
    last = "no answer yet"
    delay = 0.05
    while True:
        if args.pid and not pid_alive(args.pid):
            print(f"{args.name}: process {args.pid} exited while waiting for {args.url}", file=sys.stderr)
            return 1
        try:
            if context is not None:
                conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=5, context=context)
            else:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
            path = url.path + (f"?{url.query}" if url.query else "")
            conn.request("GET", path or "/")
            response = conn.getresponse()
            response.read()
            conn.close()
            if args.status is None or response.status == args.status:
                return 0
            last = f"status {response.status}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            print(f"{args.name}: {args.url} not ready after {args.timeout}s ({last})", file=sys.stderr)
            return 1
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("pick-addrs")
    p.set_defaults(func=pick_addrs)
    p = sub.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("--name", default="server")
    p.add_argument("--pid", type=int)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--status", type=int)
    p.add_argument("--cafile")
    p.set_defaults(func=wait_http)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
