"""Campaign files: the strict, typed edge of the lab.

A campaign file (YAML) names models, runtimes and benchmarks; the lab evaluates every
(model, runtime, benchmark) combination. Everything is validated here, once: unknown keys are
refused, and each validator names the bad value. See ``docs/campaign-format.md``.

The package: :mod:`~evallab.spec.models` (what to evaluate), :mod:`~evallab.spec.runtimes` (what
serves it), :mod:`~evallab.spec.campaign` (benchmarks, checks, the campaign itself) and
:mod:`~evallab.spec.load` (reading and validating a file, spec hashes).
"""

from evallab.spec.campaign import BenchmarkSpec, CampaignSpec, ChecksSpec, GenerationSpec
from evallab.spec.load import campaign_base_dir, load_campaign, require_pinned, spec_sha256
from evallab.spec.models import (
    HubModelSpec,
    LocalModelSpec,
    ModelSpec,
    PackageModelSpec,
    TinyModelSpec,
)
from evallab.spec.runtimes import (
    LlamaCppRuntimeSpec,
    OpenAIEndpointRuntimeSpec,
    RuntimeSpec,
    SGLangRuntimeSpec,
    TransformersRuntimeSpec,
    VLLMRuntimeSpec,
)

__all__ = [
    "BenchmarkSpec",
    "CampaignSpec",
    "ChecksSpec",
    "GenerationSpec",
    "HubModelSpec",
    "LlamaCppRuntimeSpec",
    "LocalModelSpec",
    "ModelSpec",
    "OpenAIEndpointRuntimeSpec",
    "PackageModelSpec",
    "RuntimeSpec",
    "SGLangRuntimeSpec",
    "TinyModelSpec",
    "TransformersRuntimeSpec",
    "VLLMRuntimeSpec",
    "campaign_base_dir",
    "load_campaign",
    "require_pinned",
    "spec_sha256",
]
