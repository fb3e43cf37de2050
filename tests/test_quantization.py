"""Our quantization rules must agree with kamiwaza-sdk's, file name by file name.

The SDK is the reference: every case runs through its QuantizationManager and,
for file selection, through the real ``ModelDownloadMixin.initiate_model_download``
with the network replaced by a stub.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kamiwaza_sdk.services.models.downloads import ModelDownloadMixin
from kamiwaza_sdk.utils.quant_manager import QuantizationManager

from kamiwaza_cli.quantization import (
    DEFAULT_QUANTIZATION,
    available_quantizations,
    detect_quantization,
    fallback_order,
    has_multiple_quantizations,
    is_valid_tag,
    matches,
    select_files,
)

SDK = QuantizationManager()  # type: ignore[no-untyped-call]

FILENAMES = [
    # TheBloke-style: the tag follows a dot, which the SDK does not recognise.
    "llama-2-7b-chat.Q4_K_M.gguf",
    "mistral-7b-instruct-v0.2.Q8_0.gguf",
    # The common "-" style, upper and lower case.
    "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
    "Meta-Llama-3.1-8B-Instruct-Q6_K.gguf",
    "Meta-Llama-3.1-8B-Instruct-Q8_0.gguf",
    "qwen2.5-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-0.5b-instruct-q5_0.gguf",
    "gemma-3-270m-it-IQ4_XS.gguf",
    "phi-3-mini-IQ2_XXS.gguf",
    "model-Q3_K_L.gguf",
    # Shards.
    "Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00002.gguf",
    "Qwen2.5-72B-Instruct-Q4_K_M-00002-of-00002.gguf",
    "Q8_0/Llama-3.3-70B-Instruct-Q8_0-00001-of-00002.gguf",
    # unsloth's dynamic quants.
    "gemma-3-27b-it-UD-Q4_K_XL.gguf",
    "DeepSeek-R1-UD-IQ1_S-00001-of-00003.gguf",
    # Float formats: only fp<N> is a tag.
    "model-fp16.gguf",
    "model-FP16.gguf",
    "model-f16.gguf",
    "model-bf16.gguf",
    "model-F32.gguf",
    # Never tags.
    "README.md",
    "config.json",
    "tokenizer.model",
    "mmproj-model-f16.gguf",
    "mmproj-gemma-3-4b-it-fp16.gguf",
    "mmproj-Q8_0.gguf",
    # Edge cases of the pattern.
    "model-Q4_0_4_4.gguf",
    "two-Q4_K_M-then-Q6_K.gguf",
    "model-q9_k.gguf",
    "model-iq5_k.gguf",
    "",
]

TARGETS = [
    "q4_k_m",
    "Q4_K_M",
    "q4_k",
    "q6_k",
    "q5_k",
    "q8_0",
    "q8",
    "fp16",
    "iq4_xs",
    "iq4",
    "q4_k_xl",
    "f16",
]

REPOS: dict[str, list[str]] = {
    "bartowski": [
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "Llama-3.2-1B-Instruct-Q4_K_S.gguf",
        "Llama-3.2-1B-Instruct-Q6_K.gguf",
        "Llama-3.2-1B-Instruct-Q8_0.gguf",
        "Llama-3.2-1B-Instruct-f16.gguf",
        "Llama-3.2-1B-Instruct-IQ4_XS.gguf",
        "README.md",
    ],
    "thebloke": [
        "llama-2-7b-chat.Q4_K_M.gguf",
        "llama-2-7b-chat.Q5_K_M.gguf",
        "llama-2-7b-chat.Q8_0.gguf",
        "README.md",
        "config.json",
    ],
    "sharded": [
        "Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00002.gguf",
        "Qwen2.5-72B-Instruct-Q4_K_M-00002-of-00002.gguf",
        "Qwen2.5-72B-Instruct-Q6_K-00001-of-00002.gguf",
        "Qwen2.5-72B-Instruct-Q6_K-00002-of-00002.gguf",
    ],
    "unsloth": [
        "gemma-3-4b-it-UD-Q4_K_XL.gguf",
        "gemma-3-4b-it-Q4_K_M.gguf",
        "gemma-3-4b-it-Q8_0.gguf",
        "mmproj-F16.gguf",
        "README.md",
    ],
    "single": ["gemma-3-270m-it-Q4_K_M.gguf", "mmproj-gemma-3-270m-f16.gguf", "README.md"],
    "untagged": ["model.safetensors", "config.json", "tokenizer.json", "README.md"],
    "fp16_and_q8": ["phi-2-fp16.gguf", "phi-2-Q8_0.gguf"],
    "iq_only": ["m-IQ2_XS.gguf", "m-IQ3_M.gguf", "m-IQ4_XS.gguf"],
    "empty": [],
}


def sdk_select(names: list[str], target: str) -> list[str]:
    """Files the SDK's own initiate_model_download would request, or [] when it refuses."""

    class Stub(ModelDownloadMixin):
        def __init__(self) -> None:
            self.quant_manager = QuantizationManager()  # type: ignore[no-untyped-call]
            self.requested: list[str] = []
            self.client = SimpleNamespace(_request=self._request)

        def _request(self, method: str, path: str, json: dict[str, Any]) -> dict[str, Any]:
            self.requested = list(json["files_to_download"])
            return {"result": True}

        def search_models(self, *args: Any, **kwargs: Any) -> list[Any]:
            files = [SimpleNamespace(name=name, id=name, storage_location=None) for name in names]
            return [SimpleNamespace(repo_modelId="org/repo", hub="hf", name="repo", m_files=files)]

        def search_hub_model_files(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    stub = Stub()
    try:
        result = stub.initiate_model_download("org/repo", target)
    except ValueError as error:
        assert "No compatible files found" in str(error)
        return []
    assert stub.requested == [f.name for f in result["files"]] or not names
    return [f.name for f in result["files"]]


def _objs(names: list[str]) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=name) for name in names]


