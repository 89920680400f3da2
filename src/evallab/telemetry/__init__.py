"""GPU telemetry and the checks a campaign runs around its runs.

* :mod:`~evallab.telemetry.gpu` — which GPU and driver stack a run uses (shared with
  :mod:`evallab.environment`, which is why it imports nothing else of the lab).
* :mod:`~evallab.telemetry.nvml` — NVML readings: the real backend and a scripted fake.
* :mod:`~evallab.telemetry.devices` — which GPUs a run uses (``CUDA_VISIBLE_DEVICES`` mapped to
  NVML indices) and the names of their Prefect concurrency slots.
* :mod:`~evallab.telemetry.sampler` — readings sampled in the background while a run executes.
* :mod:`~evallab.telemetry.rules` — the validity rules applied to a run's samples.
* :mod:`~evallab.telemetry.guard` — :class:`~evallab.telemetry.guard.CampaignGuard`, the checks
  the campaign engine runs around sessions, benchmarks and ingests.
"""
