#!/usr/bin/env python3
"""A strict stand-in for Elasticsearch's HTTP API as the elasticsearch sink uses it.

No Elasticsearch or OpenSearch runs in this repository's tests: this server implements, from
Elastic's documentation, the parts the sink talks to, and refuses what it does not implement rather
than guessing:

- GET /                            cluster info (version.number; version.distribution for OpenSearch)
- POST /_bulk, POST /{index}/_bulk  NDJSON action/source pairs, final newline required; per-item
                                   results; "errors": true when an item failed; index, create,
                                   delete, update (doc, doc_as_upsert, upsert; no scripts)
- GET/POST /_mget                  realtime reads of documents by _index, _id and routing
- versioning                       internal, external (conflict when provided <= current) and
                                   external_gte (conflict when provided < current); deletes leave a
                                   versioned tombstone for index.gc_deletes (default 60s)
- dynamic mappings                 the first value of a field fixes its type (long, double, boolean,
                                   keyword, object); a later value of another kind is a 400
                                   document_parsing_exception, as in Elasticsearch 8
- PUT /{index}                     create an index with settings (index.gc_deletes) and mappings
- GET /{index}/_settings           settings, with include_defaults
- POST /{index}/_delete_by_query   match_all only
- auth                             basic, ApiKey or Bearer; 401 security_exception otherwise
- Content-Encoding: gzip request bodies; http.max_content_length (413)

Control (no auth), for the tests:
- POST /_control/faults  {"request_statuses": [429, 503, ...]}   the next requests answer these
                         {"item_statuses": {"count": N, "status": 429}}  the next N bulk items
                         {"item_ids": {"ID": [429, 429]}}        items of this _id, one status each
                         {"reject_all": 429}  every _bulk answers this until cleared (null)
                         {"auto_create": false}, {"max_content_length": BYTES}, {"delay_ms": N}
- GET  /_control/state   indices with their documents, versions and tombstones; the log of
                         applied writes in order; request and item counters
- POST /_control/reset   forget everything

Usage: es_test_server.py --port-file PATH [--port N] [--user U --password P | --api-key K |
       --bearer T] [--distribution opensearch] [--no-log]
"""

import argparse
import gzip
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MAX_VERSION = 2**63 - 1
DEFAULT_GC_DELETES = 60.0
ACTIONS = ("index", "create", "update", "delete")
# Metadata the bulk API accepts on an action line (Elasticsearch 8 docs, "Bulk API").
KNOWN_METADATA = {
    "_index", "_id", "routing", "version", "version_type", "if_seq_no", "if_primary_term",
    "pipeline", "require_alias", "retry_on_conflict", "dynamic_templates", "op_type",
    "require_data_stream", "list_executed_pipelines",
}
INDEX_NAME_FORBIDDEN = set('\\/*?"<>| ,#:')

def error_body(status, etype, reason, **extra):
    cause = {"type": etype, "reason": reason}
    cause.update(extra)
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def item_error(etype, reason, **extra):
    error = {"type": etype, "reason": reason}
    error.update(extra)
    return error


