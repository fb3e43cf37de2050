"""Contract tests: every route of the local server answers in the shape of the platform's OpenAPI spec.

Each implemented route is driven over plain HTTP (httpx) against a real local server and every
2xx JSON body is validated twice:

* against the response schema the spec (``/work/shared/spec/kamiwaza-openapi-subset.json``,
  OpenAPI 3.1, i.e. JSON Schema 2020-12) declares for that path + method, with ``$ref``s resolved
  into ``components/schemas`` and the ``uuid`` / ``date-time`` formats checked;
* by the official SDK's own pydantic models (kamiwaza-sdk 1.3.0), where the SDK parses the route.

Where the spec and the SDK disagree, the SDK wins; each such point is written down in
``docs/api-differences.md``. Required fields are checked as the union of both (the server must
satisfy whichever client reads it). Error bodies are checked too: a 404 is ``{"detail": str}``
(the SDK maps a JSON 404 to ``NotFoundError``), a 422 is the spec's ``HTTPValidationError``.

A server violation of a point where spec and SDK agree is an ``xfail(strict=True)`` naming the bug,
so the test turns red the day the server is fixed and the marker must go.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import loopback
import pytest
from conftest import GEMMA_REPO, TINY_REPO, LocalServer, start_with_user, wait_for
from fakehub import FakeHub
from pydantic import TypeAdapter
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(os.environ.get("KAMIWAZA_SPEC", "/work/shared/spec/kamiwaza-openapi-subset.json"))
if not SPEC_PATH.exists():  # pragma: no cover - the spec lives outside the repo
    pytest.skip(f"OpenAPI spec not found at {SPEC_PATH}", allow_module_level=True)

SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text())
SPEC_URI = "urn:kamiwaza:openapi-subset"

TINY_FILE = "tiny-Q8_0.gguf"
LIVE_FILE = "gemma-3-270m-it-Q8_0.gguf"
GEMMA_NAME = "gemma-3-270m-q4_k_m"
MISSING = "00000000-0000-4000-8000-000000000000"

# ----------------------------------------------------------------------------------------------------
# Schema machinery
# ----------------------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker(formats=())  # only the formats below, each checked without extra deps


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True
    uuid.UUID(value)
    return all(value[i] == "-" for i in (8, 13, 18, 23))


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 ``date-time``: a timezone offset is mandatory (a naive ISO timestamp is not one)."""
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    stamp, _, offset = match.groups()
    datetime.fromisoformat(stamp.upper() + ("+00:00" if offset in "Zz" else offset))  # field ranges
    return True


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema(method: str, path: str, status: int | str) -> dict[str, Any]:
    """A schema that ``$ref``s the spec's JSON response schema for path + method + status."""
    op = SPEC["paths"][path][method.lower()]
    content = op["responses"][str(status)].get("content", {}).get("application/json")
    assert content is not None, f"the spec declares no JSON body for {method} {path} {status}"
    ref = f"{SPEC_URI}#/" + _pointer("paths", path, method.lower(), "responses", str(status), "content")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": ref + "/application~1json/schema"}


def success_statuses(method: str, path: str) -> list[int]:
    return sorted(int(s) for s in SPEC["paths"][path][method.lower()]["responses"] if s.startswith("2"))


def schema_errors(body: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``body``, ``$ref``s resolved in the spec (with the SDK's required fields)."""
    validator = jsonschema.Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


# How the SDK (kamiwaza-sdk 1.3.0) parses each route's body: its pydantic models, or the raw JSON type it returns.
def _sdk_types() -> dict[str, Any]:
    from kamiwaza_sdk.schemas.auth import PATCreateResponse, PATListResponse, UserInfo
    from kamiwaza_sdk.schemas.models.downloads import ModelDownloadStatus
    from kamiwaza_sdk.schemas.models.model import Model, ModelConfig
    from kamiwaza_sdk.schemas.models.model_file import ModelFile
    from kamiwaza_sdk.schemas.models.model_search import ModelSearchResponse
    from kamiwaza_sdk.schemas.serving.serving import (
        ContainerLogListResponse,
        ContainerLogPatternResponse,
        ContainerLogResponse,
        ModelInstance,
        UIModelDeployment,
    )

    return {
        "Model": Model,
        "[Model]": list[Model],
        "[ModelFile]": list[ModelFile],
        "ModelFile": ModelFile,
        "ModelConfig": ModelConfig,
        "[ModelConfig]": list[ModelConfig],
        "[ModelDownloadStatus]": list[ModelDownloadStatus],
        "ModelSearchResponse": ModelSearchResponse,
        "UIModelDeployment": UIModelDeployment,
        "[UIModelDeployment]": list[UIModelDeployment],
        "[ModelInstance]": list[ModelInstance],
        "ContainerLogResponse": ContainerLogResponse,
        "ContainerLogPatternResponse": ContainerLogPatternResponse,
        "ContainerLogListResponse": ContainerLogListResponse,
        "ModelInstance": ModelInstance,
        "PATCreateResponse": PATCreateResponse,
        "PATListResponse": PATListResponse,
        "UserInfo": UserInfo,
        "int": int,  # get_model_memory_usage / get_model_file_memory_usage -> int
        "[dict]": list[dict],  # serving.get_health() -> List[dict]
        "str": str,  # serving.get_deployment_status() -> str
        "bool": bool,  # serving.stop_deployment() -> bool
        "dict": dict,  # delete_model / delete_model_file / download: raw dicts
    }


SDK_TYPES = _sdk_types()

# Fields the SDK requires that the spec leaves optional or defaulted (kamiwaza-api.md §3, §8.7). The pydantic
# parse catches them too; listing them here keeps the schema check a strict superset of both clients.
SDK_REQUIRED = {
    "ModelConfig": ["created_at"],
    "UIModelDeployment": ["status"],
    "ModelInstance": ["deployed_at"],
}


def _overlay_registry() -> Registry:
    spec = json.loads(json.dumps(SPEC))
    for name, fields in SDK_REQUIRED.items():
        schema = spec["components"]["schemas"][name]
        schema["required"] = sorted(set(schema.get("required", [])) | set(fields))
    return Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))


REGISTRY: Registry = _overlay_registry()