# --- agreement with the SDK, case by case ------------------------------------------


@pytest.mark.parametrize("filename", FILENAMES)
def test_detect_agrees_with_sdk(filename: str) -> None:
    assert detect_quantization(filename) == SDK.detect_quantization(filename)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("filename", FILENAMES)
def test_matches_agrees_with_sdk(filename: str, target: str) -> None:
    assert matches(filename, target) is SDK.match_quantization(filename, target)


@pytest.mark.parametrize("target", [*TARGETS, "q2_k", "q3_k_s", "q4_0", "q4_1", "iq2_xxs", "iq1", "x", ""])
def test_fallback_order_agrees_with_sdk(target: str) -> None:
    assert fallback_order(target) == SDK.get_fallback_quantizations(target)


@pytest.mark.parametrize("target", [*TARGETS, "q2_k", "q3_k"])
@pytest.mark.parametrize("repo", sorted(REPOS))
def test_select_files_agrees_with_sdk_download(repo: str, target: str) -> None:
    names = REPOS[repo]
    assert select_files(names, target) == sdk_select(names, target)


@pytest.mark.parametrize("repo", sorted(REPOS))
def test_available_and_multiple_agree_with_sdk(repo: str) -> None:
    names = REPOS[repo]
    expected = sorted({q for n in names if (q := SDK.detect_quantization(n))})
    assert available_quantizations(names) == expected
    assert has_multiple_quantizations(names) is SDK.has_multiple_quantizations(_objs(names))


# --- the behaviour itself, spelled out ---------------------------------------------

DETECTED = [
    ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "q4_k_m"),
    ("qwen2.5-0.5b-instruct-q5_0.gguf", "q5_0"),
    ("Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00002.gguf", "q4_k_m"),
    ("gemma-3-27b-it-UD-Q4_K_XL.gguf", "q4_k_xl"),
    ("gemma-3-270m-it-IQ4_XS.gguf", "iq4_xs"),
    ("model-FP16.gguf", "fp16"),
    ("two-Q4_K_M-then-Q6_K.gguf", "q6_k"),
    ("mmproj-gemma-3-4b-it-fp16.gguf", "fp16"),
    ("llama-2-7b-chat.Q4_K_M.gguf", None),
    ("model-f16.gguf", None),
    ("model-bf16.gguf", None),
    ("mmproj-model-f16.gguf", None),
    ("README.md", None),
    ("model-Q4_0_4_4.gguf", "q4_0"),
    ("", None),
]


