"""Canary determinism check through a real in-process transformers session on the tiny model."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest
import torch
from checks_seed import new_campaign, off_loop, run
from safetensors.torch import load_file, save_file

from evallab.canary.check import record_canary, reset_baselines, run_canary
from evallab.canary.generate import generate_canary
from evallab.canary.outputs import CANARY_PROMPTS, CanaryCombo, hash_logprobs
from evallab.errors import CanaryDriftError
from evallab.models import ModelArtifact
from evallab.runtimes import get_runtime
from evallab.spec import TransformersRuntimeSpec
from evallab.store import Store


def artifact(path: Path) -> ModelArtifact:
    # Same identity whatever folder it points at: a silent change under a fixed pin.
    return ModelArtifact(
        name="tiny",
        source="local",
        model_id="evallab/tiny",
        revision="local:t0",
        sha256="0" * 64,
        path=path,
        quant="none",
        chat=False,
    )


def canary_outputs(path: Path, tmp: Path):  # type: ignore[no-untyped-def]
    session = get_runtime("transformers").start(
        TransformersRuntimeSpec(kind="transformers"), artifact(path), tmp
    )
    with session:
        return generate_canary(session, artifact(path), seed=1234), session.info


@pytest.fixture(scope="module")
def perturbed(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("perturbed") / "tiny"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    name = next(n for n in sorted(tensors) if n.endswith("mlp.down_proj.weight"))
    gen = torch.Generator().manual_seed(7)
    tensors[name] = tensors[name] + 0.02 * torch.randn(tensors[name].shape, generator=gen)
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


def test_logprob_hash_rounds_to_the_stated_precision() -> None:
    assert hash_logprobs([-1.23449, -0.0001]) == hash_logprobs([-1.2341, 0.0])
    assert hash_logprobs([-1.2344]) != hash_logprobs([-1.2356])
    assert hash_logprobs(None) == "none"


def test_baseline_then_match_then_drift(
    migrated_dsn: str, tiny_model: Path, perturbed: Path, tmp_path: Path
) -> None:
    first, info = canary_outputs(tiny_model, tmp_path)
    again, _ = canary_outputs(tiny_model, tmp_path)
    drifted, _ = canary_outputs(perturbed, tmp_path)
    assert [o.prompt_id for o in first] == [p for p, _ in CANARY_PROMPTS]
    assert all(len(o.tokens) >= 1 and o.logprobs for o in first)
    assert [o.output_hash for o in first] == [o.output_hash for o in again]
    combo = CanaryCombo(
        "tiny", "evallab/tiny", "local:t0", "none", info.kind, info.label, info.version, ""
    )

    async def go() -> None:
        conn = await asyncpg.connect(migrated_dsn)
        store = Store(migrated_dsn)
        try:
            cid = await new_campaign(conn)
            base = await off_loop(record_canary, store, cid, combo, first)
            assert base.status == "baseline"
            same = await off_loop(record_canary, store, cid, combo, again)
            assert (same.status, same.drifted, same.tags) == ("match", [], [])

            with pytest.raises(CanaryDriftError) as err:
                await off_loop(record_canary, store, cid, combo, drifted, policy="fail")
            assert "drifted for tiny on transformers" in err.value.message
            assert "logprobs" in err.value.message and "--reset" in err.value.message

            warned = await off_loop(record_canary, store, cid, combo, drifted, policy="warn")
            assert warned.status == "drift" and warned.tags == ["canary_drift"]
            assert set(warned.drifted) <= {p for p, _ in CANARY_PROMPTS} and warned.drifted

            stored = await conn.fetch(
                "SELECT is_baseline, matches_baseline, count(*) AS n FROM canaries "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
            n = len(CANARY_PROMPTS)
            drift_rows = 2 * len(warned.drifted)
            assert [(r["is_baseline"], r["matches_baseline"], r["n"]) for r in stored] == [
                (False, False, drift_rows),
                (False, True, n + 2 * (n - len(warned.drifted))),
                (True, None, n),
            ]
            view = await conn.fetch(
                "SELECT drifted_prompts, recorded_baseline FROM v_canary_checks"
            )
            assert [(r["drifted_prompts"], r["recorded_baseline"]) for r in view] == [
                (drift_rows, True)
            ]

            # A deliberate change: reset, and the next session records the new baseline.
            assert await off_loop(reset_baselines, store, model="tiny") == n
            fresh = await off_loop(record_canary, store, cid, combo, drifted)
            assert fresh.status == "baseline"
            assert (await off_loop(record_canary, store, cid, combo, drifted)).status == "match"
        finally:
            await off_loop(store.close)
            await conn.close()

    run(go())


def test_run_canary_through_the_runner_entry_point(
    migrated_dsn: str, tiny_model: Path, tmp_path: Path
) -> None:
    async def campaign() -> uuid.UUID:
        conn = await asyncpg.connect(migrated_dsn)
        try:
            return await new_campaign(conn)
        finally:
            await conn.close()

    cid = run(campaign())
    model = artifact(tiny_model)
    session = get_runtime("transformers").start(
        TransformersRuntimeSpec(kind="transformers"), model, tmp_path
    )
    with session, Store(migrated_dsn) as store:
        assert run_canary(session, model, store=store, campaign_id=cid, policy="off") is None
        first = run_canary(session, model, store=store, campaign_id=cid, seed=1)
        second = run_canary(session, model, store=store, campaign_id=cid, seed=1)
    assert first is not None and first.status == "baseline"
    assert second is not None and second.status == "match"
