"""A Flatstack client that knows nothing but the node's OpenAPI document.

It reads `/v1/openapi.json` at run time, finds operations by `operationId`, checks every
request body against the operation's schema before sending it and every answer against
the schema of its status (an answer whose status the document does not list is an
error too). Jobs are waited for with `?wait=`; a `202` is followed on `/v1/jobs/{uuid}`.
Standard library and `jsonschema` only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import jsonschema


class SchemaError(AssertionError):
    """A request or an answer that does not match the document."""


class ApiError(Exception):
    """The node refused (an answer the document lists, with the API's error body)."""

    def __init__(self, status: int, body: Any):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Client:
    """Operations of the document, by `operationId`: `client.call("zones.create", body=...)`."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 30.0):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.doc = self._http("GET", "/v1/openapi.json")[1]
        self.operations: dict[str, tuple[str, str, dict]] = {}
        for path, item in self.doc["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                params = item.get("parameters", []) + op.get("parameters", [])
                self.operations[op["operationId"]] = (method.upper(), path, {**op, "parameters": params})
        self.checked: set[str] = set()
        self.validated = 0

    # -- schemas ----------------------------------------------------------------------
    def validate(self, schema: dict, value: Any, what: str) -> None:
        """`value` against `schema`, whose references point into the document."""
        root = {**schema, "components": self.doc["components"]}
        validator = jsonschema.Draft202012Validator(root)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            detail = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3])
            raise SchemaError(f"{what} does not match the document: {detail}\n{json.dumps(value)[:2000]}")
        self.validated += 1

    def schema(self, name: str) -> dict:
        return self.doc["components"]["schemas"][name]

    # -- HTTP -------------------------------------------------------------------------
    def _http(self, method: str, path: str, body: Any = None, headers: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, (json.loads(raw) if raw else None)

    def call(self, operation_id: str, body: Any = None, wait: float | None = 30, **params) -> Any:
        """Runs an operation; returns its answer's body (a job's result for jobs)."""
        method, template, op = self.operations[operation_id]
        self.checked.add(operation_id)
        if isinstance(body, dict) and "action" in body:
            self.checked.add(f"{operation_id}:{body['action']}")
        path, query = template, {}
        for p in op["parameters"]:
            name = p["name"]
            if p["in"] == "path":
                if name not in params:
                    raise SchemaError(f"{operation_id} needs path parameter {name}")
                self.validate(p["schema"], params[name], f"{operation_id} parameter {name}")
                path = path.replace("{" + name + "}", urllib.parse.quote(str(params.pop(name))))
            elif p["in"] == "query":
                if name == "wait" and wait is not None:
                    params[name] = wait
                if name in params:
                    self.validate(p["schema"], params[name], f"{operation_id} parameter {name}")
                    query[name] = params.pop(name)
        if params:
            raise SchemaError(f"{operation_id} has no parameters {sorted(params)}")
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            if body is None and op["requestBody"].get("required"):
                raise SchemaError(f"{operation_id} needs a body")
            self.validate(schema, body, f"{operation_id} request")
        elif body is not None:
            raise SchemaError(f"{operation_id} takes no body")
        if query:
            path += "?" + urllib.parse.urlencode(query)
        status, answer = self._http(method, path, body)
        self.check_answer(operation_id, op, status, answer)
        if status == 202:
            return self.wait_job(answer["job_uuid"])
        if status >= 400:
            raise ApiError(status, answer)
        return answer

    def check_answer(self, operation_id: str, op: dict, status: int, answer: Any) -> None:
        responses = op["responses"]
        declared = responses.get(str(status)) or (responses.get("default") if status >= 400 else None)
        if declared is None:
            raise SchemaError(f"{operation_id} answered {status}, which the document does not list: {answer}")
        content = declared.get("content")
        if content is None:
            if answer is not None:
                raise SchemaError(f"{operation_id} answered {status} with a body the document does not give: {answer}")
            return
        self.validate(content["application/json"]["schema"], answer, f"{operation_id} answer {status}")

    def wait_job(self, uuid: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.call("jobs.show", uuid=uuid)
            if job["state"] != "running":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {uuid} still running")
            time.sleep(0.05)
        if job["state"] == "failed":
            raise ApiError(job.get("status", 500), {"error": job["error"]})
        return {"inventory": job["result"]} if job.get("result") is not None else None