def check(
    response: httpx.Response,
    method: str,
    path: str,
    *,
    sdk: str | None = None,
    statuses: set[int] | None = None,
) -> Any:
    """Assert a success ``response`` matches the spec for ``method path`` (and parses as the SDK does)."""
    where = f"{method} {path} -> {response.status_code}"
    assert 200 <= response.status_code < 300, f"{where}: {response.text[:2000]}"
    allowed = statuses or set(success_statuses(method, path))
    assert response.status_code in allowed, f"{where}: spec says {sorted(allowed)}"
    assert response.headers.get("content-type", "").startswith("application/json"), where
    body = response.json()
    declared = SPEC["paths"][path][method.lower()]["responses"]
    status = response.status_code if str(response.status_code) in declared else success_statuses(method, path)[0]
    errors = schema_errors(body, response_schema(method, path, status))
    assert not errors, f"{where} violates the spec:\n  " + "\n  ".join(errors[:20])
    if sdk is not None:
        TypeAdapter(SDK_TYPES[sdk]).validate_python(body)
    return body


# ----------------------------------------------------------------------------------------------------
# The world the routes are driven through: a downloaded tiny model, a live download, a deployment
# ----------------------------------------------------------------------------------------------------


@dataclass
class World:
    server: LocalServer
    hub: FakeHub
    http: httpx.Client
    request: pytest.FixtureRequest
    cache: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], Any]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:  # lazily set up parts: world.tiny, world.deployment, ...
        if name.startswith("_") or name not in _PARTS:
            raise AttributeError(name)
        if name not in self.cache:
            self.cache[name] = _PARTS[name](self)
        return self.cache[name]


_PARTS: dict[str, Callable[[World], Any]] = {}


def part(fn: Callable[[World], Any]) -> Callable[[World], Any]:
    _PARTS[fn.__name__] = fn
    return fn


@part
def tiny(w: World) -> dict[str, Any]:
    """The tiny model from the fake hub, downloaded through POST /models/download/ (the SDK's body)."""
    body = {"model": TINY_REPO, "version": None, "hub": "HubsHf", "files_to_download": [TINY_FILE]}
    r = w.http.post("/models/download/", json=body)
    assert r.status_code == 200, r.text
    model_id = r.json()["model_id"]
    wait_for(
        lambda: all(not s["is_downloading"] for s in _statuses(w, model_id)),
        timeout=30,
        what="the tiny download",
    )
    [file_row] = w.http.get(f"/models/{model_id}").json()["m_files"]
    [config] = w.http.get("/model_configs/", params={"model_id": model_id}).json()
    return {"download_response": r, "model_id": model_id, "file_id": file_row["id"], "config_id": config["id"]}


def _statuses(w: World, model_id: str) -> list[dict[str, Any]]:
    r = w.http.get("/model_files/download_status/", params={"model_ids": model_id})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@part
def gemma(w: World) -> dict[str, Any]:
    """The real small model, pulled from a local file by the CLI, with its default config."""
    r = w.server.cli("pull", str(w.request.getfixturevalue("gemma_path")))
    assert r.exit_code == 0, r.stderr
    [model] = [m for m in w.http.get("/models/").json() if m["name"] == GEMMA_NAME]
    [config] = w.http.get(f"/models/{model['id']}/configs", params={"default": True}).json()
    return {"model_id": model["id"], "config_id": config["id"]}


@part
def deployment(w: World) -> dict[str, Any]:
    """A real llama.cpp deployment, made with the SDK's request body and polled until DEPLOYED."""
    from kamiwaza_sdk.schemas.serving.serving import CreateModelDeployment

    g = w.gemma
    body = CreateModelDeployment(m_id=g["model_id"], m_config_id=g["config_id"]).model_dump(mode="json", by_alias=True)
    r = w.http.post("/serving/deploy_model", json=body)
    assert 200 <= r.status_code < 300, r.text
    dep_id = r.json()
    w.cleanups.append(lambda: w.http.delete(f"/serving/deployment/{dep_id}"))

    polls: list[httpx.Response] = []

    def settled() -> str | None:
        polls.append(w.http.get(f"/serving/deployment/{dep_id}"))
        status = str(polls[-1].json()["status"])
        return status if status in ("DEPLOYED", "FAILED", "ERROR") else None

    status = wait_for(settled, timeout=120, interval=0.2, what="the deployment")
    assert status == "DEPLOYED", w.http.get(f"/serving/deployment/{dep_id}/logs").json()["logs"][-20:]
    return {"deploy_response": r, "id": dep_id, "first_poll": polls[0]}


@part
def live(w: World) -> dict[str, Any]:
    """A download in flight: the real model from the fake hub, throttled so it lasts the test."""
    w.tiny  # noqa: B018 - finish the quick download before the hub is throttled
    w.hub.rate_limit = 4 << 20  # the 253 MB file takes a minute; 1 % takes well under a second
    w.cleanups.append(lambda: setattr(w.hub, "rate_limit", None))
    r = w.http.post("/models/download/", json={"model": GEMMA_REPO, "hub": "HubsHf", "files_to_download": [LIVE_FILE]})
    assert r.status_code == 200, r.text
    model_id, [file_id] = r.json()["model_id"], r.json()["files"]
    w.cleanups.append(lambda: w.http.delete(f"/model_files/{file_id}/download"))
    wait_for(
        lambda: any(s["download_percentage"] for s in _statuses(w, model_id)),
        timeout=30,
        what="the download to start",
    )
    return {"model_id": model_id, "file_id": file_id}


@pytest.fixture(scope="module")
def world(server: LocalServer, hub: FakeHub, request: pytest.FixtureRequest) -> Iterator[World]:
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": "Bearer local"}) as http:
        w = World(server, hub, http, request)
        try:
            yield w
        finally:
            for cleanup in reversed(w.cleanups):
                cleanup()


# ----------------------------------------------------------------------------------------------------
# Success responses: one case per route
# ----------------------------------------------------------------------------------------------------


@dataclass
class Route:
    method: str
    path: str  # as in the spec
    run: Callable[[World], None]
    marks: tuple[Any, ...] = ()
    variant: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.variant}]" if self.variant else "")


ROUTES: list[Route] = []


def route(method: str, path: str, *, variant: str = "", marks: tuple[Any, ...] = ()) -> Callable[..., Any]:
    def register(fn: Callable[[World], None]) -> Callable[[World], None]:
        ROUTES.append(Route(method, path, fn, marks, variant))
        return fn

    return register


# --- misc --------------------------------------------------------------------------------------------


