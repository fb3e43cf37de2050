"""The tag grammar over recorded listings of real Hugging Face GGUF repos (tests/data/repos/).

For each (repo, tag): exactly the files chosen, or the refusal. The listings are the repos' file
names as published (one per line, ``#`` comments), so a change in how a tag is read shows up as a
changed file set on a real layout, not on a made-up one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kamiwaza_cli.catalog import parse
from kamiwaza_cli.errors import UsageError
from kamiwaza_cli.quantization import (
    DEFAULT_QUANTIZATION,
    NoMatch,
    available_quantizations,
    choose,
    detect_quantization,
    is_projector,
    is_valid_tag,
    matches,
    split_part,
)

REPOS = Path(__file__).parent / "data" / "repos"


def listing(repo: str) -> list[str]:
    text = (REPOS / f"{repo.replace('/', '__')}.txt").read_text()
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def parts(stem: str, count: int) -> list[str]:
    """The file names of a llama.cpp split model."""
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


Q7 = "qwen2.5-7b-instruct"
B72 = "Qwen2.5-72B-Instruct"
L1 = "Llama-3.2-1B-Instruct"
U27 = "gemma-3-27b-it"
DS = "DeepSeek-R1-0528"

# (repo, tag or None for the default) -> the weight files, in order, then the projector (or None).
CHOSEN: list[tuple[str, str | None, list[str], str | None]] = [
    # Qwen official, single files
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", None, ["qwen2.5-0.5b-instruct-q6_k.gguf"], None),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4_k_m", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"], None),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"], None),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4_k", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"], None),  # llama.cpp alias
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "fp16", ["qwen2.5-0.5b-instruct-fp16.gguf"], None),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "f16", ["qwen2.5-0.5b-instruct-fp16.gguf"], None),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4_0", ["qwen2.5-0.5b-instruct-q4_0.gguf"], None),
    # Qwen official, split: every part of the one quantization, and nothing else
    ("Qwen/Qwen2.5-7B-Instruct-GGUF", None, parts(f"{Q7}-q6_k", 2), None),
    ("Qwen/Qwen2.5-7B-Instruct-GGUF", "q8_0", parts(f"{Q7}-q8_0", 3), None),
    ("Qwen/Qwen2.5-7B-Instruct-GGUF", "q2_k", [f"{Q7}-q2_k.gguf"], None),
    ("Qwen/Qwen2.5-7B-Instruct-GGUF", "FP16", parts(f"{Q7}-fp16", 4), None),
    # bartowski: _L is its own quantization, ARM repacks only by name, the imatrix never
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", None, [f"{L1}-Q6_K.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q6_k", [f"{L1}-Q6_K.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q6_k_l", [f"{L1}-Q6_K_L.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q4_k_l", [f"{L1}-Q4_K_L.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q4_0", [f"{L1}-Q4_0.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q4_0_4_8", [f"{L1}-Q4_0_4_8.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q3_k_xl", [f"{L1}-Q3_K_XL.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "iq3_m", [f"{L1}-IQ3_M.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "f16", [f"{L1}-f16.gguf"], None),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "fp16", [f"{L1}-f16.gguf"], None),
    # bartowski 72B: a quantization's sub-folder belongs to it
    ("bartowski/Qwen2.5-72B-Instruct-GGUF", None, parts(f"{B72}-Q6_K/{B72}-Q6_K", 2), None),
    ("bartowski/Qwen2.5-72B-Instruct-GGUF", "q6_k_l", parts(f"{B72}-Q6_K_L/{B72}-Q6_K_L", 2), None),
    ("bartowski/Qwen2.5-72B-Instruct-GGUF", "q4_k_m", [f"{B72}-Q4_K_M.gguf"], None),
    ("bartowski/Qwen2.5-72B-Instruct-GGUF", "F16", parts(f"{B72}-f16/{B72}-f16", 4), None),
    # ggml-org gemma-3: the f16 projector rides along with any quantization
    ("ggml-org/gemma-3-4b-it-GGUF", None, ["gemma-3-4b-it-Q4_K_M.gguf"], "mmproj-model-f16.gguf"),
    ("ggml-org/gemma-3-4b-it-GGUF", "q8_0", ["gemma-3-4b-it-Q8_0.gguf"], "mmproj-model-f16.gguf"),
    ("ggml-org/gemma-3-4b-it-GGUF", "f16", ["gemma-3-4b-it-f16.gguf"], "mmproj-model-f16.gguf"),
    # unsloth gemma-3: UD- quants, BF16/ sub-folder, the F16 projector of three
    ("unsloth/gemma-3-27b-it-GGUF", None, [f"{U27}-Q6_K.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "ud-q4_k_xl", [f"{U27}-UD-Q4_K_XL.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "UD-Q4_K_XL", [f"{U27}-UD-Q4_K_XL.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "q4_k_xl", [f"{U27}-UD-Q4_K_XL.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "q4_k_m", [f"{U27}-Q4_K_M.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "q2_k", [f"{U27}-Q2_K.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "q2_k_l", [f"{U27}-Q2_K_L.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "iq4_nl", [f"{U27}-IQ4_NL.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "ud-iq1_s", [f"{U27}-UD-IQ1_S.gguf"], "mmproj-F16.gguf"),
    ("unsloth/gemma-3-27b-it-GGUF", "bf16", parts(f"BF16/{U27}-BF16", 2), "mmproj-F16.gguf"),
    # mradermacher: dotted names, the mmproj is not a quantization of the model
    ("mradermacher/gemma-3-27b-it-GGUF", "q4_k_m", [f"{U27}.Q4_K_M.gguf"], f"{U27}.mmproj-f16.gguf"),
    ("mradermacher/gemma-3-27b-it-GGUF", "iq4_xs", [f"{U27}.IQ4_XS.gguf"], f"{U27}.mmproj-f16.gguf"),
    ("mradermacher/gemma-3-27b-it-GGUF", None, [f"{U27}.Q6_K.gguf"], f"{U27}.mmproj-f16.gguf"),
    ("mradermacher/gemma-3-27b-it-i1-GGUF", "q4_k_m", [f"{U27}.i1-Q4_K_M.gguf"], None),
    ("mradermacher/gemma-3-27b-it-i1-GGUF", None, [f"{U27}.i1-Q5_K_M.gguf"], None),
    # Microsoft Phi: the repo's own "q4"; the default never takes fp16 while q4 is there
    ("microsoft/Phi-3-mini-4k-instruct-gguf", None, ["Phi-3-mini-4k-instruct-q4.gguf"], None),
    ("microsoft/Phi-3-mini-4k-instruct-gguf", "q4", ["Phi-3-mini-4k-instruct-q4.gguf"], None),
    ("microsoft/Phi-3-mini-4k-instruct-gguf", "fp16", ["Phi-3-mini-4k-instruct-fp16.gguf"], None),
    ("microsoft/Phi-3-mini-4k-instruct-gguf", "F16", ["Phi-3-mini-4k-instruct-fp16.gguf"], None),
    # MXFP4, TQ1_0 and UD sub-folders
    ("ggml-org/gpt-oss-20b-GGUF", None, ["gpt-oss-20b-mxfp4.gguf"], None),
    ("ggml-org/gpt-oss-20b-GGUF", "mxfp4", ["gpt-oss-20b-mxfp4.gguf"], None),
    ("unsloth/DeepSeek-R1-0528-GGUF", "tq1_0", ["DeepSeek-R1-0528-UD-TQ1_0.gguf"], None),
    ("unsloth/DeepSeek-R1-0528-GGUF", "ud-iq1_s", parts(f"UD-IQ1_S/{DS}-UD-IQ1_S", 4), None),
    ("unsloth/DeepSeek-R1-0528-GGUF", None, parts(f"UD-Q2_K_XL/{DS}-UD-Q2_K_XL", 6), None),
]  # fmt: skip


@pytest.mark.parametrize(("repo", "tag", "weights", "projector"), CHOSEN)
def test_files_chosen(repo: str, tag: str | None, weights: list[str], projector: str | None) -> None:
    names = listing(repo)
    choice = choose(names, tag)
    assert list(choice.weights) == weights
    assert choice.projector == projector
    assert choice.files == [*weights, *([projector] if projector else [])]
    assert choice.first == weights[0]
    assert set(choice.files) <= set(names)
    # Said as the repo writes it, and the name it is found by again.
    assert choice.quantization is not None and all(matches(w, choice.quantization) for w in weights)
    assert choice.defaulted is (tag is None and not matches(weights[0], DEFAULT_QUANTIZATION))


QWEN = "fp16, q2_k, q3_k_m, q4_0, q4_k_m, q5_0, q5_k_m, q6_k, q8_0"
BARTOWSKI = (
    "f16, iq3_m, iq4_xs, q3_k_l, q3_k_xl, q4_0, q4_0_4_4, q4_0_4_8, q4_0_8_8, q4_k_l, q4_k_m, q4_k_s, "
    "q5_k_l, q5_k_m, q5_k_s, q6_k, q6_k_l, q8_0"
)
I1 = "iq1_m, iq2_xxs, iq3_m, iq4_xs, q4_0, q4_k_m, q4_k_s, q5_k_m"
REFUSED = [
    ("Qwen/Qwen2.5-7B-Instruct-GGUF", "q4_k_s", f"no q4_k_s file (it has: {QWEN})"),
    ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "bf16", f"no bf16 file (it has: {QWEN})"),
    ("microsoft/Phi-3-mini-4k-instruct-gguf", "q4_k_m", "no q4_k_m file (it has: fp16, q4)"),
    ("microsoft/Phi-3-mini-4k-instruct-gguf", "q8_0", "no q8_0 file (it has: fp16, q4)"),
    ("ggml-org/gemma-3-4b-it-GGUF", "q6_k", "no q6_k file (it has: f16, q4_k_m, q8_0)"),
    ("ggml-org/gpt-oss-20b-GGUF", "q4_k_m", "no q4_k_m file (it has: mxfp4)"),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "q2_k", f"no q2_k file (it has: {BARTOWSKI})"),
    ("mradermacher/gemma-3-27b-it-i1-GGUF", "Q6_K", f"no q6_k file (it has: {I1})"),
]  # fmt: skip


@pytest.mark.parametrize(("repo", "tag", "message"), REFUSED)
def test_refused(repo: str, tag: str, message: str) -> None:
    with pytest.raises(NoMatch) as info:
        choose(listing(repo), tag)
    assert str(info.value) == message
    assert info.value.available == available_quantizations(listing(repo))


def test_a_repo_without_gguf_weights_is_not_chosen_from() -> None:
    names = listing("Qwen/Qwen2.5-0.5B-Instruct")
    choice = choose(names)
    assert choice.gguf is False and choice.quantization is None and choice.files == names
    with pytest.raises(NoMatch, match=r"no q4_k_m file \(it has: none\)"):
        choose(names, "q4_k_m")


# --- the rules, on names of our own -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("m-Q4_K_M.gguf", "q4_k_m"),
        ("m.Q4_K_M.gguf", "q4_k_m"),
        ("m_Q4_K_M.gguf", "q4_k_m"),
        ("Q4_K_M/m-00001-of-00002.gguf", "q4_k_m"),  # the folder's token when the file has none
        ("Q8_0/m-Q4_K_M.gguf", "q4_k_m"),  # the file's own token first
        ("m-Q4_0_4_4.gguf", "q4_0_4_4"),
        ("m-IQ4_NL_4_4.gguf", "iq4_nl_4_4"),
        ("m-UD-Q4_K_XL.gguf", "ud-q4_k_xl"),
        ("m-ud_iq1_s.gguf", "ud-iq1_s"),
        ("m-TQ1_0.gguf", "tq1_0"),
        ("m-MXFP4_MOE.gguf", "mxfp4_moe"),
        ("m-BF16.gguf", "bf16"),
        ("m-F32.gguf", "f32"),
        ("m-q4.gguf", "q4"),
        ("Qwen2.5-7B-Instruct.gguf", None),  # "2.5", "7b": no quantization tokens
        ("mq4_k_m.gguf", None),  # glued to a word: not a token
        ("m-q4_k_mx.gguf", None),  # a longer token is not the shorter tag
        ("m-q9_k.gguf", None),
        ("README.md", None),
        ("", None),
    ],
)
def test_detect(name: str, label: str | None) -> None:
    assert detect_quantization(name) == label


def test_whole_tokens_never_prefixes() -> None:
    assert not matches("m-Q6_K_L.gguf", "q6_k")
    assert not matches("m-Q4_0_4_4.gguf", "q4_0")
    assert not matches("m-Q4_K_M.gguf", "q4")
    assert not matches("m-IQ4_XS.gguf", "q4_k_m")
    assert matches("m-Q4_K_M.gguf", "Q4_K")  # llama.cpp's alias, not a prefix
    assert matches("m-fp16.gguf", "f16") and matches("m-F16.gguf", "fp16")
    assert not matches("m-bf16.gguf", "f16")


def test_repacks_only_by_name() -> None:
    names = ["m-Q4_0_4_4.gguf", "m-Q4_0_8_8.gguf"]
    with pytest.raises(NoMatch):
        choose(names)
    with pytest.raises(NoMatch):
        choose(names, "q4_0")
    assert choose(names, "q4_0_8_8").weights == ("m-Q4_0_8_8.gguf",)


def test_full_precision_only_when_nothing_else() -> None:
    assert choose(["m-f32.gguf", "m-bf16.gguf", "m-IQ1_S.gguf"]).weights == ("m-IQ1_S.gguf",)
    assert choose(["m-f32.gguf", "m-bf16.gguf", "m-f16.gguf"]).weights == ("m-f16.gguf",)
    assert choose(["m-f32.gguf", "model.gguf"]).weights == ("model.gguf",)
    choice = choose(["m-f32.gguf"])
    assert choice.weights == ("m-f32.gguf",) and choice.defaulted


def test_untagged_gguf() -> None:
    assert choose(["model.gguf", "README.md"]).files == ["model.gguf"]
    with pytest.raises(NoMatch, match=r"no q4_k_m file \(it has: none\)"):
        choose(["model.gguf"], "q4_k_m")


def test_split_parts_and_companions() -> None:
    names = ["m-Q8_0-00002-of-00002.gguf", "m-Q8_0-00001-of-00002.gguf", "mmproj-Q8_0.gguf", "mmproj-bf16.gguf"]
    choice = choose(names, "q8_0")
    assert choice.weights == ("m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf")
    assert choice.projector == "mmproj-bf16.gguf"
    assert split_part("m-Q8_0-00002-of-00002.gguf") == (2, 2) and split_part("m.gguf") is None
    assert is_projector("x.mmproj-f16.gguf") and not is_projector("mmprojector.gguf")


@pytest.mark.parametrize(
    "tag",
    ["q4_k_m", "Q4_K_M", "q8_0", "q6_k", "q4_k", "q5_1", "iq4_xs", "IQ2_XXS", "fp16", "f16", "bf16", "F32",
     "q4", "q4_k_l", "q3_k_xl", "ud-q4_k_xl", "UD-IQ1_S", "tq1_0", "mxfp4", "q4_0_4_4"],
)  # fmt: skip
def test_valid_tags(tag: str) -> None:
    assert is_valid_tag(tag)
    assert parse(f"qwen2.5-7b-instruct:{tag}").quant == tag.lower()
    assert matches(f"model-{tag}.gguf", tag)


@pytest.mark.parametrize("tag", ["", "q9_k", "q1_k", "q4_k_", "q4-k-m", "iq5_k", "iq4", "gguf", " q4_k_m", "latest"])
def test_invalid_tags(tag: str) -> None:
    assert not is_valid_tag(tag)
    if tag.strip():
        with pytest.raises(UsageError):
            parse(f"qwen2.5-7b-instruct:{tag}")
