"""The SDK adapter of the platform port (kamiwaza_cli.platform.SdkPlatform), in-process.

The adapter computes a deployment's endpoint itself (so one request answers ``ps`` and ``run``);
these check that it is the endpoint the installed SDK computes from the same JSON, for each of the
SDK's rules, and that the wire's names become the records' Python names.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kamiwaza_cli.platform import Deployment, SdkPlatform


def _deployment(status: str = "DEPLOYED", instance: str | None = "DEPLOYED", **extra: Any) -> dict[str, Any]:
    dep_id = str(uuid.uuid4())
    instances = [
        {"id": str(uuid.uuid4()), "deployment_id": dep_id, "deployed_at": "2026-01-01T00:00:01Z", "status": instance}
    ] if instance else []  # fmt: skip
    return {
        "id": dep_id, "m_id": str(uuid.uuid4()), "m_config_id": str(uuid.uuid4()), "m_name": "tiny",
        "requested_at": "2026-01-01T00:00:00Z", "deployed_at": "2026-01-01T00:00:01Z", "status": status,
        "instances": instances, "lb_port": 0, "engine_name": "llamacpp", "max_concurrent_requests": 4,
        "context_per_slot": 4096, "engine_threads": 2, **extra,
    }  # fmt: skip


ROWS = [
    _deployment(),  # the gateway path on the API's origin
    _deployment(access_path="/custom/prefix"),
    _deployment(access_path="runtime/x/v1/"),
    _deployment(lb_port=8123),  # its own port
    _deployment(lb_port=443),  # 443 is the origin's, not a port of its own
    _deployment(status="DEPLOYING", instance=None),
    _deployment(instance="STARTING"),  # DEPLOYED without a running instance: not serving yet
    _deployment(status="FAILED", instance=None, last_error_code="OOM", last_error_message="out of memory"),
]


@pytest.mark.parametrize(
    "env", [{}, {"KAMIWAZA_RUNTIME_BASE_URL": "https://gw.example/base"}, {"KAMIWAZA_USE_HTTPS": "true"}]
)
def test_endpoints_are_the_sdks(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in ("KAMIWAZA_RUNTIME_BASE_URL", "KAMIWAZA_USE_HTTPS", "KAMIWAZA_PUBLIC_API_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    platform = SdkPlatform("http://127.0.0.1:7777/api", api_key="local")
    sdk = platform._sdk
    sdk.get = lambda path, **kwargs: [dict(r) for r in ROWS]  # the same JSON for both
    expected = {str(a.id): a.endpoint for a in sdk.serving.list_active_deployments()}
    ours = {d.id: d.endpoint for d in platform.deployments() if d.endpoint}
    assert ours == expected and len(ours) == 5


def test_wire_names_become_record_fields() -> None:
    platform = SdkPlatform("http://127.0.0.1:7777/api", api_key="local")
    raw = ROWS[3]
    platform._sdk.get = lambda path, **kwargs: dict(raw)
    d = platform.deployment(raw["id"])
    assert isinstance(d, Deployment)
    assert (d.model_id, d.model_name, d.engine, d.port, d.slots, d.context_per_slot, d.threads) == (
        raw["m_id"], "tiny", "llamacpp", 8123, 4, 4096, 2,
    )  # fmt: skip
    assert d.endpoint == "http://127.0.0.1:8123/v1"
    failed = ROWS[-1]
    platform._sdk.get = lambda path, **kwargs: dict(failed)
    f = platform.deployment(failed["id"])
    assert (f.status, f.error_code, f.error_message) == ("FAILED", "OOM", "out of memory")
    assert f.port is None and f.endpoint is None