@route("GET", "/ping")
def _ping(w: World) -> None:
    body = check(w.http.get("/ping"), "GET", "/ping", sdk="dict")
    # The platform's answer (the SDK's live test reads both keys), and what this server is.
    assert body["status"] == "pong" and isinstance(body["timestamp"], float)
    assert body["server"] == "kamiwaza-local" and Path(body["home"]) == w.server.home.resolve()


# --- auth (PATs and users/me; the password grant and refresh are test_auth.py's, on a server with a user) ---


@route("GET", "/auth/users/me")
def _users_me(w: World) -> None:
    me = check(w.http.get("/auth/users/me"), "GET", "/auth/users/me", sdk="UserInfo")
    assert me["username"] == "local"


@route("POST", "/auth/pats")
def _create_pat(w: World) -> None:
    r = w.http.post("/auth/pats", params={"name": "contract", "ttl_seconds": 3600})  # the SDK's query parameters
    made = check(r, "POST", "/auth/pats", sdk="PATCreateResponse")
    assert made["pat"]["name"] == "contract" and made["pat"]["revoked"] is False and made["token"]
    w.cache["pat"] = made


@route("GET", "/auth/pats")
def _list_pats(w: World) -> None:
    w.http.post("/auth/pats", params={"name": "listed"})
    pats = check(w.http.get("/auth/pats"), "GET", "/auth/pats", sdk="PATListResponse")["pats"]
    assert "listed" in {p["name"] for p in pats}
    assert all("token" not in p for p in pats)  # the secret is shown once, at creation


@route("DELETE", "/auth/pats/{jti}")
def _revoke_pat(w: World) -> None:
    made = w.http.post("/auth/pats", params={"name": "doomed"}).json()
    check(w.http.delete(f"/auth/pats/{made['pat']['jti']}"), "DELETE", "/auth/pats/{jti}", sdk="dict")
    [pat] = [p for p in w.http.get("/auth/pats").json()["pats"] if p["jti"] == made["pat"]["jti"]]
    assert pat["revoked"] is True
    assert w.http.delete(f"/auth/pats/{made['pat']['jti']}x").status_code == 404


@route("GET", "/auth/users/me/password-capability")
def _password_capability(w: World) -> None:
    r = w.http.get("/auth/users/me/password-capability")
    answer = check(r, "GET", "/auth/users/me/password-capability", sdk="dict")
    assert answer["available"] is False and "KAMIWAZA_LOCAL_PASSWORD" in answer["reason"]


# --- models ------------------------------------------------------------------------------------------


@route("POST", "/models/")
def _create_model(w: World) -> None:
    body = {"name": "contract-made", "repo_modelId": "contract/made-GGUF", "hub": "HubsHf"}
    created = check(w.http.post("/models/", json=body), "POST", "/models/", sdk="Model")
    assert created["id"] and created["m_files"] == []
    w.http.delete(f"/models/{created['id']}")


@route("GET", "/models/")
def _list_models(w: World) -> None:
    w.tiny  # noqa: B018
    for load_files in (False, True):
        models = check(w.http.get("/models/", params={"load_files": load_files}), "GET", "/models/", sdk="[Model]")
        [tiny] = [m for m in models if m["repo_modelId"] == TINY_REPO]
        assert [f["name"] for f in tiny["m_files"]] == ([TINY_FILE] if load_files else [])


@route("GET", "/models/{model_id}")
def _get_model(w: World) -> None:
    model = check(w.http.get(f"/models/{w.tiny['model_id']}"), "GET", "/models/{model_id}", sdk="Model")
    assert [f["name"] for f in model["m_files"]] == [TINY_FILE]  # get_model_files_by_model_id reads these
    downloading = check(w.http.get(f"/models/{w.live['model_id']}"), "GET", "/models/{model_id}", sdk="Model")
    assert [f["id"] for f in downloading["files_being_downloaded"]] == [w.live["file_id"]]


@route("GET", "/models/{model_id}/configs")
def _model_configs(w: World) -> None:
    for default in (False, True):
        r = w.http.get(f"/models/{w.tiny['model_id']}/configs", params={"default": default})
        configs = check(r, "GET", "/models/{model_id}/configs", sdk="[ModelConfig]")
        assert configs and all(c["m_id"] == w.tiny["model_id"] for c in configs)


@route("GET", "/models/pending_deployments")
def _pending_deployments(w: World) -> None:
    w.live  # noqa: B018
    pending = check(w.http.get("/models/pending_deployments"), "GET", "/models/pending_deployments", sdk="dict")
    assert pending["downloading_models"] == [GEMMA_REPO] and pending["pending_deployments"] == []
    assert [d["id"] for d in pending["active_downloads"]] == [w.live["file_id"]]


@route("POST", "/models/cleanup_stale_deployments")
def _cleanup_stale(w: World) -> None:
    r = w.http.post("/models/cleanup_stale_deployments")
    assert check(r, "POST", "/models/cleanup_stale_deployments", sdk="dict")["cleaned_count"] == 0


@route("GET", "/models/{model_id}/deployment_info")
def _deployment_info(w: World) -> None:
    path = "/models/{model_id}/deployment_info"
    w.deployment  # noqa: B018
    info = check(w.http.get(f"/models/{w.gemma['model_id']}/deployment_info"), "GET", path, sdk="dict")
    assert info["deployed"] is True and info["deployment_id"] == w.deployment["id"]
    assert info["engine_type"] == "llamacpp" and info["lb_port"] > 0
    assert check(w.http.get(f"/models/{w.tiny['model_id']}/deployment_info"), "GET", path) == {"deployed": False}


def _expected_memory(w: World, model_id: str, file_id: str | None = None) -> int:
    """The rule: the deploy check's own estimate (memory.py, from the GGUF) for the file and default config."""
    from kamiwaza_cli.server.supervisor import estimate_deployment

    model = w.http.get(f"/models/{model_id}").json()
    [f] = [f for f in model["m_files"] if file_id is None or f["id"] == file_id]
    [config] = [c for c in w.http.get(f"/models/{model_id}/configs").json() if c["default"]]
    need = estimate_deployment(Path(f["storage_location"]), config["config"], None, None)
    if model_id == w.gemma["model_id"]:  # a real model: its layers, heads and tensors were read
        assert need.kv_cache > 0 and need.weights > 0
    return need.total


@route("GET", "/models/{model_id}/memory_usage")
def _model_memory_usage(w: World) -> None:
    for model_id in (w.tiny["model_id"], w.gemma["model_id"]):
        r = w.http.get(f"/models/{model_id}/memory_usage")
        assert check(r, "GET", "/models/{model_id}/memory_usage", sdk="int") == _expected_memory(w, model_id)


