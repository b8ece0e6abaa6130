"""The API contract: each route is declared once, with its input models and its documentation,
and `gateway/http/openapi.py` writes the OpenAPI document from these declarations.

    routes = Routes("Inbound", path_params={"uid": {"type": "string"}})

    @routes.post("/sms/inbounds/{uid}/reply/", status=201, returns=list[Msgid], errors={403})
    async def reply_inbound(request: web.Request, body: Reply) -> Json:
        '''Reply to a received SMS

        Sent from the SIN to the original sender (Markdown).'''

The handler's `body` parameter receives its model (annotation) validated from the request
body, form-encoded or JSON alike (params.read_params); `query` the same from the query
string. Every bad field is answered in one 400 `{"field": ["reason"]}`, with the messages the
field types give (fields.py). What the handler returns is answered as JSON with the declared
status, unless it is a response already. The docstring's first line is the summary, the rest
the description (Markdown, rendered by /docs).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.http.errors import SINCH_PREFIX, json_response, sinch_error
from gateway.http.fields import REQUIRED
from gateway.http.params import read_params
from gateway.services.errors import FieldErrors

Json = Any  # what a handler answers: JSON-able data, or a response of its own
JsonSchema = dict[str, Any]
Security = Literal["basic", "basic+bearer", "public", "metrics"]
Handler = Callable[..., Awaitable[Json]]
H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=BaseModel)
_OPERATION = "__api_operation__"


class Query(BaseModel):
    """Query-string parameters: each at most once, unknown ones refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    unknown: ClassVar[str] = "Unknown parameter."
    repeated: ClassVar[str] = "Give this parameter at most once."

    @classmethod
    def read(cls, request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The values to validate, and the parameters refused before validation."""
        q = request.query
        repeats = {name: [cls.repeated] for name in q if len(q.getall(name)) > 1}
        return {name: q[name] for name in q}, repeats


@dataclass(frozen=True)
class Content:
    """A success answer that is not JSON: media type -> schema; empty for no body at all."""

    media: Mapping[str, JsonSchema]


@dataclass(frozen=True)
class Operation:
    """One route's contract. The keywords of `Routes.get/post/put/delete` set its fields;
    summary and description come from the handler's docstring, body and query from its
    annotations."""

    method: str
    path: str  # with `no_slash`, also routed without its trailing slash
    operation_id: str  # default: the handler's name in camelCase
    tag: str
    security: Security
    summary: str = ""
    description: str = ""  # Markdown
    status: int = 200
    returns: Any = None  # a type pydantic can describe (JSON), a Content, or None
    body: type[BaseModel] | None = None
    query: type[Query] | None = None
    errors: Collection[int] = ()  # besides those implied: auth, body, query, path parameters
    headers: Mapping[str, JsonSchema] = field(default_factory=dict)  # of the success answer
    path_params: Mapping[str, JsonSchema] = field(default_factory=dict)
    # The Sinch XMS routes (/xms/) answer 400, 403 and 404 with Sinch's `{"code", "text"}`
    # (errors.sinch_error, applied by the error middleware).
    sinch_errors: bool = False


def array_of(model: type[BaseModel]) -> Any:
    """`list[model]` for a model known at run time only (mypy takes no variable as a type)."""
    return list[model]  # type: ignore[valid-type]


def operation_of(handler: object) -> Operation | None:
    op = getattr(handler, _OPERATION, None)
    return op if isinstance(op, Operation) else None


def _reason(err: Any, model: type[BaseModel]) -> str:
    if err["type"] == "value_error":  # a field type's ValueError carries the message as is
        return str(err["ctx"]["error"])
    if err["type"] == "missing":
        return REQUIRED
    if err["type"] == "extra_forbidden" and issubclass(model, Query):
        return model.unknown
    return str(err["msg"])


def field_errors(exc: ValidationError, model: type[BaseModel]) -> dict[str, list[str]]:
    """pydantic's errors as the API has always answered them: field -> [reason], the first
    reason of each field."""
    out: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        out.setdefault(".".join(str(p) for p in err["loc"]) or "body", [_reason(err, model)])
    return out


def refusal(
    model: type[BaseModel], problems: Mapping[str, str], also: ValidationError | None = None
) -> ValidationError:
    """Problems found across fields (field -> reason), raised from a model validator together
    with the field errors `also` already found, so that every bad field is reported at once."""
    details = [
        InitErrorDetails(type=PydanticCustomError("invalid", reason), loc=(field,), input=None)
        for field, reason in problems.items()
    ]
    earlier = [] if also is None else typing.cast(list[InitErrorDetails], also.errors())
    return ValidationError.from_exception_data(model.__name__, [*earlier, *details])


def validated(
    model: type[M], data: Mapping[str, Any], request: web.Request, refused: Mapping[str, list[str]] = {}
) -> M:
    """`data` as `model`, or a 400 naming every bad field, with those `refused` beforehand."""
    try:
        out = model.model_validate(data, context=request)
    except ValidationError as exc:
        raise FieldErrors({**field_errors(exc, model), **refused}) from None
    if refused:
        raise FieldErrors(refused)
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


class Routes:
    """A route table (for `app.add_routes`) whose every route is an operation of the contract.
    `tag`, `security` and the path parameters' schemas are the defaults of its operations."""

    def __init__(
        self, tag: str, *, security: Security = "basic", path_params: Mapping[str, JsonSchema] | None = None
    ) -> None:
        self._tag, self._security = tag, security
        self._path_params = dict(path_params or {})
        self._defs: list[web.RouteDef] = []

    def __iter__(self) -> Iterator[web.RouteDef]:
        return iter(self._defs)

    def get(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("PUT", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[H], H]:
        return self.route("DELETE", path, **options)

    def route(
        self,
        method: str,
        path: str,
        *,
        no_slash: bool = False,
        guard: Callable[[web.Request], None] | None = None,
        **options: Any,
    ) -> Callable[[H], H]:
        """`options`: Operation's fields. `no_slash`: also routed without the trailing slash
        (xoxzo-cloudpy leaves it off on some GETs). `guard`: runs after the body is read and
        before it is validated, for a refusal that does not depend on the fields (403)."""

        def register(handler: H) -> H:
            hints = typing.get_type_hints(handler)
            summary, _, description = inspect.cleandoc(handler.__doc__ or "").partition("\n")
            defaults = {
                "operation_id": _camel(handler.__name__),
                "tag": self._tag,
                "security": self._security,
                "summary": summary.strip(),
                "description": description.strip(),
                "body": hints.get("body"),
                "query": hints.get("query"),
                "path_params": {n: self._path_params.get(n, {"type": "string"}) for n in path_names(path)},
                "sinch_errors": path.startswith(SINCH_PREFIX),
            }
            op = Operation(method=method, path=path, **{**defaults, **options})
            endpoint = _endpoint(op, handler, guard)
            self._defs.append(web.RouteDef(method, path, endpoint, {}))
            if no_slash:
                self._defs.append(web.RouteDef(method, path.rstrip("/"), endpoint, {}))
            return handler

        return register


_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def path_names(path: str) -> list[str]:
    return _PARAM.findall(path)


def _endpoint(
    op: Operation, handler: Handler, guard: Callable[[web.Request], None] | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        inputs: dict[str, BaseModel] = {}
        if op.query is not None:
            values, refused = op.query.read(request)
            inputs["query"] = validated(op.query, values, request, refused)
        if op.body is not None:
            try:
                data = await read_params(request)
            except FieldErrors as exc:  # the body as a whole, or a NUL in one of its fields
                raise sinch_error(exc, "syntax_invalid_json") if op.sinch_errors else exc from None
            if guard is not None:
                guard(request)
            inputs["body"] = validated(op.body, data, request)
        out = await handler(request, **inputs)
        return out if isinstance(out, web.StreamResponse) else json_response(out, status=op.status)

    setattr(endpoint, _OPERATION, op)
    return endpoint
