"""GGUF models from the hub: only the chosen quant is fetched, and its sha256 pin is enforced.

A GGUF repository holds every quant of a model (tens of GB for a 7B model), so a model naming its
``gguf_file`` fetches that file (all parts of a split GGUF) and the small companion files only.
Real parts: a real HTTP server on loopback (``tests/flows/fake_hub.py``), huggingface_hub's
downloader and a Hugging Face cache in a temporary folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants
from pydantic import ValidationError

from evallab.errors import PinError
from evallab.models import gguf_parts, resolve_model
from evallab.spec import HubModelSpec
from tests.flows.fake_hub import FakeHub, fake_hub

SHA = "0123456789abcdef0123456789abcdef01234567"
Q4_PARTS = ("m-q4_k_m-00001-of-00002.gguf", "m-q4_k_m-00002-of-00002.gguf")
FILES = {
    Q4_PARTS[0]: b"GGUF q4 part one",
    Q4_PARTS[1]: b"GGUF q4 part two",
    "m-q8_0.gguf": b"GGUF q8 whole",
    "m-fp16-00001-of-00002.gguf": b"GGUF fp16 part one",
    "m-fp16-00002-of-00002.gguf": b"GGUF fp16 part two",
    "README.md": b"# card",
    "LICENSE": b"Apache-2.0",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    with fake_hub() as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        running.push("org/m-GGUF", SHA, FILES)
        yield running


def _model(name: str, gguf_file: str, sha256: str | None = None) -> HubModelSpec:
    return HubModelSpec(
        source="hf",
        name=name,
        repo="org/m-GGUF",
        revision=SHA,
        gguf_file=gguf_file,
        gguf_sha256=sha256,
    )


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() or p.is_symlink()}


def test_split_gguf_names_every_part() -> None:
    assert gguf_parts("m-q8_0-00001-of-00003.gguf") == [
        "m-q8_0-00001-of-00003.gguf",
        "m-q8_0-00002-of-00003.gguf",
        "m-q8_0-00003-of-00003.gguf",
    ]
    assert gguf_parts("m-q8_0.gguf") == ["m-q8_0.gguf"]


def test_only_the_chosen_quant_is_fetched_and_its_pin_is_checked(hub: FakeHub) -> None:
    q4 = resolve_model(_model("q4", Q4_PARTS[0], _sha(FILES[Q4_PARTS[0]])), Path("."))
    assert _files(q4.path) == {*Q4_PARTS, "README.md", "LICENSE"}
    assert q4.gguf_path == q4.path / Q4_PARTS[0]
    assert q4.weights_sha256 == _sha(FILES[Q4_PARTS[0]])

    # The second quant of the same commit lands in the same snapshot; the first model's
    # content hash covers only its own files, so it doesn't change (its run keys stay put).
    q8 = resolve_model(_model("q8", "m-q8_0.gguf"), Path("."))
    assert q8.path == q4.path and (q8.path / "m-q8_0.gguf").read_bytes() == FILES["m-q8_0.gguf"]
    assert "m-fp16-00001-of-00002.gguf" not in _files(q8.path)
    again = resolve_model(_model("q4", Q4_PARTS[0]), Path("."))
    assert again.sha256 == q4.sha256 != q8.sha256


def test_a_gguf_file_that_differs_from_its_pin_is_refused(hub: FakeHub) -> None:
    wrong = "0" * 64
    with pytest.raises(PinError, match=f"not the pinned {wrong}") as err:
        resolve_model(_model("q8", "m-q8_0.gguf", wrong), Path("."))
    assert _sha(FILES["m-q8_0.gguf"]) in err.value.message


def test_gguf_sha256_must_be_64_hex_and_name_a_file() -> None:
    with pytest.raises(ValidationError, match="64 hexadecimal"):
        _model("q8", "m-q8_0.gguf", "abc123")
    with pytest.raises(ValidationError, match="set gguf_file too"):
        HubModelSpec(source="hf", name="x", repo="a/b", revision=SHA, gguf_sha256="a" * 64)
    assert _model("q8", "m-q8_0.gguf", "AB" * 32).gguf_sha256 == "ab" * 32