@route("POST", "/models/deploy_after_download/{model_key}")
def _deploy_after_download(w: World) -> None:
    path = "/models/deploy_after_download/{model_key}"
    w.deployment, w.live  # noqa: B018
    # Still downloading: nothing is deployed. Already deployed: the running deployment, no second engine.
    waiting = check(w.http.post(f"/models/deploy_after_download/{GEMMA_REPO}"), "POST", path, sdk="dict")
    assert waiting == {"deployed": False, "status": "downloading", "model_id": w.live["model_id"], "files": [LIVE_FILE]}
    r = w.http.post(f"/models/deploy_after_download/{w.gemma['model_id']}", json={"files_to_deploy": None})
    running = check(r, "POST", path, sdk="dict")
    assert running["deployed"] is True and running["deployment_id"] == w.deployment["id"]


@route("POST", "/models/search/")
def _search_models(w: World) -> None:
    w.tiny  # noqa: B018
    body = {"query": "tiny-GGUF", "hubs_to_search": ["*"], "exact": False, "limit": 100}  # the SDK's body
    found = check(w.http.post("/models/search/", json=body), "POST", "/models/search/", sdk="ModelSearchResponse")
    assert TINY_REPO in {r["model"]["repo_modelId"] for r in found["results"]}
    assert found["total_results"] == len(found["results"])
    # Hub-only results (no id yet) and an exact search.
    body = {"query": "kamiwaza-test", "hubs_to_search": ["*"], "exact": False, "limit": 100}
    found = check(w.http.post("/models/search/", json=body), "POST", "/models/search/", sdk="ModelSearchResponse")
    assert any(r["id"] is None for r in found["results"]) and any(r["id"] for r in found["results"])
    body = {"query": TINY_REPO, "hubs_to_search": ["HubsHf"], "exact": True, "limit": 10}
    found = check(w.http.post("/models/search/", json=body), "POST", "/models/search/", sdk="ModelSearchResponse")
    assert [r["model"]["repo_modelId"] for r in found["results"]] == [TINY_REPO]


@route(
    "POST",
    "/models/search/",
    variant="hub error",
)
def _search_models_hub_error(w: World) -> None:
    body = {"query": "kamiwaza-test/no-such-GGUF", "hubs_to_search": ["*"], "exact": False, "limit": 100}
    found = check(w.http.post("/models/search/", json=body), "POST", "/models/search/", sdk="ModelSearchResponse")
    assert found["results"] == [] and found.get("hub_error")


@route("POST", "/models/download/")
def _download(w: World) -> None:
    first = check(w.tiny["download_response"], "POST", "/models/download/", sdk="dict")
    assert first["result"] is True and first["files"] == [w.tiny["file_id"]]
    body = {"model": TINY_REPO, "version": None, "hub": "HubsHf", "files_to_download": [TINY_FILE]}
    again = check(w.http.post("/models/download/", json=body), "POST", "/models/download/", sdk="dict")
    assert again["files"] == [w.tiny["file_id"]]


@route("DELETE", "/models/{model_id}")
def _delete_model(w: World) -> None:
    made = w.http.post("/models/", json={"name": "contract-doomed", "repo_modelId": "contract/doomed-GGUF"})
    assert made.status_code == 200, made.text
    r = w.http.delete(f"/models/{made.json()['id']}", params={"force": False})
    check(r, "DELETE", "/models/{model_id}", sdk="dict")
    assert w.http.get(f"/models/{made.json()['id']}").status_code == 404


# --- model files -------------------------------------------------------------------------------------


@route("GET", "/model_files/")
def _list_files(w: World) -> None:
    files = check(w.http.get("/model_files/"), "GET", "/model_files/", sdk="[ModelFile]")
    assert w.tiny["file_id"] in {f["id"] for f in files}


@route("GET", "/model_files/{model_file_id}")
def _get_file(w: World) -> None:
    f = check(w.http.get(f"/model_files/{w.tiny['file_id']}"), "GET", "/model_files/{model_file_id}", sdk="ModelFile")
    assert f["model_id"] == w.tiny["model_id"] and f["storage_location"] and not f["is_downloading"]
    r = w.http.get(f"/model_files/{w.live['file_id']}")
    f = check(r, "GET", "/model_files/{model_file_id}", sdk="ModelFile")
    assert f["is_downloading"] is True and f["download_percentage"] < 100


@route("POST", "/model_files/search/")
def _search_files(w: World) -> None:
    w.tiny  # noqa: B018 - one registered file and one only on the hub: both shapes
    body = {"hub": "HubsHf", "model": TINY_REPO, "version": None}  # the SDK's body
    files = check(w.http.post("/model_files/search/", json=body), "POST", "/model_files/search/", sdk="[ModelFile]")
    by_name = {f["name"]: f for f in files}
    assert by_name[TINY_FILE]["id"] == w.tiny["file_id"] and by_name["tiny-Q4_K_M.gguf"]["id"] is None


@route("POST", "/model_files/")
def _create_file(w: World) -> None:
    # The SDK's CreateModelFile body plus the model it belongs to (docs/api-differences.md).
    body = {"name": "extra.bin", "size": 1024, "storage_type": "scratch", "storage_host": "localhost",
            "storage_location": "/etc/passwd", "model_id": w.tiny["model_id"]}  # fmt: skip
    made = check(w.http.post("/model_files/", json=body), "POST", "/model_files/", sdk="ModelFile")
    assert made["name"] == "extra.bin" and made["model_id"] == w.tiny["model_id"]
    assert made["storage_location"] is None  # a path the client names is never the file's place
    w.http.delete(f"/model_files/{made['id']}")
    without = w.http.post("/model_files/", json={k: v for k, v in body.items() if k != "model_id"})
    assert without.status_code == 400 and "kamiwaza pull" in without.json()["detail"]


@route("GET", "/model_files/{model_file_id}/memory_usage")
def _file_memory_usage(w: World) -> None:
    [gemma_file] = w.http.get(f"/models/{w.gemma['model_id']}").json()["m_files"]
    for model_id, file_id in ((w.tiny["model_id"], w.tiny["file_id"]), (w.gemma["model_id"], gemma_file["id"])):
        r = w.http.get(f"/model_files/{file_id}/memory_usage")
        usage = check(r, "GET", "/model_files/{model_file_id}/memory_usage", sdk="int")
        assert usage == _expected_memory(w, model_id, file_id)
    busy = w.http.get(f"/model_files/{w.live['file_id']}/memory_usage")  # not on disk yet
    assert busy.status_code == 400 and "pull it first" in busy.json()["detail"]


