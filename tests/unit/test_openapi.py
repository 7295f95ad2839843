"""The OpenAPI document (`gateway.openapi`): every error a route's code can answer is
documented as a problem, and every operation, body and field is described.

What a route "can answer" is read from the code with `ast`: from the route function and
its dependencies, every function and class of the gateway they name (transitively), each
`Problem(<status>, ...)`, each refusal raised (`gateway.problems._REFUSALS`), each
`RequestValidationError`, and each account-service call, whose failures are read from the
auth_service use case that answers it (its `AuthErrorCode`s, through `_STATUS`)."""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from functools import cache
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.testclient import TestClient

import auth_service.bootstrap
import auth_service.handlers
from contracts.auth import AuthErrorCode
from contracts.topology import AuthRpc
from gateway import openapi as api
from gateway.app import create_app
from gateway.auth_client import _STATUS as AUTH_STATUS
from gateway.limits import BodySizeLimit
from gateway.problems import (
    _REFUSALS,
    PROBLEM_JSON,
    Problem,
    ProblemDetails,
    install_problem_handlers,
)
from gateway.refusals import Refused, TooManyGenerations
from terra.errors import StorageError


@pytest.fixture(scope="module")
def app():
    return create_app()


@pytest.fixture(scope="module")
def document(app) -> dict:
    return app.openapi()


def operations(app):
    for route in api.api_routes(app):
        if route.include_in_schema:
            for method in sorted(route.methods):
                yield route, method


# --- reading the code ------------------------------------------------------------------


def _source_tree(obj: Any) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return None


def _resolve(node: ast.AST, namespace: dict[str, Any]) -> Any:
    """What a name or a dotted name refers to in a function's module, or None."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id, getattr(__builtins__, node.id, None)
                             if not isinstance(__builtins__, dict)
                             else __builtins__.get(node.id))
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, namespace)
        if isinstance(owner, (types.ModuleType, type)):
            return getattr(owner, node.attr, None)
    return None


def _ours(obj: Any, packages: tuple[str, ...]) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in packages


def _functions_of_class(cls: type) -> list[Any]:
    return [member for name, member in vars(cls).items()
            if inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod))]


def _annotated_classes(func: Any, packages: tuple[str, ...]) -> list[type]:
    """Classes of ours in a function's parameter annotations (`Annotated[X, Depends(...)]`
    included): the objects it is handed, whose methods it may call."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: none followed
        return []
    hints.pop("return", None)
    found = []
    for hint in hints.values():
        for arg in [hint, *typing.get_args(hint)]:
            if isinstance(arg, type) and _ours(arg, packages) \
                    and not issubclass(arg, BaseException):
                found.append(arg)
    return found


def _body_tree(func: Any) -> ast.AST | None:
    """A function's source without its signature's annotations (its parameters' classes
    are followed by `_annotated_classes`; the class it returns is not run by it)."""
    tree = _source_tree(func)
    if tree is not None and tree.body and isinstance(
            definition := tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        definition.returns = None
        for arg in [*definition.args.args, *definition.args.kwonlyargs,
                    *definition.args.posonlyargs]:
            arg.annotation = None
        definition.decorator_list = []
    return tree


def _owner_class(func: Any) -> type | None:
    """The class a method is defined in (from its qualified name), or None."""
    head, _, _ = func.__qualname__.rpartition(".")
    owner = func.__globals__.get(head) if head and "<" not in head else None
    return owner if isinstance(owner, type) else None


def _self_targets(node: ast.Attribute, cls: type) -> Any:
    """`self.method` and `self.field.method` (a field annotated on the class), or None."""
    if isinstance(node.value, ast.Name) and node.value.id == "self":
        return getattr(cls, node.attr, None)
    inner = node.value
    if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) \
            and inner.value.id == "self":
        try:
            field_type = typing.get_type_hints(cls).get(inner.attr)
        except Exception:  # noqa: BLE001 - annotations that do not resolve: not followed
            return None
        return getattr(field_type, node.attr, None) if isinstance(field_type, type) else None
    return None


