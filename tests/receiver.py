"""Real local receivers for alert notifications: an HTTP server that records what it is
sent and answers as a test scripts it, and a minimal SMTP server. Each runs in a thread
on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    """``answers``: the status for each request in turn (the last one repeats); ``"hang"``
    holds the request open until the receiver stops (or ``release()``)."""

    def __init__(self, answers=(200,)) -> None:
        self.answers = list(answers)
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.headers: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    index = len(receiver.received) - 1
                    answer = receiver.answers[min(index, len(receiver.answers) - 1)]
                if answer == "hang":
                    receiver.released.wait(30)
                    return
                self.send_response(answer)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                text = b"ok" if answer < 400 else b"no thanks"
                if 300 <= answer < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [item.json() for item in self.received]


class SMTPReceiver:
    """Just enough SMTP (no TLS, no auth) for Django's backend to hand over a message.
    ``refuse_rcpt`` answers RCPT TO with a permanent 550."""

    def __init__(self, *, refuse_rcpt: bool = False) -> None:
        self.messages: list[dict] = []
        receiver = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                self.reply("220 test ESMTP")
                message = {"from": "", "to": [], "data": ""}
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 test")
                    elif verb == "MAIL":
                        message["from"] = command
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        if refuse_rcpt:
                            self.reply("550 no such user")
                            continue
                        message["to"].append(command)
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        lines = []
                        while (data := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(data.decode())
                        message["data"] = "".join(lines)
                        receiver.messages.append(dict(message))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> SMTPReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