@route("GET", "/model_files/download_status/")
def _download_status(w: World) -> None:
    # The SDK's repeated ?model_ids= (not in the spec): a finished download and one in flight.
    params = [("model_ids", w.tiny["model_id"]), ("model_ids", w.live["model_id"])]
    r = w.http.get("/model_files/download_status/", params=params)
    statuses = check(r, "GET", "/model_files/download_status/", sdk="[ModelDownloadStatus]")
    by_id = {s["id"]: s for s in statuses}
    assert by_id[w.tiny["file_id"]]["is_downloading"] is False
    assert by_id[w.live["file_id"]]["is_downloading"] is True
    everything = check(w.http.get("/model_files/download_status/"), "GET", "/model_files/download_status/")
    assert {s["id"] for s in everything} >= set(by_id)


@route("DELETE", "/model_files/{model_file_id}/download")
def _cancel_download(w: World) -> None:
    path = "/model_files/{model_file_id}/download"
    cancelled = check(w.http.delete(f"/model_files/{w.live['file_id']}/download"), "DELETE", path)
    assert cancelled["result"] is True and cancelled["file_id"] == w.live["file_id"] and cancelled["cancelled_at"]
    idle = check(w.http.delete(f"/model_files/{w.tiny['file_id']}/download"), "DELETE", path)  # nothing to cancel
    assert idle["result"] is False and idle["file_id"] == w.tiny["file_id"]


@route("DELETE", "/model_files/downloads/cancel_all")
def _cancel_all(w: World) -> None:
    path = "/model_files/downloads/cancel_all"
    body = {"model": GEMMA_REPO, "hub": "HubsHf", "files_to_download": ["gemma-3-270m-it-Q6_K.gguf"]}
    w.hub.rate_limit = 4 << 20
    started = w.http.post("/models/download/", json=body)
    assert started.status_code == 200, started.text
    other = check(w.http.delete(path, params={"model_id": w.tiny["model_id"]}), "DELETE", path)
    assert other["total_downloads"] == 0 and other["cancelled_files"] == []
    done = check(w.http.delete(path), "DELETE", path)
    assert done["cancelled_files"] == started.json()["files"] and done["result"] is True
    w.hub.rate_limit = None


@route("DELETE", "/model_files/{model_file_id}")
def _delete_file(w: World) -> None:
    body = {"model": TINY_REPO, "hub": "HubsHf", "files_to_download": ["tiny-Q4_K_M.gguf"]}
    started = w.http.post("/models/download/", json=body)
    assert started.status_code == 200, started.text
    [file_id] = started.json()["files"]
    check(w.http.delete(f"/model_files/{file_id}"), "DELETE", "/model_files/{model_file_id}", sdk="dict")
    assert w.http.get(f"/model_files/{file_id}").status_code == 404
    assert w.http.get(f"/models/{w.tiny['model_id']}").status_code == 200  # the model stays


# --- model configs -----------------------------------------------------------------------------------


def _config_body(w: World, **over: Any) -> dict[str, Any]:
    # The body CreateModelConfig.model_dump(mode="json") gives (kamiwaza-api.md §2.1, observed).
    body = {
        "m_id": w.tiny["model_id"],
        "m_file_id": None,
        "name": "contract",
        "default": False,
        "description": "made by test_contract",
        "config": {"n_ctx": 4096},
        "system_config": {},
    }
    return {**body, **over}


@route("GET", "/model_configs/")
def _list_configs(w: World) -> None:
    r = w.http.get("/model_configs/", params={"model_id": w.tiny["model_id"]})
    [config] = check(r, "GET", "/model_configs/", sdk="[ModelConfig]")
    assert config["default"] is True and config["id"] == w.tiny["config_id"]


@route("POST", "/model_configs/")
def _create_config(w: World) -> None:
    made = check(w.http.post("/model_configs/", json=_config_body(w)), "POST", "/model_configs/", sdk="ModelConfig")
    assert made["config"] == {"n_ctx": 4096} and made["default"] is False
    w.http.delete(f"/model_configs/{made['id']}")


@route("GET", "/model_configs/{model_config_id}")
def _get_config(w: World) -> None:
    r = w.http.get(f"/model_configs/{w.tiny['config_id']}")
    config = check(r, "GET", "/model_configs/{model_config_id}", sdk="ModelConfig")
    assert config["m_id"] == w.tiny["model_id"]


@route("PUT", "/model_configs/{model_config_id}")
def _update_config(w: World) -> None:
    made = w.http.post("/model_configs/", json=_config_body(w)).json()
    r = w.http.put(f"/model_configs/{made['id']}", json=_config_body(w, description="updated", config={"n_ctx": 512}))
    updated = check(r, "PUT", "/model_configs/{model_config_id}", sdk="ModelConfig")
    assert updated["id"] == made["id"] and updated["description"] == "updated" and updated["config"] == {"n_ctx": 512}
    w.http.delete(f"/model_configs/{made['id']}")


@route("DELETE", "/model_configs/{model_config_id}")
def _delete_config(w: World) -> None:
    made = w.http.post("/model_configs/", json=_config_body(w)).json()
    check(w.http.delete(f"/model_configs/{made['id']}"), "DELETE", "/model_configs/{model_config_id}", sdk="dict")
    assert w.http.get(f"/model_configs/{made['id']}").status_code == 404


# --- serving -----------------------------------------------------------------------------------------


@route("POST", "/serving/deploy_model")
def _deploy(w: World) -> None:
    # The spec says 202; the SDK takes any 2xx and the server answers 200 (docs/api-differences.md).
    r = w.deployment["deploy_response"]
    dep_id = check(r, "POST", "/serving/deploy_model", sdk="str", statuses={200, 202})
    assert dep_id == w.deployment["id"] and uuid.UUID(dep_id)


@route("GET", "/serving/deployments")
def _list_deployments(w: World) -> None:
    for params in ({}, {"model_id": w.gemma["model_id"]}):
        r = w.http.get("/serving/deployments", params=params)
        deps = check(r, "GET", "/serving/deployments", sdk="[UIModelDeployment]")
        assert w.deployment["id"] in {d["id"] for d in deps}