def field_kind(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "keyword"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return None  # arrays take their elements' type
    return None  # null: no mapping


class Index:
    def __init__(self, name, settings=None, mappings=None):
        self.name = name
        self.docs = {}        # (routing, id) -> {"source", "version", "seq_no"}
        self.tombstones = {}  # (routing, id) -> (version, monotonic time)
        self.settings = {"index.gc_deletes": "60s", "index.number_of_shards": "1"}
        for key, value in (settings or {}).items():
            self.settings[key if key.startswith("index.") else "index." + key] = str(value)
        self.mappings = dict(mappings or {})  # field -> type
        self.seq_no = 0

    def gc_deletes_seconds(self):
        text = self.settings.get("index.gc_deletes", "60s")
        match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
        if not match:
            return DEFAULT_GC_DELETES
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int(match.group(1)) * scale

    def current_version(self, key):
        """The version a write must beat: the document's, or a live tombstone's."""
        if key in self.docs:
            return self.docs[key]["version"]
        tomb = self.tombstones.get(key)
        if tomb and time.monotonic() - tomb[1] < self.gc_deletes_seconds():
            return tomb[0]
        return None

    def check_mapping(self, source, doc_id, prefix=""):
        """Applies dynamic mapping; returns an error dict for a value the mapping refuses."""
        for field, value in source.items():
            path = prefix + field
            values = value if isinstance(value, list) else [value]
            for element in values:
                kind = field_kind(element)
                if kind is None:
                    continue
                mapped = self.mappings.get(path)
                if mapped is None:
                    self.mappings[path] = kind
                    mapped = kind
                if mapped == "object":
                    if kind != "object":
                        return item_error(
                            "document_parsing_exception",
                            f"[1:2] object mapping for [{path}] tried to parse field [{path}] as "
                            f"object, but found a concrete value")
                    error = self.check_mapping(element, doc_id, path + ".")
                    if error:
                        return error
                    continue
                if kind == "object":
                    return item_error(
                        "document_parsing_exception",
                        f"[1:2] failed to parse field [{path}] of type [{mapped}] in document "
                        f"with id '{doc_id}'. Preview of field's value: '{json.dumps(element)}'",
                        caused_by={"type": "illegal_state_exception",
                                   "reason": "Can't get text on a START_OBJECT"})
                if mapped in ("long", "double") and kind == "keyword":
                    try:
                        float(element)
                    except ValueError:
                        return item_error(
                            "document_parsing_exception",
                            f"[1:2] failed to parse field [{path}] of type [{mapped}] in "
                            f"document with id '{doc_id}'. Preview of field's value: "
                            f"'{element}'",
                            caused_by={"type": "number_format_exception",
                                       "reason": f"For input string: \"{element}\""})
                if mapped == "long" and kind == "double" and element != int(element):
                    pass  # Elasticsearch truncates doubles into long fields
                if mapped == "boolean" and kind not in ("boolean",) and element not in (
                        "true", "false", ""):
                    return item_error(
                        "document_parsing_exception",
                        f"[1:2] failed to parse field [{path}] of type [boolean] in document "
                        f"with id '{doc_id}'. Preview of field's value: '{element}'",
                        caused_by={"type": "illegal_argument_exception",
                                   "reason": f"Failed to parse value [{element}] as only "
                                             f"[true] or [false] are allowed."})
        return None


class State:
    def __init__(self, keep_log=True):
        self.lock = threading.Lock()
        self.keep_log = keep_log
        self.reset()

    def reset(self):
        self.indices = {}
        self.log = []
        self.request_statuses = []
        self.item_statuses = None
        self.item_ids = {}
        self.reject_all = None
        self.auto_create = True
        self.max_content_length = 100 * 1024 * 1024
        self.delay_ms = 0
        self.counters = {"requests": 0, "bulk_requests": 0, "mget_requests": 0, "items": 0,
                         "item_failures": 0, "bytes": 0, "wire_bytes": 0,
                         "failures_by_status": {}}

    def snapshot(self):
        indices = {}
        for name, index in self.indices.items():
            docs = {}
            for (routing, doc_id), doc in index.docs.items():
                docs[doc_id] = {"_source": doc["source"], "_version": doc["version"],
                                "routing": routing}
            tombs = {doc_id: version for (routing, doc_id), (version, _) in
                     index.tombstones.items()}
            indices[name] = {"docs": docs, "tombstones": tombs, "settings": index.settings,
                             "mappings": index.mappings}
        return {"indices": indices, "log": self.log, "counters": self.counters}


def valid_index_name(name):
    if not name or len(name.encode()) > 255 or name in (".", ".."):
        return False
    if name[0] in "-_+" or name != name.lower():
        return False
    return not any(c in INDEX_NAME_FORBIDDEN for c in name)


class BulkItemError(Exception):
    def __init__(self, status, error):
        super().__init__(error.get("reason"))
        self.status = status
        self.error = error


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "es-test-server"

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            raw = b"".join(chunks)
        else:
            raw = self.rfile.read(length) if length else b""
        return raw

    def authorized(self):
        auth = self.server.auth
        if auth is None:
            return True
        header = self.headers.get("Authorization", "")
        return header == auth

    def route(self):
        state = self.server.state
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self.read_body()
        if parts and parts[0] == "_control":
            return self.control(parts[1:], raw)
        with state.lock:
            state.counters["requests"] += 1
            status = state.request_statuses.pop(0) if state.request_statuses else None
            delay = state.delay_ms
            max_length = state.max_content_length
        if delay:
            time.sleep(delay / 1000)
        if not self.authorized():
            return self.send_json(401, error_body(
                401, "security_exception",
                f"unable to authenticate user for REST request [{url.path}]",
                header={"WWW-Authenticate": ["Basic realm=\"security\" charset=\"UTF-8\"",
                                             "ApiKey"]}))
        if status is not None:
            return self.injected(status)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(raw)
            except OSError as exc:
                return self.send_json(400, error_body(400, "parse_exception",
                                                      f"invalid gzip body: {exc}"))
        elif self.headers.get("Content-Encoding"):
            return self.send_json(400, error_body(
                400, "illegal_argument_exception",
                f"unsupported Content-Encoding {self.headers.get('Content-Encoding')}"))
        else:
            body = raw
        if len(body) > max_length:
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with state.lock:
            state.counters["wire_bytes"] += len(raw)
            state.counters["bytes"] += len(body)
        method = self.command
        if method in ("GET", "HEAD") and not parts:
            return self.send_json(200, self.server.info)
        if parts and parts[-1] == "_bulk" and len(parts) <= 2 and method in ("POST", "PUT"):
            return self.bulk(parts[0] if len(parts) == 2 else None, query, body)
        if parts == ["_mget"] and method in ("GET", "POST"):
            return self.mget(body)
        if len(parts) == 2 and parts[1] == "_settings" and method == "GET":
            return self.get_settings(parts[0], query)
        if len(parts) == 3 and parts[1] == "_settings" and method == "GET":
            return self.get_settings(parts[0], query)
        if len(parts) == 2 and parts[1] == "_delete_by_query" and method == "POST":
            return self.delete_by_query(parts[0], body)
        if len(parts) == 1 and method == "PUT":
            return self.create_index(parts[0], body)
        if len(parts) == 1 and method == "DELETE":
            with state.lock:
                if state.indices.pop(parts[0], None) is None:
                    return self.send_json(404, self.no_such_index(parts[0]))
            return self.send_json(200, {"acknowledged": True})
        return self.send_json(400, error_body(
            400, "illegal_argument_exception",
            f"this test server does not implement {method} {url.path}"))

    def injected(self, status):
        if status == 413:
            self.send_response(413)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if status == 429:
            return self.send_json(429, error_body(
                429, "es_rejected_execution_exception",
                "rejected execution of coordinating operation [injected]"))
        if status == 401:
            return self.send_json(401, error_body(401, "security_exception", "injected 401"))
        return self.send_json(status, error_body(status, "injected_exception",
                                                 f"injected status {status}"))

    @staticmethod
    def no_such_index(name):
        return error_body(404, "index_not_found_exception", f"no such index [{name}]",
                          index=name, **{"resource.type": "index_or_alias",
                                         "resource.id": name})

    # -- control ----------------------------------------------------------------------------
    def control(self, parts, raw):
        state = self.server.state
        if parts == ["state"]:
            with state.lock:
                return self.send_json(200, state.snapshot())
        if parts == ["reset"]:
            with state.lock:
                state.reset()
            return self.send_json(200, {"ok": True})
        if parts == ["faults"]:
            faults = json.loads(raw or b"{}")
            with state.lock:
                if "request_statuses" in faults:
                    state.request_statuses = list(faults["request_statuses"])
                if "item_statuses" in faults:
                    state.item_statuses = faults["item_statuses"]
                if "item_ids" in faults:
                    state.item_ids = {k: list(v) for k, v in faults["item_ids"].items()}
                if "reject_all" in faults:
                    state.reject_all = faults["reject_all"]
                if "auto_create" in faults:
                    state.auto_create = bool(faults["auto_create"])
                if "max_content_length" in faults:
                    state.max_content_length = int(faults["max_content_length"])
                if "delay_ms" in faults:
                    state.delay_ms = int(faults["delay_ms"])
            return self.send_json(200, {"ok": True})
        return self.send_json(404, {"error": "unknown control endpoint"})

    # -- multi get ---------------------------------------------------------------------------
    def mget(self, body):
        """GET/POST /_mget with {"docs": [{"_index", "_id", "routing"?}]}: realtime reads."""
        try:
            request = json.loads(body or b"{}")
        except ValueError as exc:
            return self.send_json(400, error_body(400, "parse_exception", str(exc)))
        docs = request.get("docs") if isinstance(request, dict) else None
        if not isinstance(docs, list) or not docs:
            return self.send_json(400, error_body(
                400, "action_request_validation_exception",
                "Validation Failed: 1: no documents to get;"))
        state = self.server.state
        out = []
        with state.lock:
            state.counters["mget_requests"] += 1
            for doc in docs:
                unknown = set(doc) - {"_index", "_id", "routing", "_source"}
                if unknown or "_index" not in doc or "_id" not in doc:
                    return self.send_json(400, error_body(
                        400, "action_request_validation_exception",
                        f"Validation Failed: 1: bad mget doc {doc};"))
                name, doc_id = doc["_index"], str(doc["_id"])
                index = state.indices.get(name)
                if index is None:
                    out.append({"_index": name, "_id": doc_id,
                                "error": self.no_such_index(name)["error"]})
                    continue
                stored = index.docs.get((doc.get("routing"), doc_id))
                if stored is None:
                    out.append({"_index": name, "_id": doc_id, "found": False})
                    continue
                out.append({"_index": name, "_id": doc_id, "_version": stored["version"],
                            "_seq_no": 0, "_primary_term": 1, "found": True,
                            "_source": stored["source"]})
        return self.send_json(200, {"docs": out})

    # -- index admin ------------------------------------------------------------------------
    def create_index(self, name, body):
        state = self.server.state
        if not valid_index_name(name):
            return self.send_json(400, error_body(400, "invalid_index_name_exception",
                                                  f"Invalid index name [{name}]", index=name))
        request = json.loads(body or b"{}")
        settings = request.get("settings", {})
        flat = {}

        def flatten(prefix, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    flatten(f"{prefix}.{k}" if prefix else k, v)
            else:
                flat[prefix] = value
        flatten("", settings)
        mappings = {k: v.get("type", "object") for k, v in
                    request.get("mappings", {}).get("properties", {}).items()}
        with state.lock:
            if name in state.indices:
                return self.send_json(400, error_body(
                    400, "resource_already_exists_exception",
                    f"index [{name}/uuid] already exists", index=name))
            state.indices[name] = Index(name, flat, mappings)
        return self.send_json(200, {"acknowledged": True, "shards_acknowledged": True,
                                    "index": name})

    def get_settings(self, name, query):
        state = self.server.state
        with state.lock:
            index = state.indices.get(name)
            if index is None:
                return self.send_json(404, self.no_such_index(name))
            settings = dict(index.settings)
        result = {"settings": settings}
        if query.get("include_defaults") in ("", "true"):
            result["defaults"] = {"index.refresh_interval": "1s"}
        if query.get("flat_settings") not in ("", "true"):
            return self.send_json(400, error_body(400, "illegal_argument_exception",
                                                  "this test server answers flat_settings only"))
        return self.send_json(200, {name: result})

    def delete_by_query(self, name, body):
        state = self.server.state
        request = json.loads(body or b"{}")
        if request != {"query": {"match_all": {}}}:
            return self.send_json(400, error_body(400, "illegal_argument_exception",
                                                  "this test server supports match_all only"))
        with state.lock:
            index = state.indices.get(name)
            if index is None:
                return self.send_json(404, self.no_such_index(name))
            now = time.monotonic()
            deleted = len(index.docs)
            for key, doc in index.docs.items():
                index.tombstones[key] = (doc["version"], now)
                if state.keep_log:
                    state.log.append({"op": "delete", "index": name, "id": key[1],
                                      "version": doc["version"]})
            index.docs.clear()
        return self.send_json(200, {"took": 1, "timed_out": False, "total": deleted,
                                    "deleted": deleted, "version_conflicts": 0, "failures": []})

    # -- bulk -------------------------------------------------------------------------------
    def bulk(self, path_index, query, body):
        state = self.server.state
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in ("application/x-ndjson", "application/json"):
            return self.send_json(406, {"error": f"Content-Type header [{content_type}] is not "
                                                 f"supported", "status": 406})
        with state.lock:
            state.counters["bulk_requests"] += 1
            reject_all = state.reject_all
        if reject_all is not None:
            return self.injected(reject_all)
        if not body:
            return self.send_json(400, error_body(400, "action_request_validation_exception",
                                                  "Validation Failed: 1: no requests added;"))
        if not body.endswith(b"\n"):
            return self.send_json(400, error_body(
                400, "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]"))
        lines = body.split(b"\n")[:-1]
        requests = []
        i = 0
        while i < len(lines):
            line_no = i + 1
            try:
                action_line = json.loads(lines[i])
            except ValueError as exc:
                return self.send_json(400, error_body(400, "x_content_parse_exception",
                                                      f"[{line_no}:1] {exc}"))
            if (not isinstance(action_line, dict) or len(action_line) != 1
                    or next(iter(action_line)) not in ACTIONS):
                return self.send_json(400, error_body(
                    400, "illegal_argument_exception",
                    f"Malformed action/metadata line [{line_no}], expected one of "
                    f"[create, delete, index, update] but found [{next(iter(action_line), '')}]"))
            verb, meta = next(iter(action_line.items()))
            if not isinstance(meta, dict):
                return self.send_json(400, error_body(400, "illegal_argument_exception",
                                                      f"Malformed action/metadata line "
                                                      f"[{line_no}]"))
            for key in meta:
                if key not in KNOWN_METADATA:
                    return self.send_json(400, error_body(
                        400, "illegal_argument_exception",
                        f"Action/metadata line [{line_no}] contains an unknown parameter "
                        f"[{key}]"))
            source = None
            if verb != "delete":
                i += 1
                if i >= len(lines) or not lines[i].strip():
                    return self.send_json(400, error_body(
                        400, "illegal_argument_exception",
                        f"The bulk request must be terminated by a newline [\\n]"
                        if i >= len(lines) else f"source missing for line [{line_no}]"))
                try:
                    source = json.loads(lines[i])
                except ValueError as exc:
                    source = exc  # a per-item parse failure, as Elasticsearch reports it
            requests.append((verb, meta, source))
            i += 1
        items = []
        errors = False
        started = time.monotonic()
        with state.lock:
            for verb, meta, source in requests:
                item = self.bulk_item(state, path_index, query, verb, meta, source)
                state.counters["items"] += 1
                if item["status"] >= 300 and not (verb == "delete" and item["status"] == 404):
                    errors = True
                    state.counters["item_failures"] += 1
                    statuses = state.counters["failures_by_status"]
                    statuses[str(item["status"])] = statuses.get(str(item["status"]), 0) + 1
                items.append({verb: item})
        took = int((time.monotonic() - started) * 1000)
        return self.send_json(200, {"took": took, "errors": errors, "items": items})

    def bulk_item(self, state, path_index, query, verb, meta, source):
        index_name = meta.get("_index", path_index)
        doc_id = meta.get("_id")
        base = {"_index": index_name, "_id": doc_id}
        try:
            return self.apply_item(state, index_name, query, verb, meta, source, base)
        except BulkItemError as exc:
            result = dict(base)
            result.update({"status": exc.status, "error": exc.error})
            return result

    def injected_item_status(self, state, doc_id):
        queued = state.item_ids.get(doc_id)
        if queued:
            return queued.pop(0)
        if state.item_statuses and state.item_statuses.get("count", 0) > 0:
            state.item_statuses["count"] -= 1
            return state.item_statuses["status"]
        return None

    def apply_item(self, state, index_name, query, verb, meta, source, base):
        doc_id = meta.get("_id")
        if index_name is None:
            raise BulkItemError(400, item_error("action_request_validation_exception",
                                                "Validation Failed: 1: index is missing;"))
        injected = self.injected_item_status(state, doc_id)
        if injected is not None:
            if injected == 429:
                raise BulkItemError(429, item_error(
                    "es_rejected_execution_exception",
                    "rejected execution of primary operation [injected] on "
                    "EsThreadPoolExecutor[name = node/write, queue capacity = 10000]"))
            raise BulkItemError(injected, item_error("injected_exception",
                                                     f"injected status {injected}"))
        if not valid_index_name(index_name):
            raise BulkItemError(400, item_error(
                "invalid_index_name_exception",
                f"Invalid index name [{index_name}], must be lowercase and must not contain "
                f"'\\', '/', '*', '?', '\"', '<', '>', '|', ' ', ',', '#', ':'",
                index=index_name))
        if doc_id is None and verb != "index" and verb != "create":
            raise BulkItemError(400, item_error("action_request_validation_exception",
                                                "Validation Failed: 1: id is missing;"))
        if doc_id is not None and len(str(doc_id).encode()) > 512:
            raise BulkItemError(400, item_error(
                "action_request_validation_exception",
                f"Validation Failed: 1: id [{doc_id}] is too long, must be no longer than 512 "
                f"bytes but was: {len(str(doc_id).encode())};"))
        if isinstance(source, Exception):
            raise BulkItemError(400, item_error("document_parsing_exception",
                                                f"[1:1] failed to parse: {source}"))
        version = meta.get("version")
        version_type = meta.get("version_type", "internal")
        if version_type not in ("internal", "external", "external_gte", "force"):
            raise BulkItemError(400, item_error("illegal_argument_exception",
                                                f"No version type match [{version_type}]"))
        if version_type in ("external", "external_gte"):
            if verb == "update":
                raise BulkItemError(400, item_error(
                    "action_request_validation_exception",
                    f"Validation Failed: 1: version type [{version_type.upper()}] is not "
                    f"supported by the update API;"))
            if not isinstance(version, int) or isinstance(version, bool) or not (
                    0 <= version <= MAX_VERSION):
                raise BulkItemError(400, item_error(
                    "action_request_validation_exception",
                    f"Validation Failed: 1: illegal version value [{version}] for version type "
                    f"[{version_type.upper()}];"))
        elif version is not None:
            raise BulkItemError(400, item_error(
                "action_request_validation_exception",
                "Validation Failed: 1: internal versioning can not be used for optimistic "
                "concurrency control. Please use `if_seq_no` and `if_primary_term` instead;"))

        index = state.indices.get(index_name)
        if index is None:
            if verb == "delete" or not state.auto_create:
                if verb == "delete" and state.auto_create:
                    index = state.indices[index_name] = Index(index_name)
                else:
                    raise BulkItemError(404, item_error(
                        "index_not_found_exception", f"no such index [{index_name}]",
                        index=index_name, **{"resource.type": "index_expression",
                                             "resource.id": index_name}))
            else:
                index = state.indices[index_name] = Index(index_name)
        routing = meta.get("routing")
        key = (routing, doc_id)
        current = index.current_version(key)

        def conflict(provided):
            raise BulkItemError(409, item_error(
                "version_conflict_engine_exception",
                f"[{doc_id}]: version conflict, current version [{current}] is higher or equal "
                f"to the one provided [{provided}]", index=index_name, shard="0"))

        def external_check():
            if version_type == "external" and current is not None and version <= current:
                conflict(version)
            if version_type == "external_gte" and current is not None and version < current:
                conflict(version)

        def log(op, doc_version, doc_source=None):
            if state.keep_log:
                entry = {"op": op, "index": index_name, "id": doc_id, "version": doc_version}
                if doc_source is not None:
                    entry["source"] = doc_source
                state.log.append(entry)

        def stored(result, status, doc_version):
            index.seq_no += 1
            out = dict(base)
            out.update({"_version": doc_version, "result": result, "status": status,
                        "_seq_no": index.seq_no, "_primary_term": 1,
                        "_shards": {"total": 1, "successful": 1, "failed": 0}})
            return out

        if verb in ("index", "create"):
            if not isinstance(source, dict):
                raise BulkItemError(400, item_error("document_parsing_exception",
                                                    "[1:1] the document is not an object"))
            if doc_id is None:
                doc_id = f"auto-{index.seq_no + 1}"
                base["_id"] = doc_id
                key = (routing, doc_id)
            if verb == "create" and key in index.docs:
                raise BulkItemError(409, item_error(
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, document already exists (current version "
                    f"[{index.docs[key]['version']}])", index=index_name, shard="0"))
            if version_type in ("external", "external_gte"):
                external_check()
                new_version = version
            else:
                new_version = (current or 0) + 1
            error = index.check_mapping(source, doc_id)
            if error:
                raise BulkItemError(400, error)
            existed = key in index.docs
            index.docs[key] = {"source": source, "version": new_version}
            index.tombstones.pop(key, None)
            log("index", new_version, source)
            return stored("updated" if existed else "created", 200 if existed else 201,
                          new_version)

        if verb == "delete":
            if version_type in ("external", "external_gte"):
                external_check()
                new_version = version
            else:
                new_version = (current or 0) + 1
            existed = key in index.docs
            index.docs.pop(key, None)
            index.tombstones[key] = (new_version, time.monotonic())
            if existed:
                log("delete", new_version)
                return stored("deleted", 200, new_version)
            out = stored("not_found", 404, new_version)
            return out

        # update
        if not isinstance(source, dict):
            raise BulkItemError(400, item_error("x_content_parse_exception",
                                                "[1:1] the update body is not an object"))
        unknown = set(source) - {"doc", "doc_as_upsert", "upsert", "script", "scripted_upsert",
                                 "detect_noop", "_source"}
        if unknown:
            raise BulkItemError(400, item_error(
                "x_content_parse_exception",
                f"[1:2] [UpdateRequest] unknown field [{sorted(unknown)[0]}]"))
        existing = index.docs.get(key)
        if "script" in source:
            raise BulkItemError(400, item_error(
                "illegal_argument_exception", "this test server runs no scripts"))
        if "doc" in source:
            if existing is None:
                if source.get("doc_as_upsert"):
                    new_source = source["doc"]
                elif "upsert" in source:
                    new_source = source["upsert"]
                else:
                    raise BulkItemError(404, item_error(
                        "document_missing_exception", f"[{doc_id}]: document missing",
                        index=index_name, shard="0"))
                new_version = 1
            else:
                new_source = dict(existing["source"])
                new_source.update(source["doc"])
                new_version = existing["version"] + 1
        else:
            raise BulkItemError(400, item_error("action_request_validation_exception",
                                                "Validation Failed: 1: script or doc is missing;"))
        error = index.check_mapping(new_source, doc_id)
        if error:
            raise BulkItemError(400, error)
        index.docs[key] = {"source": new_source, "version": new_version}
        index.tombstones.pop(key, None)
        log("update", new_version, new_source)
        return stored("created" if existing is None else "updated",
                      201 if existing is None else 200, new_version)

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_DELETE(self):
        self.route()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--api-key")
    parser.add_argument("--bearer")
    parser.add_argument("--distribution", default="elasticsearch")
    parser.add_argument("--no-log", action="store_true")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(keep_log=not args.no_log)
    if args.user is not None:
        import base64
        token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
        server.auth = f"Basic {token}"
    elif args.api_key is not None:
        server.auth = f"ApiKey {args.api_key}"
    elif args.bearer is not None:
        server.auth = f"Bearer {args.bearer}"
    else:
        server.auth = None
    version = {"number": "8.11.0", "build_flavor": "default", "lucene_version": "9.8.0",
               "minimum_wire_compatibility_version": "7.17.0",
               "minimum_index_compatibility_version": "7.0.0"}
    if args.distribution == "opensearch":
        version = {"distribution": "opensearch", "number": "2.11.0", "lucene_version": "9.7.0",
                   "minimum_wire_compatibility_version": "7.10.0",
                   "minimum_index_compatibility_version": "7.0.0"}
    server.info = {"name": "es-test-server", "cluster_name": "cdcd-test",
                   "cluster_uuid": "cdcd-test-uuid", "version": version,
                   "tagline": "The OpenSearch Project: https://opensearch.org/"
                   if args.distribution == "opensearch" else "You Know, for Search"}
    with open(args.port_file + ".tmp", "w") as out:
        out.write(str(server.server_address[1]))
    import os
    os.rename(args.port_file + ".tmp", args.port_file)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
