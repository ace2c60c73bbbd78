"""Tiny recording HTTP server that pretends to be a LanceDB Cloud endpoint.

Used to record the wire traffic of the official `lancedb` Python client
(see ../../WIRE_TRACES.md). Not part of the test suite.

    python wire_recorder.py --port 18080 --log /tmp/wire.jsonl [--phalanx 0.3.0|none]

Every request is appended to the log as one JSON object. Responses are
"plausible" canned answers that let the client proceed. A per-table store of
the received Arrow data is kept so that describe/query answer consistently.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.ipc as ipc

# ---------------------------------------------------------------- lance json schema


def _lance_type(t: pa.DataType) -> dict:
    simple = {
        pa.null(): "null",
        pa.bool_(): "bool",
        pa.int8(): "int8",
        pa.int16(): "int16",
        pa.int32(): "int32",
        pa.int64(): "int64",
        pa.uint8(): "uint8",
        pa.uint16(): "uint16",
        pa.uint32(): "uint32",
        pa.uint64(): "uint64",
        pa.float16(): "halffloat",
        pa.float32(): "float",
        pa.float64(): "double",
        pa.string(): "string",
        pa.binary(): "binary",
        pa.large_string(): "large_string",
        pa.large_binary(): "large_binary",
        pa.date32(): "date32:day",
        pa.date64(): "date64:ms",
    }
    for k, v in simple.items():
        if t == k:
            return {"type": v}
    if pa.types.is_fixed_size_list(t):
        return {
            "type": "fixed_size_list",
            "fields": [lance_field(t.value_field)],
            "length": t.list_size,
        }
    if pa.types.is_large_list(t):
        return {"type": "large_list", "fields": [lance_field(t.value_field)]}
    if pa.types.is_list(t):
        return {"type": "list", "fields": [lance_field(t.value_field)]}
    if pa.types.is_struct(t):
        return {"type": "struct", "fields": [lance_field(t.field(i)) for i in range(t.num_fields)]}
    if pa.types.is_timestamp(t):
        return {"type": f"timestamp:{t.unit}:{t.tz or '-'}"}
    if pa.types.is_fixed_size_binary(t):
        return {"type": "fixed_size_binary", "length": t.byte_width}
    raise ValueError(f"unsupported type {t}")


def lance_field(f: pa.Field) -> dict:
    d = {"name": f.name, "type": _lance_type(f.type), "nullable": f.nullable}
    if f.metadata:
        d["metadata"] = {k.decode(): v.decode() for k, v in f.metadata.items()}
    return d


def lance_schema(s: pa.Schema) -> dict:
    d = {"fields": [lance_field(f) for f in s]}
    if s.metadata:
        d["metadata"] = {k.decode(): v.decode() for k, v in s.metadata.items()}
    return d


# ---------------------------------------------------------------- state

LOCK = threading.Lock()
TABLES: dict[str, dict] = {}  # name -> {"versions": [pa.Table,...]}
CONFIG = {
    "phalanx": "0.3.0",
    "log": None,
    # path-regex -> (status, body) ; consumed by tests of error behaviour
    "inject": [],
}


def log(entry: dict) -> None:
    with LOCK:
        with open(CONFIG["log"], "a") as f:
            f.write(json.dumps(entry) + "\n")


def arrow_file_bytes(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue()


# ---------------------------------------------------------------- handler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # silence
        pass

    def _read_body(self) -> tuple[bytes, bool]:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    # trailers
                    while True:
                        l2 = self.rfile.readline()
                        if l2 in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            return bytes(out), True
        n = int(self.headers.get("Content-Length", "0") or 0)
        return (self.rfile.read(n) if n else b""), False

    def _send(self, status: int, body: bytes = b"", ctype: str | None = None, extra=None):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if CONFIG["phalanx"]:
            self.send_header("phalanx-version", CONFIG["phalanx"])
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status, obj, extra=None):
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_HEAD(self):
        self._handle("HEAD")

    def _handle(self, method: str):
        parsed = urllib.parse.urlsplit(self.path)
        body, chunked = self._read_body()
        entry = {
            "method": method,
            "raw_path": self.path,
            "path": parsed.path,
            "query": parsed.query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "chunked": chunked,
            "body_len": len(body),
        }
        ctype = self.headers.get("Content-Type", "")
        decoded = None
        if ctype.startswith("application/vnd.apache.arrow.stream") and body:
            try:
                r = ipc.open_stream(pa.BufferReader(body))
                t = r.read_all()
                decoded = t
                comp = None
                try:
                    import pyarrow.parquet  # noqa: F401
                    msg_reader = ipc.MessageReader.open_stream(pa.BufferReader(body))
                    msgs = [m.type for m in msg_reader]
                except Exception:  # noqa: BLE001
                    msgs = None
                # Body compression is recorded in the RecordBatch flatbuffer; detect the LZ4 frame magic.
                comp = "lz4_frame" if b"\x04\x22\x4d\x18" in body else "none"
                entry["arrow"] = {
                    "decodes": True,
                    "messages": msgs,
                    "compression_guess": comp,
                    "schema": str(t.schema),
                    "schema_metadata": {k.decode(): v.decode()[:200] for k, v in (t.schema.metadata or {}).items()},
                    "num_rows": t.num_rows,
                    "num_batches": len(t.to_batches()),
                }
            except Exception as e:  # noqa: BLE001
                entry["arrow"] = {"decodes": False, "error": repr(e)}
        elif body:
            try:
                entry["json"] = json.loads(body)
                entry["body"] = body.decode()
            except Exception:  # noqa: BLE001
                entry["body_raw"] = body[:500].decode("latin1")
        else:
            entry["body"] = None  # no body at all

        try:
            status, resp = self._route(method, parsed, entry, decoded)
        except Exception as e:  # noqa: BLE001
            entry["server_error"] = repr(e)
            self._send(500, repr(e).encode(), "text/plain")
            status = 500
        entry["response_status"] = status
        log(entry)

    # -------------------------------------------------------------- routing
    def _route(self, method, parsed, entry, decoded):
        path = parsed.path
        q = urllib.parse.parse_qs(parsed.query)
        for pat, status, text in CONFIG["inject"]:
            if re.search(pat, path):
                self._send(status, text.encode(), "text/plain")
                return status, text

        if path == "/__ctl/inject":
            CONFIG["inject"] = [tuple(x) for x in entry.get("json", [])]
            self._json(200, {})
            return 200, None
        if path == "/__ctl/phalanx":
            CONFIG["phalanx"] = entry.get("json")
            self._json(200, {})
            return 200, None

        if path in ("/v1/table/", "/v1/table") or re.match(r"^/v1/namespace/.*/table/list$", path):
            names = sorted(TABLES)
            token = q.get("page_token", [None])[0]
            limit = int(q.get("limit", ["1000"])[0])
            if token:
                names = [n for n in names if n > token]
            page = names[:limit]
            nxt = page[-1] if (page and len(names) > limit) else None
            self._json(200, {"tables": page, "page_token": nxt})
            return 200, None

        m = re.match(r"^/v1/table/([^/]+)/([a-z_/]+?)/?$", path)
        if not m:
            self._send(404, b"no route", "text/plain")
            return 404, None
        name, op = m.group(1), m.group(2)
        tbl = TABLES.get(name)

        if op == "create":
            mode = q.get("mode", ["create"])[0]
            if tbl is not None and mode == "create":
                self._send(400, f"Table '{name}' already exists".encode(), "text/plain")
                return 400, None
            if tbl is not None and mode == "exist_ok":
                self._send(200)
                return 200, None
            TABLES[name] = {"versions": [decoded]}
            self._send(200)
            return 200, None

        if tbl is None:
            self._send(404, f"Table '{name}' not found".encode(), "text/plain")
            return 404, None
        ver = len(tbl["versions"])
        vh = {"x-lancedb-version": str(ver)}
        req_json = entry.get("json") or {}
        req_ver = req_json.get("version") if isinstance(req_json, dict) else None
        if req_ver and req_ver > ver:
            self._send(404, f"Table '{name}' version {req_ver} not found".encode(), "text/plain")
            return 404, None
        cur = tbl["versions"][(req_ver or ver) - 1]

        if op == "describe":
            self._json(200, {"version": req_ver or ver, "schema": lance_schema(cur.schema)}, vh)
            return 200, None
        if op == "insert":
            if q.get("mode", [""])[0] == "overwrite":
                tbl["versions"].append(decoded)
            else:
                tbl["versions"].append(pa.concat_tables([cur, decoded.cast(cur.schema)]))
            self._json(200, {"version": ver + 1}, {"x-lancedb-version": str(ver + 1)})
            return 200, None
        if op == "count_rows":
            self._send(200, str(cur.num_rows).encode(), "application/json", vh)
            return 200, None
        if op == "delete":
            tbl["versions"].append(cur.slice(1))
            self._json(200, {"num_deleted_rows": 1, "version": ver + 1}, {"x-lancedb-version": str(ver + 1)})
            return 200, None
        if op == "drop":
            del TABLES[name]
            self._send(200)
            return 200, None
        if op == "query":
            k = req_json.get("k", 10)
            off = req_json.get("offset") or 0
            k = min(k, cur.num_rows)
            out = cur.slice(off, k)
            cols = req_json.get("columns")
            if isinstance(cols, list):
                out = out.select(cols)
            vec = req_json.get("vector")
            multi = bool(vec) and isinstance(vec[0], list)
            if vec:
                out = out.append_column("_distance", pa.array([0.5] * out.num_rows, pa.float32()))
            if req_json.get("with_row_id"):
                out = out.append_column("_rowid", pa.array(range(out.num_rows), pa.uint64()))
            if multi:
                parts = []
                for i in range(len(vec)):
                    parts.append(out.append_column("query_index", pa.array([i] * out.num_rows, pa.int32())))
                out = pa.concat_tables(parts)
            self._send(200, arrow_file_bytes(out), "application/vnd.apache.arrow.file", vh)
            return 200, None
        if op == "version/list":
            self._json(200, {"versions": [{"version": i + 1, "timestamp": "2026-01-01T00:00:00Z"} for i in range(ver)]})
            return 200, None
        self._json(200, {})
        return 200, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--log", default="/tmp/wire.jsonl")
    ap.add_argument("--phalanx", default="0.3.0")
    a = ap.parse_args()
    CONFIG["log"] = a.log
    CONFIG["phalanx"] = None if a.phalanx == "none" else a.phalanx
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"listening on {a.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
