"""Tests for the FakeHub test server, driven through the real huggingface_hub client and httpx."""

from __future__ import annotations

import hashlib
import time

import loopback
import pytest
from conftest import wait_for
from fakehub import FakeHub, HubFile
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

REPO = "acme/tiny-GGUF"
GATED = "acme/gated-GGUF"
WEIGHTS = "tiny-Q4_K_M.gguf"


@pytest.fixture
def blob(tmp_path):
    data = bytes(range(256)) * 1024  # 256 KiB, non-repeating within 256 bytes so offsets are checkable
    p = tmp_path / "weights.gguf"
    p.write_bytes(data)
    return p, data


@pytest.fixture
def hub(tmp_path, blob):
    readme = tmp_path / "README.md"
    readme.write_text("# tiny\n")
    with FakeHub() as h:
        h.add_repo(REPO, [HubFile(WEIGHTS, blob[0]), HubFile("README.md", readme, lfs=False)])
        h.add_repo(GATED, [HubFile(WEIGHTS, blob[0])], gated=True)
        h.add_repo("solo", [HubFile("nested/dir/x.gguf", blob[0])])
        yield h
        assert not h.errors, "\n".join(h.errors)


def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=False)


def test_model_info_files_metadata(hub, blob):
    info = api(hub).model_info(REPO, files_metadata=True)
    assert info.id == REPO and info.sha and len(info.sha) == 40 and info.gated is False
    sib = {s.rfilename: s for s in info.siblings}
    weights, readme = sib[WEIGHTS], sib["README.md"]
    assert weights.size == len(blob[1])
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(blob[1]).hexdigest()
    assert weights.lfs.size == len(blob[1]) and len(weights.blob_id) == 40
    assert readme.size == len("# tiny\n") and readme.lfs is None
    # Like huggingface.co, no per-file metadata unless asked for (blobs=true).
    bare = api(hub).model_info(REPO)
    assert [s.size for s in bare.siblings] == [None, None]
    # Revision route: commit sha works, unknown revision doesn't.
    assert api(hub).model_info(REPO, revision=info.sha).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api(hub).model_info(REPO, revision="nope")


def test_single_segment_repo_id_and_tree(hub, blob):
    assert api(hub).model_info("solo").id == "solo"
    top = list(api(hub).list_repo_tree("solo"))
    assert [(type(e), e.path) for e in top] == [(RepoFolder, "nested")]
    deep = list(api(hub).list_repo_tree("solo", path_in_repo="nested", recursive=True))
    files = [e for e in deep if isinstance(e, RepoFile)]
    assert [f.path for f in files] == ["nested/dir/x.gguf"]
    assert files[0].size == len(blob[1]) and files[0].lfs.sha256 == hashlib.sha256(blob[1]).hexdigest()
    tree = {e.path: e for e in api(hub).list_repo_tree(REPO)}
    assert tree["README.md"].lfs is None and tree[WEIGHTS].lfs is not None


def test_list_models_search(hub):
    found = list(api(hub).list_models(search="GGUF", limit=5))
    assert sorted(m.id for m in found) == [GATED, REPO]
    assert [m.id for m in api(hub).list_models(search="tiny", limit=5)] == [REPO]
    assert list(api(hub).list_models(search="gemma", limit=5)) == []
    assert len(list(api(hub).list_models(search="gguf", limit=1))) == 1
    # The request really carried the search parameter.
    assert any(m == "GET" and p.startswith("/api/models?") and "search=tiny" in p for m, p, _ in hub.requests)


def test_missing_repo_and_file(hub):
    with pytest.raises(RepositoryNotFoundError):
        api(hub).model_info("acme/nope")
    with pytest.raises(RepositoryNotFoundError):
        get_hf_file_metadata(hf_hub_url("acme/nope", WEIGHTS, endpoint=hub.url), token=False)
    with pytest.raises(EntryNotFoundError):
        get_hf_file_metadata(hf_hub_url(REPO, "missing.gguf", endpoint=hub.url), token=False)


def test_gated_repo(hub):
    url = hf_hub_url(GATED, WEIGHTS, endpoint=hub.url)
    with pytest.raises(GatedRepoError):
        api(hub).model_info(GATED)
    with pytest.raises(GatedRepoError):
        get_hf_file_metadata(url, token=False)
    with pytest.raises(GatedRepoError):  # a token the hub doesn't know is no better
        get_hf_file_metadata(url, token="hf_wrong")
    hub.tokens.add("hf_granted")
    assert HfApi(endpoint=hub.url, token="hf_granted").model_info(GATED).gated == "auto"
    assert get_hf_file_metadata(url, token="hf_granted").size > 0
    # Real-hub mode: metadata public, downloads still gated.
    hub.gated_api_errors = False
    assert api(hub).model_info(GATED).id == GATED
    with pytest.raises(GatedRepoError):
        get_hf_file_metadata(url, token=False)


