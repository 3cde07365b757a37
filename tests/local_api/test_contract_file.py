"""The contract checker (contract.py) and its file: it can fail, and, when OSCAR's own swagger is
at hand ($OSCAR_API_SPEC), the contract declares nothing OSCAR does not."""

from __future__ import annotations

import os
from typing import Any

import httpx
import jsonschema
import pytest

from . import swagger
from .contract import (
    EMPTY,
    TEXT,
    check_response,
    definitions,
    load_contract,
    operations,
    to_json_schema,
)

SERVICE = "/system/services/{serviceName}"
GOOD_SERVICE = {
    "name": "demo",
    "image": "docker://python:3.11-slim",
    "script": "echo hi\n",
    "cpu": "0.2",
    "environment": {"variables": {"A": "1"}, "secrets": {}},
    "annotations": {},
}


def json_answer(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_every_type_is_a_valid_json_schema_and_every_json_answer_has_a_content_type():
    for schema in definitions().values():
        jsonschema.Draft7Validator.check_schema(schema)
    for path, method, entry in operations():
        for status, body in entry["responses"].items():
            if body not in (EMPTY, TEXT):
                jsonschema.Draft7Validator.check_schema(to_json_schema(body))
                assert entry.get("produces") == "application/json", (path, method, status)


def test_the_contract_names_the_oscar_version_it_follows():
    assert load_contract()["oscar"] == {
        "version": "v4.1.2",
        "repository": "grycap/oscar",
        "packages": ["pkg/types", "pkg/handlers"],
    }


def test_a_good_answer_passes():
    assert check_response(json_answer(GOOD_SERVICE), "GET", SERVICE) == GOOD_SERVICE
    assert check_response(httpx.Response(404), "GET", SERVICE) == ""
    assert check_response(httpx.Response(201), "POST", "/job/{serviceName}") == ""
    assert check_response(httpx.Response(200, text="Ok"), "GET", "/health") == "Ok"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({**GOOD_SERVICE, "surprise": 1}, "surprise: a key the contract does not declare"),
        ({**GOOD_SERVICE, "environment": {"variables": {}, "extra": {}}}, "environment.extra"),
        ({**GOOD_SERVICE, "cpu": 2}, "2 is not of type 'string'"),
        ({**GOOD_SERVICE, "annotations": {"a": 1}}, "annotations.a"),
        ({**GOOD_SERVICE, "input": [{"path": ["x"]}]}, "input[0].path"),
        ({key: GOOD_SERVICE[key] for key in ("image", "script")}, "'name' is a required property"),
        ({**GOOD_SERVICE, "name": "n" * 40}, "is too long"),
    ],
)
def test_a_body_that_breaks_the_contract_fails(body, words):
    with pytest.raises(AssertionError, match="breaks the contract") as failure:
        check_response(json_answer(body), "GET", SERVICE)
    assert words in str(failure.value)


def test_only_the_named_extras_are_allowed():
    body = {"jobs": {"j1": {"status": "Running", "node": "n"}}, "local": {"home": "/h"}}
    answer = json_answer(body)
    with pytest.raises(AssertionError, match=r"jobs\.j1\.node.*local|local.*jobs\.j1\.node"):
        check_response(answer, "GET", "/system/logs/{serviceName}")
    with pytest.raises(AssertionError, match=r"jobs\.j1\.node"):
        check_response(answer, "GET", "/system/logs/{serviceName}", allowed_extras=("local",))
    check_response(
        answer, "GET", "/system/logs/{serviceName}", allowed_extras=("local", "jobs.j1.node")
    )


def test_an_undeclared_status_code_fails():
    with pytest.raises(AssertionError, match="does not declare"):
        check_response(httpx.Response(409, text="conflict"), "POST", "/system/services")
    with pytest.raises(AssertionError, match="does not declare"):
        check_response(json_answer(GOOD_SERVICE, status=201), "GET", SERVICE)


def test_an_undeclared_operation_fails():
    with pytest.raises(AssertionError, match="has no PATCH"):
        check_response(httpx.Response(204), "PATCH", "/system/services")


def test_wrong_content_type_or_body_kind_fails():
    with pytest.raises(AssertionError, match="Content-Type"):
        check_response(httpx.Response(200, text='{"name": "x"}'), "GET", SERVICE)
    with pytest.raises(AssertionError, match="not JSON"):
        answer = httpx.Response(200, text="{oops", headers={"Content-Type": "application/json"})
        check_response(answer, "GET", SERVICE)
    with pytest.raises(AssertionError, match="expected no body"):
        check_response(httpx.Response(201, text="created"), "POST", "/system/services")
    with pytest.raises(AssertionError, match="text with Content-Type"):
        check_response(json_answer("Ok"), "GET", "/health")


# --- the contract against OSCAR's own swagger ----------------------------------------------------

needs_swagger = pytest.mark.skipif(
    not os.environ.get(swagger.SPEC_ENV),
    reason=f"{swagger.SPEC_ENV} is not set: OSCAR's swagger.yaml is not part of the repository",
)


def shape(schema: dict[str, Any] | None, named: dict[str, Any]) -> Any:
    """A schema reduced to what both files say: field names, scalar types, arrays and maps."""
    if schema is None:
        return None
    while "$ref" in schema:
        schema = named[schema["$ref"].rsplit("/", 1)[1]]
    if len(schema.get("allOf", ())) == 1:
        return shape(schema["allOf"][0], named)
    if "anyOf" in schema:  # {nullable: TYPE}: swagger does not say null, Go's JSON does
        [value] = [part for part in schema["anyOf"] if part.get("type") != "null"]
        return shape(value, named)
    kind = schema.get("type", "object")
    if kind == "array":
        return [shape(schema["items"], named)]
    if kind != "object":
        return kind
    if "properties" in schema:
        return {key: shape(value, named) for key, value in schema["properties"].items()}
    if isinstance(schema.get("additionalProperties"), dict):
        return {"map": shape(schema["additionalProperties"], named)}
    return {}


@needs_swagger
def test_every_path_method_and_status_of_the_contract_is_in_oscars_swagger():
    spec = swagger.load_spec()
    for path, method, entry in operations():
        assert method.lower() in spec["paths"].get(path, {}), f"{method} {path} is not OSCAR's"
        declared = spec["paths"][path][method.lower()]["responses"]
        for status in entry["responses"]:
            assert str(status) in declared, f"OSCAR's {method} {path} has no {status}"


@needs_swagger
def test_content_types_and_body_shapes_match_oscars_swagger():
    spec = swagger.load_spec()
    ours, theirs = definitions(), spec["definitions"]
    for path, method, entry in operations():
        operation = spec["paths"][path][method.lower()]
        assert entry.get("produces") == (operation.get("produces") or [None])[0], (method, path)
        for status, body in entry["responses"].items():
            mine = {"type": "string"} if body in (EMPTY, TEXT) else to_json_schema(body)
            oscars = operation["responses"][str(status)].get("schema")
            assert shape(mine, ours) == shape(oscars, theirs), (method, path, status)
