"""What a stranger on the machine tries against every port of the embedded S3 server (stdlib only: it runs as
`nobody` under the system Python).

Usage: python port_probe.py '{"ports": [...], "bucket": "documents", "key": "...", "secret": "..."}'
Prints a JSON list of findings: each a request that returned or accepted object data without credentials, or a
gRPC port that spoke HTTP/2 to a client without our certificate. An empty list means every door held.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
BOUNDARY = "probe-boundary"


def _requests(bucket: str, key: str) -> list[tuple[str, str, bytes, dict]]:
    form = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"evil.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\nwritten by a stranger\r\n--{BOUNDARY}--\r\n").encode()
    multipart = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return [
        ("GET", f"/buckets/{bucket}/{key}", b"", {}),  # filer read
        ("GET", f"/buckets/{bucket}/", b"", {"Accept": "application/json"}),  # filer listing
        ("GET", "/buckets/backups/daily/", b"", {"Accept": "application/json"}),
        ("POST", f"/buckets/{bucket}/", form, multipart),  # filer write
        ("PUT", f"/buckets/{bucket}/evil.txt", b"written by a stranger", {}),
        ("DELETE", f"/buckets/{bucket}/{key}", b"", {}),  # filer delete
        ("GET", "/dir/assign", b"", {}),  # master: a file id and a write token
        ("POST", "/dir/assign", b"", {}),
        ("GET", "/dir/lookup?volumeId=1", b"", {}),
        ("POST", "/submit", form, multipart),  # master: assign and write in one step
        ("GET", "/1,0100000000", b"", {}),  # volume read
        ("POST", "/1,0200000000", form, multipart),  # volume write
        ("GET", f"/{bucket}/{key}", b"", {}),  # anonymous S3 read
        ("PUT", f"/{bucket}/evil.txt", b"written by a stranger", {}),  # anonymous S3 write
        ("GET", f"/{bucket}?list-type=2", b"", {}),  # anonymous S3 listing
        ("GET", "/api/s3/buckets", b"", {}),  # admin API
        ("GET", "/object-store/buckets", b"", {}),  # admin UI
        ("GET", f"/files?path=/buckets/{bucket}", b"", {}),  # admin file browser
    ]


def _http(port: int, tls: bool, method: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes] | None:
    """The status and body, or None when the connection or TLS handshake was refused."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(1 << 20)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _speaks_h2(port: int, tls: bool) -> bool:
    """Whether the port answers an HTTP/2 (gRPC) client that has no certificate with a SETTINGS frame."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return False
    try:
        sock = raw
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(H2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = sock.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
        return header[3] == 0x04  # frame type SETTINGS: an HTTP/2 server is talking to us
    except (OSError, ssl.SSLError):
        return False
    finally:
        raw.close()


def probe(ports: list[int], bucket: str, key: str, secret: str) -> list[str]:
    findings = []
    for port in ports:
        for tls in (False, True):
            scheme = "https" if tls else "http"
            for method, path, body, headers in _requests(bucket, key):
                answer = _http(port, tls, method, path, body, headers)
                if answer is None:
                    continue
                status, content = answer
                if secret.encode() in content:
                    findings.append(f"{method} {scheme}://127.0.0.1:{port}{path} returned the object's content")
                elif 200 <= status < 300:
                    findings.append(f"{method} {scheme}://127.0.0.1:{port}{path} answered {status}")
            if _speaks_h2(port, tls):
                findings.append(f"port {port} spoke HTTP/2 ({'TLS' if tls else 'plain'}) to a client without a "
                                "certificate")
    return findings


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    print(json.dumps(probe(args["ports"], args["bucket"], args["key"], args["secret"])))
