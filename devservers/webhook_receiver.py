#!/usr/bin/env python3
"""A webhook receiver for trying the scheduler: prints each delivery and whether it verifies.

    .venv/bin/python devservers/webhook_receiver.py --port 9000 --secret 'whsec_...'

Answers 200 to a delivery whose signature verifies (or to any delivery without --secret) and
401 otherwise. Standard library only. `verify_webhook` is the one of docs/WEBHOOKS.md
(tests/unit/docs/test_webhooks_doc.py keeps the two equal).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_MS = 5 * 60 * 1000  # refuse a delivery signed more than 5 minutes away from now


def verify_webhook(
    secret: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now_ms: int | None = None,
    tolerance_ms: int = TOLERANCE_MS,
) -> bool:
    """True when the delivery is recent and one of its v1= signatures matches.

    secret: the application's whole signing secret, "whsec_" included.
    timestamp: the X-Scheduler-Timestamp header; signature_header: X-Scheduler-Signature.
    body: the raw request body, exactly as received.
    """
    if not timestamp.isdigit():
        return False
    now = int(time.time() * 1000) if now_ms is None else now_ms  # noqa: TID251
    if abs(now - int(timestamp)) > tolerance_ms:
        return False
    signed = timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    expected = "v1=" + digest
    return any(hmac.compare_digest(expected, part) for part in signature_header.split())


def handler(secret: str | None) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            verified = secret is None or verify_webhook(
                secret,
                self.headers.get("X-Scheduler-Timestamp", ""),
                self.headers.get("X-Scheduler-Signature", ""),
                body,
            )
            arrived_ms = int(time.time() * 1000)  # noqa: TID251
            print(
                json.dumps(
                    {
                        "messageId": self.headers.get("X-Scheduler-Message-Id"),
                        "dueAt": self.headers.get("X-Scheduler-Due-At"),
                        "attempt": self.headers.get("X-Scheduler-Attempt"),
                        "arrivedMs": arrived_ms,
                        "signature": "ok" if verified else "REFUSED",
                        "body": body.decode("utf-8", "replace"),
                    }
                ),
                flush=True,
            )
            self.send_response(200 if verified else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one JSON line per delivery is printed instead

    return Receiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", help="the application's signing secret (whsec_...)")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), handler(args.secret))
    print(f"listening on http://{args.host}:{server.server_port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
