"""A TCP relay on loopback between the browser and a gateway, so a test can cut every
connection through it at once (a network drop, as the page sees it) and hold the next
ones back for a while (the page reconnects into a slow network, not a refusal)."""

from __future__ import annotations

import socket
import threading
import time

from terra.ops.servers import LOOPBACK


class CuttableRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = (LOOPBACK, upstream_port)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._hold_until = 0.0
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, hold_s: float = 0.0) -> None:
        """Drop every open connection; new ones wait `hold_s` before they are relayed."""
        self._hold_until = time.monotonic() + hold_s
        with self._lock:
            pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            for end in pair:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
        self.cuts += 1

    def close(self) -> None:
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        wait = self._hold_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        with self._lock:
            self._pairs.add(pair)
        threading.Thread(target=self._pump, args=(upstream, client, pair), daemon=True).start()
        self._pump(client, upstream, pair)

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for end in pair:
                try:
                    end.close()
                except OSError:
                    pass
