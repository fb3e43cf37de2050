"""The official SDK's models, serving and auth services, unchanged, against a real local server.

Every method of those services that has a route here is called as a user of the SDK would call it
(test_sdk_models.py drives the download, config, search and delete methods); the routes a
single node has no counterpart for must raise the SDK's APIError carrying the server's reason.
One real llama.cpp deployment of the small model, stopped and deleted at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import GEMMA_REPO, LocalServer, start_with_user
from fakehub import FakeHub

USER, PASSWORD = "lin", "the local password of lin"


@pytest.fixture(scope="module")
def srv(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    s = start_with_user(tmp_path_factory.mktemp("sdk"), USER, PASSWORD, hub.url)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(srv: LocalServer) -> Any:
    from kamiwaza_sdk import KamiwazaClient

    anonymous = KamiwazaClient(srv.url)
    tokens = anonymous.auth.login_with_password(USER, PASSWORD)
    refreshed = anonymous.auth.refresh_access_token(tokens.refresh_token)
    assert refreshed.access_token and refreshed.access_token != tokens.access_token
    return KamiwazaClient(srv.url, api_key=refreshed.access_token)


@pytest.fixture(scope="module")
def deployed(client: Any) -> Iterator[dict[str, Any]]:
    """The small model from the fake hub, deployed and waited for by the SDK's own methods."""
    client.models.initiate_model_download(GEMMA_REPO, quantization="q4_k_m")
    client.models.wait_for_download(GEMMA_REPO, polling_interval=1, timeout=120, show_progress=False)
    model = client.models.get_model_by_repo_id(GEMMA_REPO)
    dep_id = client.serving.deploy_model(repo_id=GEMMA_REPO, poll_interval_seconds=0.5, timeout_seconds=120)
    assert isinstance(dep_id, uuid.UUID)
    yield {"model": model, "deployment_id": dep_id}
    if dep_id in {d.id for d in client.serving.list_deployments()}:  # test_stop_and_delete did not run
        client.serving.stop_deployment(deployment_id=dep_id)


def test_auth_service(client: Any, srv: LocalServer) -> None:
    from kamiwaza_sdk import KamiwazaClient
    from kamiwaza_sdk.exceptions import APIError
    from kamiwaza_sdk.schemas.auth import LocalUserPasswordChangeRequest, PATCreate

    assert client.auth.get_current_user().username == USER
    made = client.auth.create_pat(PATCreate(name="sdk", ttl_seconds=600))
    assert made.pat.owner_id == USER and made.pat.exp is not None
    assert KamiwazaClient(srv.url, api_key=made.token).auth.get_current_user().username == USER
    assert made.pat.jti in {p.jti for p in client.auth.list_pats().pats}
    client.auth.revoke_pat(made.pat.jti)
    assert [p.revoked for p in client.auth.list_pats().pats if p.jti == made.pat.jti] == [True]
    with pytest.raises(APIError) as err:
        client.auth.change_my_password(LocalUserPasswordChangeRequest(current_password=PASSWORD, new_password="x"))
    assert err.value.status_code == 501 and "KAMIWAZA_LOCAL_PASSWORD" in str(err.value)


def test_models_and_files_service(client: Any, deployed: dict[str, Any]) -> None:
    from kamiwaza_sdk.exceptions import APIError
    from kamiwaza_sdk.schemas.models.model_file import CreateModelFile

    model = deployed["model"]
    assert client.models.get_model(model.id).repo_modelId == GEMMA_REPO
    [f] = client.models.get_model_files_by_model_id(model.id)
    assert client.models.get_model_file(f.id).name == f.name and f.id in {
        x.id for x in client.models.list_model_files()
    }
    usage = client.models.get_model_memory_usage(model.id)
    assert usage == client.models.get_model_file_memory_usage(f.id) and usage > (f.size or 0)
    found = client.models.search_hub_model_files({"hub": "HubsHf", "model": GEMMA_REPO})
    assert f.name in {x.name for x in found}
    status = client.models.get_model_download_status(GEMMA_REPO, quantization="q4_k_m")
    assert status["all_downloaded"] is True, status
    # Configs by id: get, update, delete (listing and creating are test_sdk_models.py's).
    from kamiwaza_sdk.schemas.models.model import CreateModelConfig

    made = client.models.create_model_config(CreateModelConfig(m_id=model.id, name="short", default=False))
    assert client.models.get_model_config(made.id).name == "short"
    body = CreateModelConfig(m_id=model.id, name="short", default=False, config={"n_ctx": 512})
    assert client.models.update_model_config(made.id, body).config == {"n_ctx": 512}
    client.models.delete_model_config(made.id)
    assert made.id not in {c.id for c in client.models.get_model_configs(model.id)}
    assert [s.id for s in client.models.get_model_files_download_status(GEMMA_REPO)] == [f.id]
    # create_model_file: the SDK's body names no model, and a file belongs to one here.
    with pytest.raises(APIError) as err:
        client.models.create_model_file(CreateModelFile(name="x.bin", size=1))
    assert err.value.status_code == 400 and "model_id" in str(err.value)
    with pytest.raises(APIError):
        client.models.delete_model_file(uuid.uuid4())


