"""Check HTTP answers against OSCAR's own API spec (Swagger 2.0), when $OSCAR_API_SPEC names it.

The tests check every answer against our contract (contract.py); this module is the optional
second check against OSCAR's published swagger.yaml, which is not part of the repository.
openapi-core reads only OpenAPI 3, so the check is done here: the response's status code must be
declared for that path and method, its Content-Type must be one the operation `produces`, and its
body must validate (jsonschema, draft 4, which Swagger 2.0 schemas are a subset of) against the
declared response schema, with `#/definitions/...` resolved inside the spec itself. Swagger's
objects allow unknown keys, so that alone would accept almost anything: `undeclared_keys` also
lists every key our answer has that the spec does not declare, and the tests allow only the few
extras the local OSCAR adds on purpose.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

SPEC_ENV = "OSCAR_API_SPEC"


@cache
def load_spec() -> dict[str, Any]:
    """OSCAR's swagger file named by $OSCAR_API_SPEC."""
    path = Path(os.environ.get(SPEC_ENV, ""))
    if not path.is_file():
        raise FileNotFoundError(
            f"OSCAR's API spec is not at {str(path)!r}; set {SPEC_ENV} to its swagger.yaml"
        )
    return yaml.safe_load(path.read_text())


def _operation(method: str, path_template: str) -> dict[str, Any]:
    spec = load_spec()
    try:
        return spec["paths"][path_template][method.lower()]
    except KeyError:
        raise AssertionError(f"the spec has no {method} {path_template}") from None


def _schema(method: str, path_template: str, status: int) -> dict[str, Any] | None:
    responses = _operation(method, path_template)["responses"]
    declared = responses.get(str(status))
    assert declared is not None, (
        f"{method} {path_template} answered {status}, which the spec does not declare "
        f"(declared: {sorted(responses)})"
    )
    return declared.get("schema")


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = load_spec()["definitions"]
    while "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolved(schema["allOf"][0])
    return schema


def undeclared_keys(schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Dotted paths of keys in `value` that `schema` (and its nested schemas) do not declare."""
    schema = _resolved(schema)
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if properties is not None and key in properties:
                found += undeclared_keys(properties[key], item, path)
            elif isinstance(extra, dict):
                found += undeclared_keys(extra, item, path)
            elif properties is not None:
                found.append(path)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += undeclared_keys(schema["items"], item, f"{where}[{index}]")
    return found


def check_response(
    response: httpx.Response, method: str, path_template: str, *, allowed_extras: tuple = ()
) -> Any:
    """Assert `response` is what the spec allows; returns the decoded body (JSON or text)."""
    schema = _schema(method, path_template, response.status_code)
    operation = _operation(method, path_template)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if schema is None or not response.content:
        return response.text
    produces = operation.get("produces")
    is_json = schema.get("type") != "string"
    if produces and is_json:
        assert content_type in produces, f"Content-Type {content_type!r} not in {produces}"
    if not is_json:
        assert content_type in ("text/plain", ""), f"text answer with Content-Type {content_type}"
        return response.text
    body = json.loads(response.text)
    document = {**schema, "definitions": load_spec()["definitions"]}
    jsonschema.Draft4Validator(document).validate(body)
    extras = [key for key in undeclared_keys(schema, body) if not key.startswith(allowed_extras)]
    assert extras == [], f"keys the spec does not declare: {extras}"
    return body
