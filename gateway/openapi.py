"""The OpenAPI description a generated client can trust.

FastAPI documents the success answer of each route and a 422 in its own shape; the
gateway answers every error as an RFC 9457 problem (`gateway.problems`). `describe(app)`
adds, to every operation, each error status it can answer with the `Problem` schema under
`application/problem+json`. The statuses come from what a route depends on (the caller
dependency: 401; a part on NATS or object storage: 503 with `Retry-After`; a body: 413
and 422; a path id: 404; the admission and rate-limit dependencies: their refusals) plus
`ROUTE_ERRORS` for what a route raises itself; `tests/unit/test_openapi.py` checks both
against the code. Response bodies the routes build by hand get their schema, and fields
without a description of their own get one, from `gateway.openapi_glossary`; every JSON
body gets an example composed from its fields' examples.
"""

from __future__ import annotations

import copy
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, routing
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from gateway import deps
from gateway.openapi_glossary import (
    FIELD_DOCS,
    MODEL_DOCS,
    PARAMETER_DOCS,
    RESPONSE_BODIES,
    SCHEMA_DOCS,
    TAGS,
)
from gateway.problems import PROBLEM_JSON, SLUGS, TYPE_BASE, ProblemDetails
from gateway.routers import prompts

# --- which errors each route answers ---------------------------------------------------

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 1}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`.",
                                         "schema": {"type": "string"}}}
HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}
# Answers without them: /ready's 503 is a report, not a request to come back.
NO_HEADERS = {("GET", "/ready", 503)}

UNAVAILABLE = ("A dependency is not answering right now (the message broker, object "
               "storage or the account service): retry after `Retry-After` seconds, with "
               "the same `Idempotency-Key` where the route takes one.")
DEFAULT_TEXT = {
    # FastAPI's own: a body it cannot decode (not UTF-8, a broken multipart form).
    400: "The body cannot be read: not UTF-8, or a broken form (`bad-request`).",
    401: "No valid access token (missing, malformed, expired, revoked, or naming no valid "
         "user): `unauthorized`, with `WWW-Authenticate: Bearer`.",
    404: "None with this id, or not yours: another user's is indistinguishable from none.",
    409: "The resource's state does not allow it (`conflict`).",
    413: "The request body is larger than the gateway accepts (`payload-too-large`).",
    422: "A parameter or body field is invalid (`validation-error`); `errors` names each.",
    429: "Too many requests lately; `Retry-After` says when to retry.",
    503: UNAVAILABLE,
}

# What each dependency can answer, whichever route uses it.
DEPENDENCY_ERRORS: dict[Any, dict[int, str]] = {
    # The access token is checked locally; a key rotation asks the account service.
    deps.get_caller: {401: DEFAULT_TEXT[401], 503: UNAVAILABLE},
    deps.auth_of: {503: UNAVAILABLE},
    deps.storage_of: {503: UNAVAILABLE},
    deps.jobs_of: {503: UNAVAILABLE},
    deps.models_of: {503: UNAVAILABLE},
    deps.images_of: {503: UNAVAILABLE},
    deps.commands_of: {503: UNAVAILABLE},
    deps.revocations_of: {503: UNAVAILABLE},
    deps.prompt_rate_of: {503: UNAVAILABLE},
    prompts.within_prompt_rate: {
        429: "More than `TERRA_PROMPT_RATE_LIMIT` optimisations in the window "
             "(`rate-limited`); `Retry-After` says when the oldest leaves it."},
    deps.generation_admission: {
        404: "`lora_id` names no model of yours (`not-found`).",
        409: "The `lora_id` model is not ready (`conflict`).",
        429: "`TERRA_MAX_GENERATIONS_PER_USER` generations of yours are queued or running "
             "(`too-many-jobs`, `Retry-After: 5`).",
        503: UNAVAILABLE},
    deps.training_admission: {
        404: "`dataset_id` names no photo set of yours (`not-found`).",
        409: "A training of yours is queued or running (`training-running`).",
        503: UNAVAILABLE},
    deps.readiness_of: {},
    deps.notifier_of: {503: "The notification service (or the message broker) is not "
                            "answering right now (`unavailable`): retry after `Retry-After` "
                            "seconds."},
}

_THROTTLED = ("Too many attempts from this network, or for this account from it "
              "(`rate-limited`); `Retry-After` says when to retry.")
_CANCEL = {404: "No such job of yours (`not-found`).",
           409: "The job has already ended (`conflict`)."}
# notifier_service's refusals (`gateway.notifier_client`): a bad value it checks itself
# and a full quota name the field in `errors`; another user's id is any unknown one.
_NOTIFIER_422 = ("A field is invalid (`validation-error`): the gateway's checks, or the "
                 "notification service's (a URL it refuses, keys of the wrong length); "
                 "`errors` names the field.")
_NOT_YOURS = "No {} of yours with this id (`not-found`): another user's is the same as none."


def _full(what: str, setting: str) -> dict[int, str]:
    return {409: f"You have as many {what} as allowed (`limit-reached`, `{setting}`; "
                 "`errors` names the field): remove one first."}


NOTIFIER_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/api/notifications/webpush"): {
        422: _NOTIFIER_422, **_full("Web Push subscriptions", "TERRA_NOTIFY_MAX_WEB_PUSH")},
    ("DELETE", "/api/notifications/webpush/{subscription_id}"): {
        404: _NOT_YOURS.format("subscription")},
    ("POST", "/api/notifications/devices"): {
        422: _NOTIFIER_422 + " FCM tokens are refused where FCM is not configured.",
        **_full("devices", "TERRA_NOTIFY_MAX_DEVICES")},
    ("DELETE", "/api/notifications/devices/{device_id}"): {404: _NOT_YOURS.format("device")},
    ("PUT", "/api/notifications/preferences"): {
        422: "An unknown event or channel (`validation-error`); `errors` names it."},
    ("POST", "/api/webhooks"): {
        422: _NOTIFIER_422 + " In production the URL must be https and reach no private, "
             "loopback, link-local, CGNAT, unique-local or metadata address.",
        **_full("webhooks", "TERRA_NOTIFY_MAX_WEBHOOKS")},
    ("GET", "/api/webhooks/{webhook_id}"): {404: _NOT_YOURS.format("webhook")},
    ("PATCH", "/api/webhooks/{webhook_id}"): {404: _NOT_YOURS.format("webhook"),
                                              422: _NOTIFIER_422},
    ("DELETE", "/api/webhooks/{webhook_id}"): {404: _NOT_YOURS.format("webhook")},
    ("POST", "/api/webhooks/{webhook_id}/rotate-secret"): {404: _NOT_YOURS.format("webhook")},
    ("POST", "/api/webhooks/{webhook_id}/test"): {404: _NOT_YOURS.format("webhook")},
    ("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): {
        404: "No such webhook of yours, or no such delivery of it (`not-found`)."},
    ("GET", "/api/webhooks/{webhook_id}/deliveries"): {404: _NOT_YOURS.format("webhook")},
}

# What a route raises itself (Problem, a refusal, or an account service failure).
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("GET", "/ready"): {503: "Not ready (`not-ready`): `reasons` says why, `workers` counts "
                             "the live workers."},
    ("POST", "/api/auth/register"): {
        401: "The account was closed while it was being signed in (`invalid-credentials`).",
        403: "Cookie mode, from an origin that may not use the session cookie "
             "(`csrf-refused`).",
        409: "An account with this email exists (`email-taken`).",
        422: "Invalid fields, or a weak password (`weak-password`, in `errors`).",
        429: _THROTTLED},
    ("POST", "/api/auth/login"): {
        401: "Wrong email or password (`invalid-credentials`), or a Google ID token that is "
             "not valid (`invalid-google-token`).",
        403: "Cookie mode, from an origin that may not use the session cookie "
             "(`csrf-refused`).",
        409: "Google sign-in for an email that has a password account "
             "(`email-taken`): sign in with the password.",
        429: _THROTTLED},
    ("POST", "/api/auth/refresh"): {
        401: "The refresh token is not valid (`invalid-refresh-token`), or was used already "
             "(`refresh-token-reused`: the whole session ends)."},
    ("POST", "/api/auth/logout"): {
        401: "The refresh token is not valid, or `everywhere` without a live access token "
             "of the same user."},
    ("GET", "/api/me"): {404: "The account no longer exists."},
    ("POST", "/api/auth/password"): {404: "The account no longer exists."},
    ("DELETE", "/api/me"): {404: "The account no longer exists."},
    ("POST", "/api/prompt/optimize"): {
        404: "`for_model` names no model of yours (`not-found`).",
        409: "The `for_model` model is not ready (`conflict`).",
        422: "Invalid fields; or, with `?wait=true`, the job failed on its input "
             "(`optimization-failed`, `code` `invalid_input`).",
        502: "With `?wait=true`: the job failed (`optimization-failed`, with `code` and "
             "`job_id`)."},
    ("POST", "/api/prompt/{job_id}/accept"): {
        409: "The optimisation has not succeeded (`conflict`)."},
    ("DELETE", "/api/training/datasets/{dataset_id}"): {
        409: "A model is still training on it (`conflict`; `models` lists them)."},
    ("POST", "/api/training/upload"): {
        413: "The upload is larger than `TERRA_MAX_UPLOAD_BYTES` (`payload-too-large`).",
        422: "A photo is refused or there are too few or too many (`invalid-upload`; "
             "`rejected` names each refused file and why)."},
    ("POST", "/api/training/{job_id}/cancel"): _CANCEL,
    ("POST", "/api/generate/{job_id}/cancel"): _CANCEL,
    ("DELETE", "/api/models/{model_id}"): {
        409: "The model is still training: cancel the training first (`conflict`)."},
    **NOTIFIER_ERRORS,
}


# The parts that answer without NATS or object storage: no error of their own.
QUIET_DEPENDENCIES = frozenset({deps.settings_of, deps.verifier_of, deps.hub_of,
                                deps.get_bearer_token, deps.get_verified_token,
                                deps.get_client})


def dependency_errors(call: Any) -> dict[int, str]:
    """What a dependency can answer. One of `gateway.deps` not classified here (a part
    added since) is taken to reach NATS or object storage: 503 rather than nothing."""
    if call in DEPENDENCY_ERRORS:
        return DEPENDENCY_ERRORS[call]
    if call in QUIET_DEPENDENCIES or getattr(call, "__module__", "") != deps.__name__:
        return {}
    return {503: UNAVAILABLE}


def api_routes(app: FastAPI) -> list[APIRoute]:
    """The app's REST routes, each with its prefix, dependencies and path (FastAPI 0.16x
    keeps included routers as routes of their own: their contexts have it all)."""
    if not hasattr(routing, "iter_route_contexts"):  # before 0.16x: routes are copied in
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [context for context in routing.iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)]


def parameters(route: APIRoute) -> dict[str, list]:
    """The route's parameters by where they are, its dependencies' included."""
    found: dict[str, list] = {"path": [], "query": [], "header": [], "cookie": [], "body": []}
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        for where in found:
            found[where] += getattr(dependant, f"{where}_params")
        stack.extend(dependant.dependencies)
    return found


def dependency_calls(route: APIRoute) -> list[Any]:
    """Every dependency a route runs, sub-dependencies included."""
    calls, stack = [], list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        calls.append(dependant.call)
        stack.extend(dependant.dependencies)
    return calls


def route_errors(route: APIRoute, method: str) -> dict[int, str]:
    """Each error status the route can answer, with why."""
    errors: dict[int, str] = {}
    for call in dependency_calls(route):
        for status, text in dependency_errors(call).items():
            errors.setdefault(status, text)
    params = parameters(route)
    if params["path"]:
        errors.setdefault(404, DEFAULT_TEXT[404])
    if any(params.values()):
        errors.setdefault(422, DEFAULT_TEXT[422])
    if params["body"]:
        errors.setdefault(400, DEFAULT_TEXT[400])
        errors.setdefault(413, DEFAULT_TEXT[413])
    errors.update(ROUTE_ERRORS.get((method, route.path_format), {}))
    return dict(sorted(errors.items()))


# --- putting it together -----------------------------------------------------------------


def install_openapi(app: FastAPI, *, description: str) -> None:
    """Replace `app.openapi` with `describe` (built once, on the first request for it)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app, description=description)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI, *, description: str) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                           description=description, routes=app.routes, tags=app.openapi_tags,
                           servers=app.servers, webhooks=app.webhooks.routes)
    used = {tag for item in document["paths"].values() for operation in item.values()
            for tag in operation.get("tags", [])}
    document["tags"] = [{"name": name, "description": text} for name, text in TAGS.items()
                        if name in used] + [{"name": name} for name in sorted(used - set(TAGS))]
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _add_models(schemas, [ProblemDetails, *{m for bodies in RESPONSE_BODIES.values()
                                      for m in bodies.values() if isinstance(m, type)}])
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            _describe_operation(operation, route, method)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _describe_webhooks(document)
    _document_fields(schemas)
    _describe_successes(document)
    _add_examples(document)
    return document


def _describe_webhooks(document: dict) -> None:
    """The requests Terra sends (`webhooks`): what a receiver answers is its own; FastAPI's
    422 (a schema dropped above) is no answer of ours."""
    for item in document.get("webhooks", {}).values():
        for operation in item.values():
            operation["responses"] = {"2XX": {"description": "Received. Anything else (or "
                                              "no answer in time) is retried; 410 removes "
                                              "the webhook."}}


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _add_models(schemas: dict, models: list[type[BaseModel]]) -> None:
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[schema.get("title", model.__name__)] = schema


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# The problem types the gateway answers (`type` after TYPE_BASE), for the examples.
PROBLEM_TYPES = frozenset(SLUGS.values()) | {
    "email-taken", "weak-password", "invalid-credentials", "invalid-google-token",
    "invalid-refresh-token", "refresh-token-reused", "training-running", "too-many-jobs",
    "invalid-upload", "optimization-failed", "not-ready", "csrf-refused", "limit-reached"}


def _slug(status: int, text: str) -> str:
    """The first problem type a status's text names, else the status's own."""
    named = [word for word in re.findall(r"`([a-z-]+)`", text) if word in PROBLEM_TYPES]
    return named[0] if named else SLUGS.get(status, "http-error")


def _describe_operation(operation: dict, route: APIRoute, method: str) -> None:
    responses = operation["responses"]
    for status, body in RESPONSE_BODIES.get((method, route.path_format), {}).items():
        answer = responses.setdefault(str(status), {"description": body.__doc__ or ""})
        if isinstance(body, dict):
            answer["content"] = copy.deepcopy(body)
        else:
            answer["content"] = {"application/json": {"schema": _ref(body)}}
            answer["description"] = answer.get("description") or body.__doc__
    declared = {int(status): answer.get("description", "") for status, answer
                in responses.items() if status.isdigit() and int(status) >= 400}
    for status, text in {**route_errors(route, method), **declared}.items():
        if status == 422 and text == "Validation Error":  # FastAPI's own
            text = route_errors(route, method).get(422, DEFAULT_TEXT[422])
        example = {"type": TYPE_BASE + _slug(status, text),
                   "title": HTTPStatus(status).phrase, "status": status,
                   "detail": re.split(r" \(|: |; ", text)[0].replace("`", "").rstrip(".")
                   + ".", "instance": route.path_format}
        answer = {"description": text,
                  "content": {PROBLEM_JSON: {"schema": PROBLEM_REF, "example": example}}}
        if status in HEADERS and (method, route.path_format, status) not in NO_HEADERS:
            answer["headers"] = copy.deepcopy(HEADERS[status])
        responses[str(status)] = answer
    operation["responses"] = dict(sorted(responses.items()))
    for param in operation.get("parameters", []):
        doc = PARAMETER_DOCS.get(param["name"]) or FIELD_DOCS.get(param["name"])
        if doc and not param.get("description"):
            param["description"] = doc[0]
            if doc[1] is not None:
                param.setdefault("example", doc[1])