@route("GET", "/serving/deployment/{deployment_id}")
def _get_deployment(w: World) -> None:
    r = w.http.get(f"/serving/deployment/{w.deployment['id']}")
    dep = check(r, "GET", "/serving/deployment/{deployment_id}", sdk="UIModelDeployment")
    assert dep["status"] == "DEPLOYED" and [i["status"] for i in dep["instances"]] == ["DEPLOYED"]
    # The first poll right after deploy_model (usually still REQUESTED, no instance yet) must hold too.
    check(w.deployment["first_poll"], "GET", "/serving/deployment/{deployment_id}", sdk="UIModelDeployment")


@route("GET", "/serving/deployment/{deployment_id}/status")
def _deployment_status(w: World) -> None:
    r = w.http.get(f"/serving/deployment/{w.deployment['id']}/status")
    assert check(r, "GET", "/serving/deployment/{deployment_id}/status", sdk="str") == "DEPLOYED"


@route("GET", "/serving/deployment/{deployment_id}/logs")
def _deployment_logs(w: World) -> None:
    r = w.http.get(f"/serving/deployment/{w.deployment['id']}/logs")
    logs = check(r, "GET", "/serving/deployment/{deployment_id}/logs", sdk="ContainerLogResponse")
    assert logs["deployment_id"] == w.deployment["id"] and logs["logs"] and logs["capture_active"] is True


@route("GET", "/serving/model_instances")
def _model_instances(w: World) -> None:
    for params in ({}, {"deployment_id": w.deployment["id"]}):
        r = w.http.get("/serving/model_instances", params=params)
        instances = check(r, "GET", "/serving/model_instances", sdk="[ModelInstance]")
        assert w.deployment["id"] in {i["deployment_id"] for i in instances}


@route(
    "GET",
    "/serving/health",
)
def _serving_health(w: World) -> None:
    w.deployment  # noqa: B018
    check(w.http.get("/serving/health"), "GET", "/serving/health", sdk="[dict]")


@route("POST", "/serving/estimate_model_vram")
def _estimate_vram(w: World) -> None:
    from kamiwaza_sdk.schemas.serving.serving import CreateModelDeployment

    g = w.gemma
    body = CreateModelDeployment(m_id=g["model_id"], m_config_id=g["config_id"]).model_dump(mode="json", by_alias=True)
    est = check(w.http.post("/serving/estimate_model_vram", json=body), "POST", "/serving/estimate_model_vram")
    assert est["computed_vram_estimate"] == _expected_memory(w, g["model_id"]) and est["estimation_source"] == "gguf"
    assert est["weights"] == sum(est["weights_by_type"].values()) and {"Q4_K", "F32"} <= set(est["weights_by_type"])
    assert est["computed_vram_estimate"] == est["weights"] + est["kv_cache"] + est["prompt_cache"] + est["compute"]
    # An unknown model: the platform's keys, no number (the SDK's live test posts a random m_id).
    unknown = {**body, "m_id": MISSING}
    est = check(w.http.post("/serving/estimate_model_vram", json=unknown), "POST", "/serving/estimate_model_vram")
    assert est["computed_vram_estimate"] is None and MISSING in est["detail"]


@route("GET", "/serving/status")
def _serving_status(w: World) -> None:
    status = check(w.http.get("/serving/status"), "GET", "/serving/status", sdk="dict")
    assert status["status"] == "not running" and status["ray"] is False  # no Ray here, by design


@route("GET", "/serving/logs/{engine_type}")
def _engine_logs(w: World) -> None:
    r = w.http.get("/serving/logs/llamacpp")
    listed = check(r, "GET", "/serving/logs/{engine_type}", sdk="ContainerLogListResponse")
    assert w.deployment["id"] in {entry["deployment_id"] for entry in listed["logs"]}
    r = w.http.get("/serving/logs/vllm")
    assert check(r, "GET", "/serving/logs/{engine_type}", sdk="ContainerLogListResponse") == {
        "engine_type": "vllm",
        "logs": [],
    }


@route("GET", "/serving/model_instance/{instance_id}")
def _model_instance(w: World) -> None:
    [listed] = w.http.get("/serving/model_instances", params={"deployment_id": w.deployment["id"]}).json()
    r = w.http.get(f"/serving/model_instance/{listed['id']}")
    assert check(r, "GET", "/serving/model_instance/{instance_id}", sdk="ModelInstance") == listed


@route("GET", "/serving/deployment/{deployment_id}/logs/patterns")
def _log_patterns(w: World) -> None:
    r = w.http.get(f"/serving/deployment/{w.deployment['id']}/logs/patterns")
    path = "/serving/deployment/{deployment_id}/logs/patterns"
    found = check(r, "GET", path, sdk="ContainerLogPatternResponse")
    assert found["deployment_id"] == w.deployment["id"] and found["patterns_detected"]["oom"] is False


@route("DELETE", "/serving/deployment/{deployment_id}")
def _stop_deployment(w: World) -> None:
    dep_id = w.deployment["id"]
    r = w.http.delete(f"/serving/deployment/{dep_id}", params={"force": False})
    assert check(r, "DELETE", "/serving/deployment/{deployment_id}", sdk="bool") is True
    # A stopped deployment stays listed: its shape must hold too.
    r = w.http.get(f"/serving/deployment/{dep_id}")
    stopped = check(r, "GET", "/serving/deployment/{deployment_id}", sdk="UIModelDeployment")
    assert stopped["status"] == "STOPPED"


@route("DELETE", "/serving/deployment/{deployment_id}/delete")
def _delete_deployment(w: World) -> None:
    dep_id = w.deployment["id"]  # stopped by the case above
    r = w.http.delete(f"/serving/deployment/{dep_id}/delete", params={"force": False})
    assert check(r, "DELETE", "/serving/deployment/{deployment_id}/delete", sdk="bool") is True
    assert w.http.get(f"/serving/deployment/{dep_id}").status_code == 404


@pytest.mark.parametrize("case", [pytest.param(r, id=r.id, marks=r.marks) for r in ROUTES])
def test_success_response_matches_spec(world: World, case: Route) -> None:
    case.run(world)