@pytest.mark.parametrize(("filename", "tag"), DETECTED)
def test_detect(filename: str, tag: str | None) -> None:
    assert detect_quantization(filename) == tag


def test_fallback_cases_from_the_brief() -> None:
    assert select_files(["m-Q4_K_M.gguf", "m-Q6_K.gguf"], "q5_k") == ["m-Q6_K.gguf"]
    assert select_files(["m-Q4_K_M.gguf", "m-Q8_0.gguf"], "q6_k") == ["m-Q4_K_M.gguf"]
    assert select_files(["m-Q5_K_M.gguf", "m-Q8_0.gguf"], "q4_k_m") == []
    assert select_files(["m-Q5_K_M.gguf", "m-Q8_0.gguf"], "Q4_K_M") == []


def test_quirks_the_cli_inherits() -> None:
    # Missing q8_0 falls back to the lowest quality first.
    assert select_files(["m-Q2_K.gguf", "m-Q6_K.gguf"], "q8_0") == ["m-Q2_K.gguf"]
    # A base tag takes every variant of it.
    names = ["m-Q4_K_S.gguf", "m-Q4_K_M.gguf", "m-UD-Q4_K_XL.gguf", "m-Q8_0.gguf"]
    assert select_files(names, "q4_k") == names[:3]
    # TheBloke repos look untagged, so every quantization is fetched.
    assert select_files(REPOS["thebloke"], "q4_k_m") == REPOS["thebloke"]
    # When filtering, README and mmproj (f16) files are left behind.
    assert select_files(REPOS["unsloth"], "q8_0") == ["gemma-3-4b-it-Q8_0.gguf"]
    # With a single tag, everything is fetched, whatever was asked for.
    assert select_files(REPOS["single"], "q8_0") == REPOS["single"]
    assert select_files([], "q4_k_m") == []


def test_shards_stay_together() -> None:
    assert select_files(REPOS["sharded"], "q6_k") == [
        "Qwen2.5-72B-Instruct-Q6_K-00001-of-00002.gguf",
        "Qwen2.5-72B-Instruct-Q6_K-00002-of-00002.gguf",
    ]


def test_default_is_the_sdks() -> None:
    assert DEFAULT_QUANTIZATION == "q6_k"
    assert ModelDownloadMixin.initiate_model_download.__defaults__ == (DEFAULT_QUANTIZATION,)
    assert select_files(REPOS["bartowski"]) == ["Llama-3.2-1B-Instruct-Q6_K.gguf"]


def test_available_quantizations_sorted() -> None:
    assert available_quantizations(REPOS["bartowski"]) == ["iq4_xs", "q4_k_m", "q4_k_s", "q6_k", "q8_0"]
    assert available_quantizations(REPOS["untagged"]) == []


@pytest.mark.parametrize(
    "tag", ["q4_k_m", "Q4_K_M", "q8_0", "q6_k", "q4_k", "q5_1", "iq4_xs", "IQ2_XXS", "fp16", "q4_k_xl"]
)
def test_valid_tags(tag: str) -> None:
    assert is_valid_tag(tag)
    # Valid means the SDK would find it in a file name.
    assert SDK.detect_quantization(f"model-{tag}.gguf") == tag.lower()


@pytest.mark.parametrize(
    "tag", ["", "q4", "q9_k", "q1_k", "q4_k_", "q4-k-m", "f16", "bf16", "iq5_k", "iq4", "gguf", " q4_k_m"]
)
def test_invalid_tags(tag: str) -> None:
    assert not is_valid_tag(tag)
