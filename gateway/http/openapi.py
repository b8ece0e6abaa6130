"""The OpenAPI 3.1 document of the API: `GET /openapi.json`, and `GET /docs` rendering it.

Written from the routes the app serves: each route declared with `gateway/http/api.py`
carries its operation (models, summary, errors), and the schemas come from the request models
and gateway/http/responses.py. A served route without an operation is listed by
`undocumented(app)` (the test suite fails on it) and appears as a bare operation marked
`x-undocumented`, so a new route is never invisible.

xoxzo-cloudpy omits the trailing slash on some GETs: those operations are routed both ways, and
the form without the slash is documented as its own operation with `x-alias-of`.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gateway.http import responses
from gateway.http.api import Content, Json, JsonSchema, Operation, Routes, operation_of, path_names
from gateway.http.console.shared import is_console
from gateway.http.docs_page import DOCS_CSP, render_docs
from gateway.keys import CONFIG

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
DOC_PATHS = ("/openapi.json", "/docs")  # public: add to auth.PUBLIC_PREFIXES
_REF = "#/components/schemas/{model}"

ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (responses.BadRequest, 'Invalid input: `{"field": ["reason", ...]}` naming every bad field.'),
    401: (responses.Detail, "Missing or invalid credentials."),
    403: (responses.Detail, "The account may not do this (freeform SMS not enabled)."),
    404: (responses.Detail, "Unknown, deleted, or another account's resource."),
    413: (responses.Detail, "Request body over the configured `http.max_body_bytes`."),
    415: (responses.Detail, "Unsupported Content-Type: send form-encoded or JSON."),
    422: (responses.VariableErrors, "Template variables missing or not in the template."),
    429: (
        responses.Detail,
        "Too many requests: the account's rate limit, too many failed logins from this address, or "
        "(on /l/) too many unknown codes from this address; see the Retry-After header.",
    ),
    503: (
        responses.Detail,
        "Temporarily unavailable: the database does not answer, or the feature (outbound calls) "
        "is not available on this gateway right now; see the Retry-After header when present.",
    ),
}
# The Sinch XMS routes' 400, 403 and 404 (Operation.sinch_errors).
SINCH_ERRORS: dict[int, str] = {
    400: "Invalid input, Sinch style: `code` syntax_constraint_violation (or syntax_invalid_json for"
    " the body as a whole) and `text` naming every bad field (`to: reason; from: reason`).",
    403: "The account may not do this (freeform SMS not enabled), Sinch style: `code` forbidden.",
    404: "Unknown or another account's resource, Sinch style: `code` not_found.",
}
BODY_ERRORS = (400, 413, 415)
# Every authenticated route looks the credentials up in the database: 503 while it is away.
AUTH_ERRORS = (401, 429, 503)
RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds until a new request is worth trying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
SECURITY: dict[str, list[dict[str, list[str]]] | None] = {
    "basic": None,  # the document's default
    "basic+bearer": [{"basicAuth": []}, {"bearerAuth": []}],
    "public": [],
    "metrics": [{}, {"metricsToken": []}],
}

DESCRIPTION = """\
Self-hosted SMS and voice gateway, compatible with Xoxzo's cloud telephony API.

**Authentication**: HTTP Basic with your SID and auth token on every API route. The Sinch-style
`/xms/v1/<service_plan_id>/...` routes also take `Authorization: Bearer <auth token>` with your
SID as the service plan id.

**Requests** accept form-encoded (`application/x-www-form-urlencoded`) and JSON bodies.

**Errors** are JSON: 400 `{"field": ["reason", ...]}` naming every bad field at once; 401, 403,
404, 413, 415 and 429 `{"detail": "..."}`; 422 `{"variables": {"name": ["reason"]}}` for
template variables. The Sinch-style `/xms/` routes answer 400, 403 and 404 as Sinch does,
`{"code": "...", "text": "..."}`, the text naming every bad field. Nothing is written when a
request is refused.

**Rate limit**: when enabled, each account has a token bucket (a sustained rate and a burst).
Over it the answer is 429 with a `Retry-After` header in seconds. The buckets are kept per
gateway node: behind a load balancer with N nodes an account can reach N times the rate.
"""


class _Schemas(GenerateJsonSchema):
    """pydantic's JSON Schema, trimmed to what a reader of the document needs: no per-field
    titles, no null defaults, `{"type": ["string", "null"]}` for a nullable plain value."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if out.get("default", 0) in (None, [], {}):  # "not given" needs no example value
            del out["default"]
        return out

    def model_fields_schema(self, schema: core_schema.ModelFieldsSchema) -> JsonSchemaValue:
        out = super().model_fields_schema(schema)
        if "required" in out:  # in name order, whatever order the model declares its fields in
            out["required"] = sorted(out["required"])
        return out

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str) and not {"enum", "const", "$ref"} & set(inner):
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)


def _routes(app: web.Application) -> list[tuple[str, str, Operation | None]]:
    """(METHOD, path template, operation) for every route of the API the app answers, HEAD
    left out (aiohttp adds it to every GET; it answers like the GET without a body)."""
    out: dict[tuple[str, str], Operation | None] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*") or is_console(resource.canonical):
            continue  # the web console's pages are no part of the API (docs/console.md)
        out.setdefault((route.method, resource.canonical), operation_of(route.handler))
    return [(method, path, op) for (method, path), op in out.items()]


def served_operations(app: web.Application) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in _routes(app)]


def undocumented(app: web.Application) -> list[tuple[str, str]]:
    return [(method, path) for method, path, op in _routes(app) if op is None]


