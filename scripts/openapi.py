#!/usr/bin/env python3
"""Writes query-node/openapi/openapi.json, the REST API's OpenAPI 3.1 document served at
GET /openapi.json, from the vendored Lance Namespace spec: the operations this server
routes (the spec's own, unchanged), its error model, and its own extra routes.

    .venv/bin/python scripts/openapi.py           # rewrite openapi.json
    .venv/bin/python scripts/openapi.py --check   # exit 1 if it is stale

See query-node/openapi/README.md; integration-tests/python/test_openapi.py runs the check.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "query-node" / "openapi" / "lance-namespace-spec.yaml"
OUT = REPO / "query-node" / "openapi" / "openapi.json"

# (method, path) of every spec operation the router serves (query-node/src/routes.rs).
SERVED = {("get", "/v1/table")} | {("get", f"/v1/namespace/{{id}}/{op}") for op in ("list", "table/list")} | {
    ("post", f"/v1/namespace/{{id}}/{op}") for op in ("create", "describe", "drop", "exists")
} | {("post", f"/v1/transaction/{{id}}/{op}") for op in ("describe", "alter")} | {
    ("post", f"/v1/table/{{id}}/{op}")
    for op in (
        "create", "declare", "register", "deregister", "rename", "describe", "exists", "drop", "stats", "insert", "merge_insert", "query", "explain_plan",
        "analyze_plan", "count_rows", "delete", "update", "add_columns", "alter_columns",
        "drop_columns", "update_field_metadata", "schema_metadata/update", "version/list", "version/describe", "restore", "tags/list",
        "tags/version", "tags/create", "tags/update", "tags/delete", "create_index", "create_scalar_index", "index/list",
        "index/{index_name}/stats", "index/{index_name}/drop",
    )
}

JSON_ERROR = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    "headers": {"x-lancefleet-error-code": {
        "description": "The error's service code (ERROR_CODE_NOT_FOUND, ERROR_CODE_INVALID_ARGUMENT, ...).",
        "schema": {"type": "string"},
    }},
}
# Statuses the server sends beyond the spec's, on every operation.
EXTRA_ERRORS = {
    "413": "The request body is larger than rest.max_body_bytes.",
    "501": "The request asks for an option of the operation that this server does not support.",
    "504": "The request's x-request-timeout-ms deadline passed before it was answered.",
}
PLAIN_GET = {"get": {"responses": {"200": {"description": "OK"}}}}
EXTRA_PATHS = {
    "/health": {"get": {
        "tags": ["LanceFleet"], "operationId": "Health", "summary": "Liveness: answers `ok`",
        "security": [],
        "responses": {"200": {"description": "The node serves requests.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
    "/metrics": {"get": {
        "tags": ["LanceFleet"], "operationId": "Metrics",
        "summary": "Prometheus metrics (text exposition format)", "security": [],
        "responses": {"200": {"description": "The node's metrics.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }},
    "/openapi.json": {"get": {
        "tags": ["LanceFleet"], "operationId": "OpenApi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "The OpenAPI document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
    "/v1/cluster": {"get": {
        "tags": ["LanceFleet"], "operationId": "DescribeCluster",
        "summary": "The plan executors this query node uses and how placement shares fragments "
                   "among them (admin keys only)",
        "responses": {"200": {"description": "The cluster as this node sees it.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
}


def refs(node, found: set[str]) -> None:
    """Collects every `#/components/...` reference under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                found.add(value)
            else:
                refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def reachable(spec: dict, roots) -> dict:
    """The components that `roots` reference, directly or through other components."""
    seen: set[str] = set()
    pending: set[str] = set()
    refs(roots, pending)
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        refs(spec["components"][kind][name], pending)
    components: dict = {}
    for ref in sorted(seen):
        _, _, kind, name = ref.split("/", 3)
        components.setdefault(kind, {})[name] = spec["components"][kind][name]
    return components


def build() -> dict:
    spec = yaml.safe_load(SPEC.read_text())
    paths: dict = {}
    for path, item in spec["paths"].items():
        methods = {m: op for m, op in item.items() if (m, path) in SERVED}
        if not methods:
            continue
        kept = {key: value for key, value in item.items() if key not in ("get", "post", "put", "delete")}
        for method, operation in methods.items():
            operation = copy.deepcopy(operation)
            responses = {str(status): value for status, value in operation["responses"].items()}
            for status, response in responses.items():
                if status[0] in "45":
                    name = response["$ref"].rsplit("/", 1)[-1]
                    description = spec["components"]["responses"][name]["description"]
                    responses[status] = {"description": description, **JSON_ERROR}
            for status, text in EXTRA_ERRORS.items():
                responses.setdefault(status, {"description": text, **JSON_ERROR})
            operation["responses"] = dict(sorted(responses.items()))
            kept[method] = operation
        paths[path] = kept
    missing = SERVED - {(m, p) for p, item in paths.items() for m in item}
    if missing:
        sys.exit(f"the spec lacks served operations: {sorted(missing)}")
    # The error responses above replace the spec's (same schema, our header added).
    components = reachable(spec, paths)
    components["securitySchemes"] = {
        "ApiKeyAuth": spec["components"]["securitySchemes"]["ApiKeyAuth"],
        "BearerAuth": spec["components"]["securitySchemes"]["BearerAuth"],
    }
    paths.update(EXTRA_PATHS)
    # LanceDB's older name of declare (the spec dropped createEmptyTable for declareTable).
    create_empty = copy.deepcopy(paths["/v1/table/{id}/declare"])
    create_empty["post"].update(operationId="CreateEmptyTable",
                                summary="LanceDB's older name of DeclareTable, served the same way")
    paths["/v1/table/{id}/create-empty"] = create_empty
    return {
        "openapi": spec["openapi"],
        "info": {
            "title": "LanceFleet REST API",
            "version": spec["info"]["version"],
            "license": spec["info"]["license"],
            "description": (
                "The REST API of a LanceFleet query node: the operations of the Lance Namespace "
                "REST specification (lance-format/lance-namespace docs/src/spec.yaml, release "
                "0.11.1, Apache-2.0) that this server serves, as the spec defines them, with the "
                "changes listed in x-lancefleet-changes. Every /v1 route also answers with a "
                "trailing slash. Generated by scripts/openapi.py."
            ),
        },
        "x-lancefleet-changes": [
            "Errors are the spec's JSON ErrorResponse ({\"error\": message, \"code\": n}) with "
            "the service code in the x-lancefleet-error-code header too. HTTP statuses are "
            "LanceDB's where the two differ (an existing table on create is 400, which the "
            "lancedb clients read as 'already exists'); the namespace clients read the code.",
            "Every operation may also answer 413 (body too large), 501 (an unsupported option) "
            "and 504 (the x-request-timeout-ms deadline passed).",
            "Added routes: GET /health, GET /metrics, GET /openapi.json, GET /v1/cluster.",
            "Security: an API key as x-api-key or a bearer token (no OAuth2 token endpoint); "
            "none when the server has no keys configured.",
        ],
        "servers": [{"url": "/"}],
        "security": [{"ApiKeyAuth": []}, {"BearerAuth": []}],
        "tags": spec.get("tags", []) + [{"name": "LanceFleet", "description": "Routes of this server"}],
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if openapi.json is stale")
    text = json.dumps(build(), indent=1, sort_keys=False) + "\n"
    if parser.parse_args().check:
        if OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is stale: run .venv/bin/python scripts/openapi.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