def reachable(roots: list[Any], packages: tuple[str, ...]) -> list[Any]:
    """The functions of `packages` that `roots` may run: those they name, the methods of
    the classes they name or are handed, and `self.x(...)` / `self.field.x(...)` calls,
    transitively."""
    seen: dict[int, Any] = {}
    stack = list(roots)
    while stack:
        func = stack.pop()
        func = getattr(func, "__func__", func)
        if id(func) in seen or not inspect.isfunction(func):
            continue
        seen[id(func)] = func
        tree = _body_tree(func)
        if tree is None:  # generated (a dataclass's __init__): runs nothing of ours
            continue
        for cls in _annotated_classes(func, packages):
            stack.extend(_functions_of_class(cls))
        namespace = dict(func.__globals__)
        if func.__closure__:
            namespace.update(zip(func.__code__.co_freevars,
                                 (cell.cell_contents for cell in func.__closure__),
                                 strict=True))
        owner = _owner_class(func)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Name, ast.Attribute)):
                continue
            target = _resolve(node, namespace)
            if target is None and owner is not None and isinstance(node, ast.Attribute):
                target = _self_targets(node, owner)
            if target is None or not _ours(target, packages):
                continue
            if inspect.isfunction(target):
                stack.append(target)
            elif isinstance(target, type) and not issubclass(target, BaseException):
                stack.extend(_functions_of_class(target))
    return list(seen.values())


def _constant_statuses(node: ast.AST) -> set[int]:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _constant_statuses(node.body) | _constant_statuses(node.orelse)
    return set()


@cache
def auth_rpc_statuses(rpc: AuthRpc) -> frozenset[int]:
    """The statuses auth_service's answer to `rpc` can become: every `AuthErrorCode` its
    use case and what that runs name (an exception class's code included)."""
    method = {subject: name for subject, _, name in auth_service.bootstrap.ROUTES}[rpc]
    roots = [getattr(auth_service.handlers.AuthHandlers, method)]
    codes = set()
    for func in reachable(roots, ("auth_service",)):
        namespace = func.__globals__
        for node in ast.walk(_source_tree(func) or ast.Module(body=[], type_ignores=[])):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "AuthErrorCode":
                codes.add(AuthErrorCode[node.attr])
            elif isinstance(node, ast.Call):
                raised = _resolve(node.func, namespace)
                if isinstance(raised, type) and issubclass(raised, Exception) \
                        and _ours(raised, ("auth_service",)):
                    codes |= _codes_of_exception(raised)
    return frozenset(AUTH_STATUS[code][0] for code in codes if code in AUTH_STATUS)


def _codes_of_exception(cls: type) -> set[AuthErrorCode]:
    tree = _source_tree(cls.__init__) if "__init__" in vars(cls) else None
    return {AuthErrorCode[node.attr] for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "AuthErrorCode"} if tree else set()


def raised_statuses(route) -> dict[int, str]:
    """Each status the route's code can answer, with where it was found."""
    found: dict[int, str] = {}
    roots = [route.endpoint, *api.dependency_calls(route)]
    for func in reachable(roots, ("gateway",)):
        tree = _source_tree(func)
        if tree is None:
            continue
        namespace = func.__globals__
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _resolve(node.func, namespace)
            where = f"{func.__module__}.{func.__qualname__}"
            if callee is Problem and node.args:
                for status in _constant_statuses(node.args[0]):
                    found.setdefault(status, where)
            elif isinstance(callee, type) and issubclass(callee, Refused):
                found.setdefault(_REFUSALS[callee][0], where)
            elif callee is RequestValidationError:
                found.setdefault(422, where)
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "call" \
                    and node.args \
                    and isinstance(rpc := _resolve(node.args[0], namespace), AuthRpc):
                for status in auth_rpc_statuses(rpc):
                    found.setdefault(status, f"{where} -> auth_service {rpc.value}")
    return found