def _schemas(ops: list[Operation]) -> tuple[dict[tuple[str, str], JsonSchema], JsonSchema]:
    """Every body and answer schema of `ops` and the error bodies, sharing one set of
    components: (kind, name) -> schema (mostly a $ref), and the components."""
    inputs: list[tuple[tuple[str, str], Any, TypeAdapter[Any]]] = [
        (("error", str(code)), "validation", TypeAdapter(model)) for code, (model, _) in ERRORS.items()
    ]
    inputs.append((("sinch", "error"), "validation", TypeAdapter(responses.SinchError)))
    for op in ops:
        if op.body is not None:
            inputs.append((("body", op.operation_id), "validation", TypeAdapter(op.body)))
        if op.returns is not None and not isinstance(op.returns, Content):
            inputs.append((("ok", op.operation_id), "validation", TypeAdapter(op.returns)))
    keys, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF, schema_generator=_Schemas)
    return {key: schema for (key, _), schema in keys.items()}, defs.get("$defs", {})


def _parameter(name: str, where: str, required: bool, schema: JsonSchema) -> JsonSchema:
    schema = dict(schema)
    description = schema.pop("description", "")
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


def _parameters(op: Operation) -> list[JsonSchema]:
    out = [_parameter(name, "path", True, schema) for name, schema in op.path_params.items()]
    if op.query is not None:
        query = op.query.model_json_schema(schema_generator=_Schemas)
        required = query.get("required", [])
        out += [_parameter(n, "query", n in required, s) for n, s in query["properties"].items()]
    return out


def _responses(op: Operation, schemas: dict[tuple[str, str], JsonSchema]) -> JsonSchema:
    ok: JsonSchema = {"description": HTTPStatus(op.status).phrase}
    if isinstance(op.returns, Content):
        if op.returns.media:
            ok["content"] = {media: {"schema": schema} for media, schema in op.returns.media.items()}
    elif op.returns is not None:
        ok["content"] = {"application/json": {"schema": schemas[("ok", op.operation_id)]}}
    if op.headers:
        ok["headers"] = dict(op.headers)
    out: JsonSchema = {str(op.status): ok}
    codes = set(op.errors)
    if op.security in ("basic", "basic+bearer"):
        codes.update(AUTH_ERRORS)
    if op.body is not None:
        codes.update(BODY_ERRORS)
    if op.query is not None:
        codes.add(400)
    if op.path_params and op.security != "metrics":
        codes.add(404)
    for code in sorted(codes):
        if op.sinch_errors and code in SINCH_ERRORS:
            json = {"application/json": {"schema": schemas[("sinch", "error")]}}
            out[str(code)] = {"description": SINCH_ERRORS[code], "content": json}
            continue
        json = {"application/json": {"schema": schemas[("error", str(code))]}}
        out[str(code)] = {"description": ERRORS[code][1], "content": json}
        if code in (429, 503):
            out[str(code)]["headers"] = RETRY_AFTER
    return out


def _operation(op: Operation, method: str, path: str, schemas: dict[tuple[str, str], JsonSchema]) -> Json:
    out: Json = {"tags": [op.tag], "operationId": op.operation_id, "summary": op.summary}
    description = op.description
    if path != op.path:
        note = f"Same as `{method} {op.path}`, without the trailing slash (xoxzo-cloudpy omits it)."
        description = f"{description}\n\n{note}" if description else note
        out["operationId"] = op.operation_id + "NoSlash"
        out["x-alias-of"] = op.path
    if description:
        out["description"] = description
    if params := _parameters(op):
        out["parameters"] = params
    if op.body is not None:
        body = {"schema": schemas[("body", op.operation_id)]}
        out["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": body, "application/json": body},
        }
    out["responses"] = _responses(op, schemas)
    if (security := SECURITY[op.security]) is not None:
        out["security"] = security
    return out


def _undocumented(method: str, path: str) -> Json:
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_")
    entry: Json = {
        "tags": ["Undocumented"],
        "operationId": f"undocumented_{name}",
        "summary": "Undocumented route",
        "x-undocumented": True,
        "responses": {"default": {"description": "Not described yet."}},
    }
    if names := path_names(path):
        entry["parameters"] = [_parameter(n, "path", True, {"type": "string"}) for n in names]
    return entry


def build_document(app: web.Application, server_url: str | None = None) -> Json:
    """The OpenAPI document for exactly the routes `app` serves."""
    if server_url is None:
        cfg = app.get(CONFIG)
        server_url = cfg.public_base_url if cfg is not None else "/"
    served = _routes(app)
    schemas, components = _schemas(list({op.operation_id: op for _, _, op in served if op}.values()))
    paths: Json = {}
    tags: list[str] = []
    for method, path, op in served:
        entry = _undocumented(method, path) if op is None else _operation(op, method, path, schemas)
        tag = entry["tags"][0]
        if tag not in tags:
            tags.append(tag)
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Voice/SMS gateway API", "version": API_VERSION, "description": DESCRIPTION},
        "servers": [{"url": server_url}],
        "tags": [{"name": t} for t in tags],
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "SID : auth token."},
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The auth token; only on /xms/ routes, whose path names the SID.",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The metrics token, when the operator configured one.",
                },
            },
        },
    }


routes = Routes("Public", security="public")


@routes.get(
    "/openapi.json", returns=Content({"application/json": {"type": "object"}}), operation_id="openapi"
)
async def openapi_json(request: web.Request) -> Json:
    """This OpenAPI document"""
    return web.json_response(build_document(request.app))


@routes.get("/docs", returns=Content({"text/html": {"type": "string"}}))
async def docs(request: web.Request) -> Json:
    """Human-readable API documentation (self-contained HTML)"""
    return web.Response(
        text=render_docs(build_document(request.app)),
        content_type="text/html",
        headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"},
    )
