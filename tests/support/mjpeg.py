"""A real network camera for tests: an HTTP server streaming one picture as MJPEG (multipart/x-mixed-replace),
as cheap IP cameras do, that a test can take down (every connection closed, the port refused)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2


class MjpegCamera:
    def __init__(self, picture: Path, fps: float = 10.0) -> None:
        self._jpeg = cv2.imencode(".jpg", cv2.imread(str(picture)))[1].tobytes()
        self._period = 1.0 / fps
        with socket.socket() as probe:  # a free port, kept across a restart
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/video.mjpg"
        self._server: ThreadingHTTPServer | None = None
        self._up = threading.Event()

    def start(self) -> "MjpegCamera":
        camera = self

        class Stream(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera._up.is_set():
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(camera._jpeg) + camera._jpeg + b"\r\n")
                        time.sleep(camera._period)
                except OSError:
                    pass  # the reader went away

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Stream)
        self._server.daemon_threads = True
        self._up.set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the streams end (their connections close) and new connections are refused."""
        self._up.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "MjpegCamera":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
