"""The official kamiwaza-sdk, unchanged, against the local server's model API."""

from __future__ import annotations

import pytest
from conftest import TINY_REPO, LocalServer
from kamiwaza_sdk.exceptions import APIError
from kamiwaza_sdk.schemas.models.model import CreateModel, CreateModelConfig


@pytest.fixture(scope="module")
def client(server: LocalServer):  # type: ignore[no-untyped-def]
    return server.sdk()


def test_download_flow(client, server: LocalServer) -> None:  # type: ignore[no-untyped-def]
    started = client.models.initiate_model_download(TINY_REPO, quantization="q8_0")
    assert started["download_request"].files_to_download == ["tiny-Q8_0.gguf"]
    assert started["result"]["result"] is True and len(started["result"]["files"]) == 1

    final = client.models.wait_for_download(TINY_REPO, polling_interval=1, timeout=60, show_progress=False)
    assert [s.name for s in final] == ["tiny-Q8_0.gguf"]
    assert all(not s.is_downloading for s in final)

    statuses = client.models.check_download_status(TINY_REPO)
    assert [s.download_percentage for s in statuses] == [100]

    model = client.models.get_model_by_repo_id(TINY_REPO)
    assert model is not None and model.hub == "HubsHf" and model.name == "tiny-GGUF"
    [listed] = [m for m in client.models.list_models(load_files=True) if m.repo_modelId == TINY_REPO]
    assert [f.name for f in listed.m_files] == ["tiny-Q8_0.gguf"]

    files = client.models.get_model_files_by_model_id(model.id)
    assert len(files) == 1 and files[0].m_id == model.id
    assert files[0].storage_location and files[0].checksum_type == "sha256" and files[0].size == files[0].size

    again = client.models.initiate_model_download(TINY_REPO, quantization="q8_0")
    assert again["result"]["message"] == "Files already downloaded"


def test_configs(client) -> None:  # type: ignore[no-untyped-def]
    model = client.models.get_model_by_repo_id(TINY_REPO)
    [default] = client.models.get_model_configs(model.id)
    assert default.default is True and default.m_id == model.id

    created = client.models.create_model_config(
        CreateModelConfig(m_id=model.id, name="long-context", default=False, config={"n_ctx": 8192})
    )
    assert created.config == {"n_ctx": 8192} and created.created_at is not None
    names = {c.name for c in client.models.get_model_configs(model.id)}
    assert names == {"default", "long-context"}
    assert [c.name for c in client.models.get_model_configs_for_model(model.id, default=True)] == ["default"]


def test_search_reports_local_and_hub_models(client) -> None:  # type: ignore[no-untyped-def]
    found = client.models.search_models("tiny-GGUF", load_files=True)
    [tiny] = [m for m in found if m.repo_modelId == TINY_REPO]
    assert tiny.id is not None  # the registered model, not a second hub copy
    assert tiny.available_quantizations == ["q4_k_m", "q8_0"]


def test_delete_model(client, server: LocalServer) -> None:  # type: ignore[no-untyped-def]
    model = client.models.get_model_by_repo_id(TINY_REPO)
    client.models.delete_model(model.id)
    assert client.models.get_model_by_repo_id(TINY_REPO) is None
    assert not (server.home / "models" / str(model.id)).exists()
    assert client.models.get_model_configs(model.id) == []


def test_create_model_registers_it_with_a_default_config(client) -> None:  # type: ignore[no-untyped-def]
    created = client.models.create_model(CreateModel(name="hand-made", repo_modelId="me/hand-made-GGUF", hub="HubsHf"))
    assert created.id is not None and created.repo_modelId == "me/hand-made-GGUF" and created.m_files == []
    [config] = client.models.get_model_configs(created.id)
    assert config.default is True
    with pytest.raises(APIError) as err:
        client.models.create_model(CreateModel(name="again", repo_modelId="me/hand-made-GGUF"))
    assert err.value.status_code == 409
    client.models.delete_model(created.id)


def test_the_model_list_follows_every_change(client) -> None:  # type: ignore[no-untyped-def]
    # GET /models/ serves a cached body until the catalog changes: each change must show at once.
    def names() -> set[str]:
        return {m.name for m in client.models.list_models()}

    before = names()
    created = client.models.create_model(CreateModel(name="listed-once", repo_modelId="me/listed-once-GGUF"))
    assert names() == before | {"listed-once"}
    client.models.delete_model(created.id)
    assert names() == before
