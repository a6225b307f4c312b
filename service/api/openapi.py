"""The OpenAPI document: the bearer scheme, each operation's role and its error answers.

FastAPI derives operations from the routes; this adds what it cannot know: the
``bearer`` security scheme (global, and per operation: none for public ones),
and the error responses every operation can give with the one
:class:`~service.api.errors.ErrorBody` model: 401/403 (the role check, or the
no-token cross-site guard), 404 (unknown id, ingest switched off), 413 (bodies
over the limit), 422 (invalid parameters or body) and 429 (rate limits).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.errors import ErrorBody
from service.api.roles import ROLE_EXTENSION, Role, RoleTable

REF = "#/components/schemas/{model}"

DESCRIPTIONS = {
    401: "no, wrong or expired bearer token",
    403: "the token's role does not allow this endpoint, or (no tokens configured) a cross-site request",
    404: "no such object, or the endpoint is switched off",
    413: "request body over the limit",
    422: "invalid parameters or body",
    429: "too many requests: retry after the Retry-After header's seconds",
    503: "not available now; retry later",
}
BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


def _errors_for(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    role = operation.get(ROLE_EXTENSION)
    codes = [] if role == Role.PUBLIC else [401, 403]
    if "{" in path or role == Role.INGEST:
        codes.append(404)
    if method in BODY_METHODS:
        codes.append(413)
    if operation.get("parameters") or operation.get("requestBody"):
        codes.append(422)
    if role == Role.INGEST:
        codes.append(429)
    return codes


def build_openapi(app: FastAPI, roles: RoleTable) -> dict[str, Any]:
    """The app's OpenAPI document (built once, then cached on the app)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "a named API token (api.tokens); its role decides the endpoints it may call"}
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    doc["security"] = [{"bearer": []}]
    error_content = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            role = roles.role_of(method, path)
            operation[ROLE_EXTENSION] = str(role) if role is not None else None
            operation["security"] = [] if role is Role.PUBLIC else [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            for code in _errors_for(path, method, operation):
                responses.setdefault(str(code), {"description": DESCRIPTIONS[code]})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = error_content
                    response.setdefault("description", DESCRIPTIONS.get(int(code), "error"))
    app.openapi_schema = doc
    return doc
