"""The canary compared with its baseline, stored, and the campaign's policy applied.

:func:`run_canary` is what a campaign calls right after a runtime session starts:
it generates the canary (:mod:`evallab.canary.generate`) and hands the outputs to
:func:`record_canary`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from evallab.canary.generate import generate_canary
from evallab.canary.outputs import (
    CANARY_VERSION,
    LOGPROB_DECIMALS,
    CanaryCombo,
    CanaryOutput,
    CanaryResult,
)
from evallab.errors import CanaryDriftError
from evallab.store import Store
from evallab.store.watch import CanaryRow

if TYPE_CHECKING:
    from evallab.models import ModelArtifact
    from evallab.runtimes.base import RuntimeSession

__all__ = ["record_canary", "reset_baselines", "run_canary"]


def record_canary(
    store: Store,
    campaign_id: uuid.UUID,
    combo: CanaryCombo,
    outputs: Sequence[CanaryOutput],
    policy: Literal["fail", "warn", "off"] = "fail",
) -> CanaryResult:
    """Compare outputs with the combination's baseline, store every row, apply the policy.

    The first check of a combination (or the first after a reset) records the baseline.

    Raises:
        CanaryDriftError: outputs differ from the baseline and the policy is ``fail`` (the rows
            are stored first, so the drift stays on record).
    """
    baseline = store.canary_baseline(combo.key, CANARY_VERSION)
    is_baseline = not baseline
    drifted: list[str] = []
    details: list[str] = []
    rows = []
    for out in outputs:
        match: bool | None = None
        if not is_baseline:
            expected = baseline.get(out.prompt_id)
            match = expected == (out.output_hash, out.logprob_hash)
            if not match:
                drifted.append(out.prompt_id)
                want = expected or ("(none)", "(none)")
                details.append(
                    f"{out.prompt_id}: tokens {out.output_hash[:12]} vs baseline {want[0][:12]}, "
                    f"logprobs {out.logprob_hash[:12]} vs baseline {want[1][:12]}"
                )
        rows.append(
            CanaryRow(
                campaign_id=campaign_id,
                combo_key=combo.key,
                canary_version=CANARY_VERSION,
                prompt_id=out.prompt_id,
                output_hash=out.output_hash,
                logprob_hash=out.logprob_hash,
                is_baseline=is_baseline,
                matches_baseline=match,
                model_name=combo.model_name,
                model_revision=combo.model_revision,
                quant=combo.quant,
                runtime_label=combo.runtime_label,
                runtime_version=combo.runtime_version,
                gpu_name=combo.gpu_name,
                logprob_decimals=LOGPROB_DECIMALS,
                n_tokens=len(out.tokens),
            )
        )
    store.add_canary_rows(rows)
    status: Literal["baseline", "match", "drift"] = (
        "baseline" if is_baseline else ("drift" if drifted else "match")
    )
    result = CanaryResult(combo, status, list(outputs), drifted, details)
    if status == "drift" and policy == "fail":
        raise CanaryDriftError(
            f"canary {CANARY_VERSION} drifted for {combo.model_name} on {combo.runtime_label} "
            f"({len(drifted)}/{len(outputs)} prompts differ from the baseline): "
            + "; ".join(details),
            value=f"combination {combo.key[:12]} (revision {combo.model_revision}, quant "
            f"{combo.quant}, {combo.runtime_kind} {combo.runtime_version}, "
            f"GPU {combo.gpu_name or 'none'})",
            fix="if the change is deliberate, run `evallab canary baseline --reset --model "
            f"{combo.model_name}`; to run anyway and tag the runs, set checks.canary: warn",
        )
    return result


def reset_baselines(
    store: Store,
    *,
    model: str | None = None,
    runtime: str | None = None,
    combo_key: str | None = None,
) -> int:
    """Retire current baselines (all, or those matching the filters); returns how many rows.

    The next canary of each affected combination records a new baseline. Old rows are kept.
    """
    return store.retire_canary_baselines(model=model, runtime=runtime, combo_key=combo_key)


def run_canary(
    session: RuntimeSession,
    model: ModelArtifact,
    *,
    store: Store,
    campaign_id: uuid.UUID,
    policy: Literal["fail", "warn", "off"] = "fail",
    seed: int = 0,
    gpu_name: str = "",
) -> CanaryResult | None:
    """Generate the canary through ``session`` and check it against the baseline.

    Call right after a runtime session starts. Returns None when the policy is ``off``.

    Raises:
        CanaryDriftError: drift under the ``fail`` policy.
        RuntimeLaunchError: the runtime didn't answer.
    """
    if policy == "off":
        return None
    info = session.info
    combo = CanaryCombo(
        model_name=model.name,
        model_id=model.model_id,
        model_revision=model.revision,
        quant=model.quant,
        runtime_kind=info.kind,
        runtime_label=info.label,
        runtime_version=info.version,
        gpu_name=gpu_name,
    )
    outputs = generate_canary(session, model, seed)
    return record_canary(store, campaign_id, combo, outputs, policy)