def test_serving_service(client: Any, deployed: dict[str, Any]) -> None:
    from kamiwaza_sdk.exceptions import APIError
    from kamiwaza_sdk.schemas.serving.serving import CreateModelDeployment

    dep_id, model = deployed["deployment_id"], deployed["model"]
    assert client.serving.get_deployment(dep_id).status == "DEPLOYED"
    assert client.serving.get_deployment_status(dep_id) == "DEPLOYED"
    assert dep_id in {d.id for d in client.serving.list_deployments()}
    [active] = [d for d in client.serving.list_active_deployments() if d.id == dep_id]
    assert active.endpoint.endswith(f"/runtime/models/{dep_id}/v1")
    assert client.serving.wait_for_deployment(dep_id, poll_interval=0.1, timeout=5).status == "DEPLOYED"
    [instance] = client.serving.list_model_instances(deployment_id=dep_id)
    assert client.serving.get_model_instance(instance.id).deployment_id == dep_id
    assert dep_id in {uuid.UUID(h["id"]) for h in client.serving.get_health()}
    logs = client.serving.get_deployment_logs(dep_id)
    assert logs.logs and logs.capture_active is True
    assert next(iter(client.serving.stream_deployment_logs(dep_id, poll_interval=0, max_empty_polls=1)))
    patterns = client.serving.get_deployment_log_patterns(dep_id)
    assert patterns.deployment_id == dep_id and not any(patterns.patterns_detected.values())
    assert str(dep_id) in {e["deployment_id"] for e in client.serving.list_engine_logs("llamacpp").logs}
    assert client.serving.get_status()["status"] == "not running"
    request = CreateModelDeployment(m_id=model.id, m_config_id=client.models.get_model_configs(model.id)[0].id)
    estimate = client.serving.estimate_model_vram(request)
    assert estimate["computed_vram_estimate"] == client.models.get_model_memory_usage(model.id)
    with pytest.raises(APIError) as err:
        client.serving.start_ray()
    assert err.value.status_code == 501 and "Ray" in str(err.value)


def test_stop_and_delete(client: Any, deployed: dict[str, Any], srv: LocalServer) -> None:
    dep_id = deployed["deployment_id"]
    assert client.serving.stop_deployment(deployment_id=dep_id) is True
    assert client.serving.get_deployment(dep_id).status == "STOPPED"
    assert client.delete(f"/serving/deployment/{dep_id}/delete") is True
    assert dep_id not in {d.id for d in client.serving.list_deployments()}
    assert not Path(srv.home, "logs", "deployments", f"{dep_id}.log").exists()

    # The SDK's one-call helper deploys it again (downloaded already); stopping by repo id ends it.
    again = client.models.download_and_deploy_model(GEMMA_REPO, quantization="q4_k_m")
    assert again["deployment_id"] is not None and again["deployment_id"] != dep_id, again
    assert client.serving.stop_deployment(repo_id=GEMMA_REPO) is True
    assert client.serving.get_deployment(again["deployment_id"]).status == "STOPPED"
    # delete_model_file: the file goes, the model stays.
    [f] = client.models.get_model_files_by_model_id(deployed["model"].id)
    client.models.delete_model_file(f.id)
    assert client.models.get_model_files_by_model_id(deployed["model"].id) == []