def _describe_successes(document: dict) -> None:
    """FastAPI's "Successful Response" becomes what the body is (its schema's description)."""
    schemas = document["components"]["schemas"]
    for item in document["paths"].values():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if answer.get("description") in (None, "", "Successful Response"):
                    answer["description"] = _success_text(status, answer, schemas)


def _success_text(status: str, answer: dict, schemas: dict) -> str:
    if status == "204":
        return "Done; no body."
    schema = next(iter(answer.get("content", {}).values()), {}).get("schema", {})
    many = schema.get("type") == "array"
    ref = (schema.get("items", {}) if many else schema).get("$ref")
    if ref:
        text = schemas[ref.rsplit("/", 1)[-1]].get("description", "")
        if text:
            return f"A list, each: {text}" if many else text
    return HTTPStatus(int(status)).phrase


def _document_fields(schemas: dict[str, dict]) -> None:
    for name, schema in schemas.items():
        text = SCHEMA_DOCS.get(name) or MODEL_DOCS.get(name)
        if not schema.get("description") and text:
            schema["description"] = text
        for field, prop in schema.get("properties", {}).items():
            doc = FIELD_DOCS.get(f"{name}.{field}") or FIELD_DOCS.get(field)
            if doc is None:
                continue
            text, example = doc
            prop.setdefault("description", text)
            if "examples" not in prop and "$ref" not in prop and example is not None:
                prop["examples"] = [example]