# The models and serving API, /ping, and the auth routes of a signed-in user.
COVERED_PREFIXES = (
    "/api/models/",
    "/api/model_files/",
    "/api/model_configs/",
    "/api/serving/",
    "/api/ping",
    "/api/auth/pats",
    "/api/auth/users/me",
)
# The password grant and refresh need a server with a user: test_password_grant_and_refresh below.
ELSEWHERE = {("POST", "/auth/token"), ("POST", "/auth/refresh")}
# Routes of a cluster with no single-node counterpart: a deliberate 501 whose detail says why.
REFUSED = [
    ("POST", "/serving/start", {"address": None, "runtime_env": None, "options": None}),  # the SDK's start_ray body
    ("POST", "/serving/routes/greymatter", {}),
    ("DELETE", "/serving/routes/greymatter/route-1", None),
    ("POST", "/serving/external-endpoints/discover", {"base_url": "http://127.0.0.1:9/v1"}),
    ("POST", "/models/download_and_deploy", {"model": TINY_REPO}),
    ("POST", "/auth/users/me/password", {"current_password": "a", "new_password": "b"}),
]
IN_SCOPE = re.compile(r"^/(ping|auth/(token|refresh|users/me|pats)|models/|model_files/|model_configs/|serving/)")


def _spec_shape(method: str, path: str) -> tuple[str, str]:
    """(method, shape) of a spec route that ``path`` (a concrete URL path) is an instance of."""
    for spec_path in SPEC["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(spec_path))
        if re.fullmatch(pattern, path) and method.lower() in SPEC["paths"][spec_path]:
            return method, _shape(spec_path)
    raise AssertionError(f"{method} {path} is not in the spec")


def test_every_implemented_route_is_covered() -> None:
    """The cases above cover every route the server registers in these areas, and each exists in the spec."""
    from kamiwaza_cli.server.app import create_app

    app = create_app(Path("/nonexistent"))
    served = {
        (method, _shape(r.path.removeprefix("/api")))
        for r in app.routes
        if getattr(r, "include_in_schema", False) and r.path.startswith(COVERED_PREFIXES)
        for method in r.methods - {"HEAD", "OPTIONS"}
    }
    covered = {(c.method, _shape(c.path)) for c in ROUTES} | {_spec_shape(m, p) for m, p, _ in REFUSED}
    assert served - covered == set(), "routes without a contract case"
    for c in ROUTES:
        assert c.method.lower() in SPEC["paths"][c.path], c.id


def test_fixed_paths_are_not_captured_by_parameters() -> None:
    """The rule behind /models/pending_deployments: every route's own path, with each parameter
    filled in by a plain word, is matched first by that route (for its method), never by an
    earlier route whose parameter claims the word (which answers 422: not a UUID, or 405)."""
    from starlette.routing import Match

    from kamiwaza_cli.server.app import create_app

    app = create_app(Path("/nonexistent"))
    routes = [r for r in app.routes if getattr(r, "methods", None)]
    for route in routes:
        path = re.sub(r"\{[^}:]+(:path)?\}", "x", route.path)
        for method in route.methods - {"HEAD", "OPTIONS"}:
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            first = next(r for r in routes if r.matches(scope)[0] == Match.FULL)
            assert first is route, f"{method} {path} is claimed by {first.path} before {route.path}"


def test_every_spec_route_is_served_or_refused() -> None:
    """Every spec route of ping, auth (token, refresh, users/me, PATs), models, model files, model configs and
    serving has a contract case, a deliberate refusal, or (grant and refresh) its own test below."""
    wanted = {
        (method.upper(), _shape(path))
        for path, ops in SPEC["paths"].items()
        if IN_SCOPE.match(path)
        for method in ops
        if method in ("get", "post", "put", "delete", "patch")
    }
    handled = {(c.method, _shape(c.path)) for c in ROUTES} | {_spec_shape(m, p) for m, p, _ in REFUSED}
    handled |= {(m, _shape(p)) for m, p in ELSEWHERE}
    assert sorted(wanted - handled) == []


def test_password_grant_and_refresh(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``POST /auth/token`` (the SDK's form body) and ``POST /auth/refresh?refresh_token=``, on a server with a user."""
    from kamiwaza_sdk.schemas.auth import TokenResponse

    srv = start_with_user(tmp_path_factory.mktemp("grant"), "eve", "eve's local password")
    try:
        form = {"grant_type": "password", "username": "eve", "password": "eve's local password",
                "scope": "openid email profile", "client_id": "kamiwaza-platform"}  # fmt: skip
        r = loopback.post(f"{srv.url}/auth/token", data=form)
        granted = check(r, "POST", "/auth/token")
        TokenResponse.model_validate(granted)
        r = loopback.post(f"{srv.url}/auth/refresh", params={"refresh_token": granted["refresh_token"]})
        TokenResponse.model_validate(check(r, "POST", "/auth/refresh"))
        r = loopback.get(f"{srv.url}/auth/users/me", headers={"Authorization": f"Bearer {granted['access_token']}"})
        assert check(r, "GET", "/auth/users/me", sdk="UserInfo")["username"] == "eve"
    finally:
        srv.stop()


@pytest.mark.parametrize(("method", "path", "body"), [pytest.param(*r, id=f"{r[0]} {r[1]}") for r in REFUSED])
def test_cluster_only_routes_are_refused_with_the_reason(world: World, method: str, path: str, body: Any) -> None:
    """A 501 with one line saying why, which the SDK raises as an APIError carrying it (not a 404 or 405)."""
    from kamiwaza_sdk.exceptions import APIError

    r = world.http.request(method, path, json=body)
    assert r.status_code == 501 and r.headers["content-type"].startswith("application/json"), r.text
    assert not schema_errors(r.json(), NOT_FOUND) and "local server" in r.json()["detail"]
    client = world.server.sdk()
    with pytest.raises(APIError) as err:
        client._request(method, path, json=body)
    assert err.value.status_code == 501 and r.json()["detail"] in str(err.value)


def _shape(path: str) -> str:
    """The spec names path parameters differently from the server's routes; compare by shape."""
    return re.sub(r"\{[^}]+\}", "{}", path)


# The checker itself must reject what the SDK or the spec would reject.
_CONFIG = {"id": MISSING, "m_id": MISSING, "default": True, "created_at": "2025-01-01T00:00:00+00:00"}
_DEPLOYMENT = {
    "id": MISSING,
    "m_id": MISSING,
    "m_config_id": MISSING,
    "requested_at": "2025-01-01T00:00:00Z",
    "created_at": "2025-01-01T00:00:00Z",
    "status": "DEPLOYED",
}
BAD_BODIES = [
    (
        "ModelConfig without created_at (SDK)",
        "GET",
        "/model_configs/{model_config_id}",
        {**_CONFIG, "created_at": None},
    ),
    (
        "ModelConfig naive created_at",
        "GET",
        "/model_configs/{model_config_id}",
        {**_CONFIG, "created_at": "2025-01-01T00:00:00"},
    ),
    ("ModelConfig id not a uuid", "GET", "/model_configs/{model_config_id}", {**_CONFIG, "id": "abc"}),
    ("ModelConfig config null", "GET", "/model_configs/{model_config_id}", {**_CONFIG, "config": None}),
    ("Model m_files null", "GET", "/models/{model_id}", {"name": "x", "m_files": None}),
    ("ModelFile without name", "GET", "/model_files/{model_file_id}", {"id": MISSING}),
    ("deployment without status (SDK)", "GET", "/serving/deployment/{deployment_id}", {**_DEPLOYMENT, "status": None}),
    (
        "deployment without created_at (spec)",
        "GET",
        "/serving/deployment/{deployment_id}",
        {k: v for k, v in _DEPLOYMENT.items() if k != "created_at"},
    ),
    ("instance without deployed_at", "GET", "/serving/model_instances", [{"id": MISSING, "deployment_id": MISSING}]),
    (
        "status item without download (spec)",
        "GET",
        "/model_files/download_status/",
        [{"id": MISSING, "m_id": MISSING, "name": "f", "is_downloading": False}],
    ),
    ("deploy_model answers an object", "POST", "/serving/deploy_model", {"id": MISSING}),
]


@pytest.mark.parametrize(("method", "path", "body"), [pytest.param(*b[1:], id=b[0]) for b in BAD_BODIES])
def test_checker_rejects_bad_bodies(method: str, path: str, body: Any) -> None:
    status = success_statuses(method, path)[0]
    assert schema_errors(body, response_schema(method, path, status))


# ----------------------------------------------------------------------------------------------------
# Error responses: 404 {"detail": str} and 422 HTTPValidationError
# ----------------------------------------------------------------------------------------------------

NOT_FOUND = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "minLength": 1}},
}