def test_file_metadata_and_download(hub, blob, tmp_path):
    meta = get_hf_file_metadata(hf_hub_url(REPO, WEIGHTS, endpoint=hub.url), token=False)
    assert meta.etag == hashlib.sha256(blob[1]).hexdigest()
    assert meta.size == len(blob[1]) and meta.commit_hash == api(hub).model_info(REPO).sha
    local = hf_hub_download(REPO, WEIGHTS, endpoint=hub.url, token=False, cache_dir=tmp_path / "cache")
    with open(local, "rb") as f:
        assert f.read() == blob[1]
    assert hub.bytes_served == len(blob[1])
    resolve_calls = [m for m, p, _ in hub.requests if "/resolve/" in p]
    assert resolve_calls[-1] == "GET" and "HEAD" in resolve_calls


def test_range_requests(hub, blob):
    url = hf_hub_url(REPO, WEIGHTS, endpoint=hub.url)
    data = blob[1]
    r = loopback.get(url, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    r = loopback.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = loopback.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = loopback.get(url)
    assert r.status_code == 200 and r.content == data and r.headers["accept-ranges"] == "bytes"
    assert "Range" not in hub.requests[-1][2]
    assert hub.requests[-2][2]["RANGE"] == f"bytes={len(data)}-"  # case-insensitive header lookup


@pytest.mark.timing
def test_rate_limit_applies_and_changes_mid_download(hub, blob):
    size = len(blob[1])
    hub.rate_limit = size // 4  # the whole file would take ~4 s at this rate
    got = bytearray()
    with loopback.stream("GET", hf_hub_url(REPO, WEIGHTS, endpoint=hub.url)) as r:
        start = time.monotonic()
        it = r.iter_bytes()
        while time.monotonic() - start < 0.5:
            got += next(it)
        # After ~0.5 s at 64 KiB/s only a fraction can have arrived (generous margin: 3/4 of the file).
        assert 0 < len(got) < size * 3 // 4
        assert hub.bytes_served < size * 3 // 4
        hub.rate_limit = None  # lifting the limit mid-download takes effect on the next chunk
        for chunk in it:
            got += chunk
    assert bytes(got) == blob[1]
    assert time.monotonic() - start < 3  # far below the ~4 s the throttled rate would need
    # The hub counts a chunk after writing it, so the client can hold the last one first.
    wait_for(lambda: hub.bytes_served == size, timeout=5, what="the hub to count the last chunk")


def test_client_disconnect_is_quiet(hub, blob, capfd):
    hub.rate_limit = 256 * 1024  # small chunks, so the server is still writing when the client leaves
    with loopback.stream("GET", hf_hub_url(REPO, WEIGHTS, endpoint=hub.url)) as r:
        next(r.iter_bytes())
    # Wait for the server to notice (its writes fail and it stops counting), well short of the whole file.
    last, deadline = -1, time.monotonic() + 5
    while hub.bytes_served != last and time.monotonic() < deadline:
        last = hub.bytes_served
        time.sleep(0.3)
    assert hub.bytes_served < len(blob[1])
    assert capfd.readouterr().err == ""
    # Server keeps working; the fixture asserts hub.errors stayed empty.
    hub.rate_limit = None
    assert loopback.get(hf_hub_url(REPO, "README.md", endpoint=hub.url)).text == "# tiny\n"


def test_corrupt_serves_wrong_bytes_with_true_sha(hub, blob, tmp_path):
    hub.add_repo("acme/bad", [HubFile(WEIGHTS, blob[0], corrupt=True)])
    url = hf_hub_url("acme/bad", WEIGHTS, endpoint=hub.url)
    true_sha = hashlib.sha256(blob[1]).hexdigest()
    assert get_hf_file_metadata(url, token=False).etag == true_sha
    body = loopback.get(url).content
    assert len(body) == len(blob[1]) and body[:-1] == blob[1][:-1] and body[-1] != blob[1][-1]
    assert hashlib.sha256(body).hexdigest() != true_sha
    assert loopback.get(url, headers={"Range": "bytes=-1"}).content != blob[1][-1:]


def test_size_override_advertises_but_serves_real_bytes(hub, blob):
    huge = 10**12
    hub.add_repo("acme/huge", [HubFile(WEIGHTS, blob[0], size_override=huge)])
    info = api(hub).model_info("acme/huge", files_metadata=True)
    assert info.siblings[0].size == huge and info.siblings[0].lfs.size == huge
    url = hf_hub_url("acme/huge", WEIGHTS, endpoint=hub.url)
    assert get_hf_file_metadata(url, token=False).size == huge
    r = loopback.get(url)
    assert r.content == blob[1] and int(r.headers["content-length"]) == len(blob[1])


def test_unmodelled_routes_are_loud(hub):
    r = loopback.post(f"{hub.url}/api/models/{REPO}/paths-info/main", json={"paths": []})
    assert r.status_code == 501
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hub.url, token=False).list_repo_refs(REPO)