# --- errors ----------------------------------------------------------------------------


def test_the_code_reader_finds_what_routes_raise(app):
    """The reader itself: statuses known to be raised deep down are found."""
    by_op = {(method, route.path_format): route for route, method in operations(app)}
    cancel = raised_statuses(by_op[("POST", "/api/generate/{job_id}/cancel")])
    assert {404, 409} <= cancel.keys()  # gateway.commands.cancel_job's refusals
    generate = raised_statuses(by_op[("POST", "/api/generate/image")])
    assert {401, 404, 409, 429} <= generate.keys()  # the admission's, through its class
    register = raised_statuses(by_op[("POST", "/api/auth/register")])
    assert {409, 422, 429} <= register.keys()  # auth_service: taken, weak, throttled


# What the reader finds that cannot happen, and why.
UNREACHABLE = {
    ("DELETE", "/api/me", 422): "auth_service refuses only the retired DeleteAccountV1; the "
                                "gateway sends the current one",
}


def test_every_status_a_route_can_raise_is_documented(app, document):
    missing = []
    for route, method in operations(app):
        documented = document["paths"][route.path_format][method.lower()]["responses"]
        for status, where in raised_statuses(route).items():
            if str(status) not in documented \
                    and (method, route.path_format, status) not in UNREACHABLE:
                missing.append(f"{method} {route.path_format}: {status} (from {where})")
    assert not missing, "undocumented statuses:\n" + "\n".join(missing)


