"""Check HTTP answers against our contract of OSCAR v4.1.2's API (`oscar_api_contract.yaml`).

`check_response` asserts that the status code is declared for that path and method, that the body
is what the contract says (none, plain text, or JSON with the operation's Content-Type), and that
a JSON body validates against the declared type turned into a JSON Schema. Contract objects are
closed: a key the contract does not declare fails, unless the test allows it (`allowed_extras`, a
prefix of the key's dotted path such as "local" or "cluster.nodes[0].labels").

When $OSCAR_API_SPEC names OSCAR's own swagger file, the answer is also checked against it
(swagger.py). Nothing outside the repository is read otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

from . import swagger

CONTRACT_PATH = Path(__file__).with_name("oscar_api_contract.yaml")
SCALARS = ("string", "integer", "number", "boolean")
EMPTY, TEXT = "empty", "text"
_LENGTH_RANGE = re.compile(r"string\((\d+)\.\.(\d+)\)")


@cache
def load_contract() -> dict[str, Any]:
    return yaml.safe_load(CONTRACT_PATH.read_text())


def operation(method: str, path_template: str) -> dict[str, Any]:
    """The contract's entry for `method` on `path_template`."""
    try:
        return load_contract()["paths"][path_template][method.lower()]
    except KeyError:
        raise AssertionError(f"the contract has no {method} {path_template}") from None


def operations() -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(path template, METHOD, operation) for every operation in the contract."""
    for path_template, methods in load_contract()["paths"].items():
        for method, entry in methods.items():
            yield path_template, method.upper(), entry


def declared_body(method: str, path_template: str, status: int) -> Any:
    """What the contract declares for that answer: EMPTY, TEXT or a type expression."""
    responses = operation(method, path_template)["responses"]
    declared = {int(code): body for code, body in responses.items()}
    assert status in declared, (
        f"{method} {path_template} answered {status}, which the contract does not declare "
        f"(declared: {sorted(declared)})"
    )
    return declared[status]


def to_json_schema(expression: Any) -> dict[str, Any]:
    """The JSON Schema (draft 7) of one contract type expression; named types become $refs."""
    if isinstance(expression, list):
        if len(expression) != 1:
            raise ValueError(f"an array type names one item type: {expression!r}")
        return {"type": "array", "items": to_json_schema(expression[0])}
    if isinstance(expression, dict):
        if set(expression) == {"map"}:
            return {"type": "object", "additionalProperties": to_json_schema(expression["map"])}
        if set(expression) == {"nullable"}:
            return {"anyOf": [to_json_schema(expression["nullable"]), {"type": "null"}]}
        properties = {
            key.removesuffix("!"): to_json_schema(item) for key, item in expression.items()
        }
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = [key.removesuffix("!") for key in expression if key.endswith("!")]
        if required:
            schema["required"] = required
        return schema
    if expression in SCALARS:
        return {"type": expression}
    if isinstance(expression, str) and (match := _LENGTH_RANGE.fullmatch(expression)):
        return {"type": "string", "minLength": int(match[1]), "maxLength": int(match[2])}
    if isinstance(expression, str) and expression in load_contract()["types"]:
        return {"$ref": f"#/definitions/{expression}"}
    raise ValueError(f"not a contract type: {expression!r}")


@cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every named type of the contract as a JSON Schema."""
    return {name: to_json_schema(fields) for name, fields in load_contract()["types"].items()}


def body_schema(expression: Any) -> dict[str, Any]:
    """A self-contained JSON Schema document for a response body of that type."""
    return {**to_json_schema(expression), "definitions": definitions()}


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def json_problems(expression: Any, body: Any, allowed_extras: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with `body` as a value of `expression`: wrong types, missing or undeclared
    keys (keys whose dotted path starts with one of `allowed_extras` are not counted)."""
    validator = jsonschema.Draft7Validator(body_schema(expression))
    problems = []
    for error in validator.iter_errors(body):
        where = _dotted(error.absolute_path)
        if error.validator != "additionalProperties":
            problems.append(f"{where or '<body>'}: {error.message}")
            continue
        declared = error.schema.get("properties", {})
        for key in error.instance:
            extra = f"{where}.{key}" if where else key
            if key not in declared and not extra.startswith(allowed_extras):
                problems.append(f"{extra}: a key the contract does not declare")
    return problems


def check_against_contract(
    response: httpx.Response,
    method: str,
    path_template: str,
    allowed_extras: tuple[str, ...] = (),
) -> Any:
    """Assert `response` is what our contract allows; returns the body (JSON or text)."""
    declared = declared_body(method, path_template, response.status_code)
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    what = f"{method} {path_template} {response.status_code}"
    if declared == EMPTY:
        assert response.content == b"", f"{what}: expected no body, got {response.text[:200]!r}"
        return response.text
    if declared == TEXT:
        if response.content:
            assert content_type == "text/plain", f"{what}: text with Content-Type {content_type!r}"
        return response.text
    produces = operation(method, path_template).get("produces")
    assert content_type == produces, f"{what}: Content-Type {content_type!r}, not {produces!r}"
    try:
        body = json.loads(response.text)
    except ValueError as error:
        raise AssertionError(
            f"{what}: the body is not JSON ({error}): {response.text[:200]!r}"
        ) from None
    problems = json_problems(declared, body, allowed_extras)
    assert problems == [], f"{what}: the body breaks the contract: {problems}"
    return body


def check_response(
    response: httpx.Response,
    method: str,
    path_template: str,
    allowed_extras: tuple[str, ...] = (),
) -> Any:
    """Assert `response` keeps our contract (and OSCAR's swagger, when $OSCAR_API_SPEC is set);
    returns the decoded body (JSON or text)."""
    body = check_against_contract(response, method, path_template, allowed_extras)
    if os.environ.get(swagger.SPEC_ENV):
        swagger.check_response(response, method, path_template, allowed_extras=allowed_extras)
    return body