# --- examples ----------------------------------------------------------------------------


def example_of(schema: dict, schemas: dict[str, dict], depth: int = 0) -> Any:
    """An example of a schema, from its fields' examples (None: no example known)."""
    if depth > 8:
        return None
    if "$ref" in schema:
        return example_of(schemas[schema["$ref"].rsplit("/", 1)[-1]], schemas, depth + 1)
    if "examples" in schema:
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    for union in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(union, []):
            if option.get("type") != "null":
                return example_of(option, schemas, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {field: example_of(prop, schemas, depth + 1)
                for field, prop in schema.get("properties", {}).items()
                if field in schema.get("required", []) or "examples" in prop
                or "$ref" in prop}
    if kind == "array":
        item = example_of(schema.get("items", {}), schemas, depth + 1)
        return [] if item is None else [item]
    return _PLACEHOLDERS.get(schema.get("format") or kind)


# For a required field whose model gives no example: a value of its type.
_PLACEHOLDERS: dict[str | None, Any] = {
    "date-time": "2026-11-25T19:57:21.620648Z", "string": "string", "integer": 0,
    "number": 0.0, "boolean": False}


def _add_examples(document: dict) -> None:
    schemas = document["components"]["schemas"]
    for path_item in [*document["paths"].values(), *document.get("webhooks", {}).values()]:
        for operation in path_item.values():
            bodies = [operation.get("requestBody", {}).get("content", {})]
            bodies += [answer.get("content", {}) for answer in operation["responses"].values()]
            for content in bodies:
                for media_type, entry in content.items():
                    if "json" not in media_type or "example" in entry:
                        continue
                    example = example_of(entry.get("schema", {}), schemas)
                    if example is not None:
                        entry["example"] = example