def test_every_error_answer_is_a_problem(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {s: r for s, r in operation["responses"].items() if int(s) >= 400}
            for status, answer in errors.items():
                assert set(answer["content"]) == {PROBLEM_JSON}, (method, path, status)
                media = answer["content"][PROBLEM_JSON]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
                assert media["example"]["status"] == int(status)
                assert answer["description"], (method, path, status)
                if status in ("429", "503") and path != "/ready":
                    assert "Retry-After" in answer["headers"], (method, path, status)
                if status == "401":
                    assert "WWW-Authenticate" in answer["headers"], (method, path)


def test_statuses_follow_what_a_route_depends_on(document):
    paths = document["paths"]
    # No caller, no part: nothing but the answer.
    assert set(paths["/health"]["get"]["responses"]) == {"200"}
    # A token and the stores: 401 and 503; a path id: 404 and 422.
    assert {"401", "404", "422", "503"} <= set(paths["/api/jobs/{job_id}"]["get"]["responses"])
    # A body: 413 and 422; the prompt rate limit: 429.
    optimize = paths["/api/prompt/optimize"]["post"]["responses"]
    assert {"400", "413", "422", "429", "502"} <= set(optimize)
    assert "413" in paths["/api/training/upload"]["post"]["responses"]
    assert "503" in paths["/ready"]["get"]["responses"]


def test_the_problem_schema_carries_every_extension_the_gateway_sends(document):
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= set(problem["required"])
    assert {"instance", "errors", "code", "rejected", "reasons", "workers", "models",
            "job_id"} <= set(problem["properties"])
    # Every keyword extension of a Problem(...) in the gateway is in the schema.
    sent = set()
    for module in _gateway_modules():
        tree = _source_tree(module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
                sent |= {kw.arg for kw in node.keywords
                         if kw.arg not in (None, "title", "headers")}  # None: **extensions
    assert sent <= set(problem["properties"]), sent - set(problem["properties"])


def _gateway_modules():
    import importlib
    import pkgutil

    import gateway
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        yield importlib.import_module(info.name)


def test_the_fastapi_validation_schemas_are_gone(document):
    text = str(document)
    assert "HTTPValidationError" not in text and "ValidationError'" not in text


# --- descriptions and examples ------------------------------------------------------------


def test_every_operation_is_described(document):
    bare = [f"{method.upper()} {path}" for path, item in document["paths"].items()
            for method, operation in item.items()
            if not operation.get("description") or not operation.get("summary")]
    assert not bare, "operations without a description (a docstring): " + ", ".join(bare)


def test_every_schema_and_field_is_described(document):
    bare = []
    for name, schema in document["components"]["schemas"].items():
        if not schema.get("description"):
            bare.append(name)
        bare += [f"{name}.{field}" for field, prop in schema.get("properties", {}).items()
                 if not prop.get("description")]
    assert not bare, "schemas or fields without a description: " + ", ".join(bare)


def test_every_tag_is_described(document):
    tags = {tag["name"]: tag.get("description") for tag in document["tags"]}
    used = {tag for item in document["paths"].values() for operation in item.values()
            for tag in operation["tags"]}
    assert used <= {name for name, text in tags.items() if text}, used


def test_every_parameter_is_described(document):
    bare = [f"{method.upper()} {path} {param['name']}"
            for path, item in document["paths"].items()
            for method, operation in item.items()
            for param in operation.get("parameters", []) if not param.get("description")]
    assert not bare, "parameters without a description: " + ", ".join(bare)


def test_every_json_body_has_an_example(document):
    bare = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            bodies = {"request": operation.get("requestBody", {}).get("content", {})}
            bodies |= {status: answer.get("content", {})
                       for status, answer in operation["responses"].items()}
            for which, content in bodies.items():
                for media_type, entry in content.items():
                    if "json" in media_type and "example" not in entry:
                        bare.append(f"{method.upper()} {path} {which} {media_type}")
    assert not bare, "bodies without an example: " + ", ".join(bare)


def test_examples_are_valid_against_their_schemas(document):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis's (the dev extra)
    bad = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            contents = [operation.get("requestBody", {}).get("content", {})]
            contents += [answer.get("content", {}) for answer in operation["responses"].values()]
            for content in contents:
                for entry in content.values():
                    if "example" not in entry or "schema" not in entry:
                        continue
                    schema = {**entry["schema"], "components": document["components"]}
                    validator = jsonschema_rs.validator_for(schema)
                    bad += [f"{method.upper()} {path}: {error.message}"
                            for error in validator.iter_errors(entry["example"])]
    assert not bad, "\n".join(bad)


def test_the_websocket_protocol_is_described(document):
    text = document["info"]["description"]
    for needle in ("/ws", "since=", "ticket", "ready", "pong", "4401", "4408", "4440", "4400",
                   "/asyncapi/websocket.json"):
        assert needle in text, needle


def test_what_the_handlers_write_is_a_problem_document():
    """Each way the gateway answers an error, read back through the documented schema
    with no member left over."""
    app = FastAPI()
    install_problem_handlers(app)
    raised = {
        "problem": Problem(409, "conflict", "busy", models=["m1"]),
        "refusal": TooManyGenerations(4),
        "fault": StorageError("away"),
        "upload": Problem(422, "invalid-upload", "bad", rejected=[
            {"filename": "a.jpg", "reason": "not an image"}]),
    }

    @app.get("/raise/{what}")
    async def raise_it(what: str, number: int = 0):
        raise raised[what]

    @app.post("/body")
    async def echo(payload: dict):
        return payload

    client = TestClient(BodySizeLimit(app, max_bytes=10), raise_server_exceptions=False)
    answers = [client.get(f"/raise/{what}") for what in raised]
    answers += [client.get("/raise/problem?number=x"),  # 422 validation-error
                client.post("/body", content=b"x" * 100)]  # 413 from the middleware
    for answer in answers:
        assert answer.headers["content-type"] == PROBLEM_JSON, answer.text
        body = answer.json()
        parsed = ProblemDetails.model_validate(body)
        assert parsed.status == answer.status_code
        assert set(body) <= set(ProblemDetails.model_fields), set(body) - set(
            ProblemDetails.model_fields)