@dataclass
class Err:
    status: int
    method: str
    path: str  # spec path
    url: str  # with {id} for the id under test
    params: Any = None
    body: Any = None
    needs: str | None = None  # a World part the body needs

    @property
    def id(self) -> str:
        return f"{self.status} {self.method} {self.path}" + (" (body)" if self.body is not None else "")


ID_ROUTES = [
    ("GET", "/models/{model_id}", "/models/{id}"),
    ("DELETE", "/models/{model_id}", "/models/{id}"),
    ("GET", "/models/{model_id}/configs", "/models/{id}/configs"),
    ("GET", "/model_files/{model_file_id}", "/model_files/{id}"),
    ("DELETE", "/model_files/{model_file_id}", "/model_files/{id}"),
    ("DELETE", "/model_files/{model_file_id}/download", "/model_files/{id}/download"),
    ("GET", "/model_configs/{model_config_id}", "/model_configs/{id}"),
    ("DELETE", "/model_configs/{model_config_id}", "/model_configs/{id}"),
    ("GET", "/serving/deployment/{deployment_id}", "/serving/deployment/{id}"),
    ("DELETE", "/serving/deployment/{deployment_id}", "/serving/deployment/{id}"),
    ("GET", "/serving/deployment/{deployment_id}/status", "/serving/deployment/{id}/status"),
    ("GET", "/serving/deployment/{deployment_id}/logs", "/serving/deployment/{id}/logs"),
]

ERRORS: list[Err] = [
    *(Err(404, m, p, u) for m, p, u in ID_ROUTES),
    Err(404, "PUT", "/model_configs/{model_config_id}", "/model_configs/{id}", body="config", needs="tiny"),
    Err(404, "POST", "/model_configs/", "/model_configs/", body={"m_id": MISSING, "default": False}),
    Err(404, "POST", "/serving/deploy_model", "/serving/deploy_model", body={"m_id": MISSING}),
    *(Err(422, m, p, u) for m, p, u in ID_ROUTES),
    Err(422, "PUT", "/model_configs/{model_config_id}", "/model_configs/{id}", body={"default": "maybe"}),
    Err(422, "GET", "/models/", "/models/", params={"load_files": "maybe"}),
    Err(422, "POST", "/models/", "/models/", body={"repo_modelId": "no/name"}),
    Err(422, "POST", "/models/search/", "/models/search/", body={"exact": True}),
    Err(422, "POST", "/models/download/", "/models/download/", body={"hub": "HubsHf"}),
    Err(422, "POST", "/model_files/search/", "/model_files/search/", body={"hub": "HubsHf"}),
    Err(422, "GET", "/model_files/download_status/", "/model_files/download_status/", params={"model_ids": "x"}),
    Err(422, "GET", "/model_configs/", "/model_configs/", params={"model_id": "x"}),
    Err(422, "POST", "/model_configs/", "/model_configs/", body={"m_id": "x"}),
    Err(422, "POST", "/serving/deploy_model", "/serving/deploy_model", body={"m_config_id": MISSING}),
    Err(422, "GET", "/serving/deployments", "/serving/deployments", params={"model_id": "x"}),
    Err(422, "GET", "/serving/model_instances", "/serving/model_instances", params={"deployment_id": "x"}),
]


@pytest.mark.parametrize("case", [pytest.param(e, id=e.id) for e in ERRORS])
def test_error_response_shape(world: World, case: Err) -> None:
    if case.needs:
        getattr(world, case.needs)
    ident = MISSING if case.status == 404 else "not-a-uuid"
    body = _config_body(world) if case.body == "config" else case.body
    r = world.http.request(case.method, case.url.replace("{id}", ident), params=case.params, json=body)
    where = f"{case.method} {case.url} -> {r.status_code}"
    assert r.status_code == case.status, f"{where}: {r.text[:1000]}"
    assert r.headers.get("content-type", "").startswith("application/json"), where
    if case.status == 404:
        errors = schema_errors(r.json(), NOT_FOUND)
    else:
        errors = schema_errors(r.json(), response_schema(case.method, case.path, 422))
        assert r.json()["detail"], where
    assert not errors, f"{where}:\n  " + "\n  ".join(errors)


def test_sdk_maps_a_json_404_to_not_found(world: World) -> None:
    """The SDK raises NotFoundError only for a JSON 404 body (an HTML one means a wrong base URL)."""
    from kamiwaza_sdk.exceptions import NotFoundError

    with pytest.raises(NotFoundError):
        world.server.sdk().models.get_model(MISSING)
