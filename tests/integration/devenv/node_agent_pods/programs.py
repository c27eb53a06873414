"""Small programs the node-agent tests run as Pods: `python programs.py NAME [ARGS...]`.

They use only the standard library, print with flush so the container log shows progress at once,
and say what happened to them (SIGTERM, requests) in their log.
"""

from __future__ import annotations

import http.server
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.request

TERMINATING = threading.Event()
"""Set on SIGTERM. A /slow request is still in flight then by construction, however slowly the
scale-down reaches the Pod on a loaded machine: it waits for SIGTERM (at most 10 s), then works 2 s."""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            print(f"started {self.path}", flush=True)
            TERMINATING.wait(10)
            time.sleep(2)
        body = f"{os.environ.get('POD_NAME', '?')} {os.environ.get('POD_IP', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(f"served {self.path}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True
    allow_reuse_address = True


def serve(port: str) -> None:
    """HTTP on 0.0.0.0:PORT; on SIGTERM stop accepting, finish requests in flight, exit 0."""
    server = _Server(("0.0.0.0", int(port)), _Handler)

    def on_term(*_: object) -> None:
        print("got SIGTERM", flush=True)
        TERMINATING.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    print(f"listening on {port}", flush=True)
    server.serve_forever()
    server.server_close()
    print("drained, exiting", flush=True)


def fetch(url: str) -> None:
    """GET URL and print the body; exit 1 on failure (retry a few times while names appear)."""
    for _ in range(20):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                print("fetched", response.read().decode().strip(), flush=True)
                return
        except OSError as exc:
            print("retrying:", exc, flush=True)
            time.sleep(0.5)
    sys.exit(1)


def crash(code: str) -> None:
    print("crashing with", code, flush=True)
    sys.exit(int(code))


def hog(megabytes: str) -> None:
    """Allocate and touch MEGABYTES, then sleep."""
    block = bytearray(int(megabytes) * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("allocated", megabytes, "MB", flush=True)
    time.sleep(3600)


def prefork(shared_mb: str, children: str, child_mb: str) -> None:
    """Like a prefork worker: a parent holding SHARED_MB forks CHILDREN that each allocate CHILD_MB,
    live a moment and are replaced, over and over."""
    shared = bytearray(int(shared_mb) * 2**20)
    for i in range(0, len(shared), 4096):
        shared[i] = 1
    recycled = 0
    alive: list[int] = []
    while True:
        while len(alive) < int(children):
            pid = os.fork()
            if pid == 0:
                own = bytearray(int(child_mb) * 2**20)
                for i in range(0, len(own), 4096):
                    own[i] = 1
                sum(shared[i] for i in range(0, len(shared), 4096))  # read the shared pages (the sum is unused)
                time.sleep(1.0)
                os._exit(0)
            alive.append(pid)
        pid, _ = os.wait()
        alive.remove(pid)
        recycled += 1
        print("recycled", recycled, flush=True)


def sleep() -> None:
    print("sleeping", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    programs = {"serve": serve, "fetch": fetch, "crash": crash, "hog": hog, "prefork": prefork, "sleep": sleep}
    programs[sys.argv[1]](*sys.argv[2:])  # type: ignore[operator]
