"""Canary determinism check at the start of every runtime session.

A fixed, versioned set of prompts is generated greedily with a fixed seed. The output tokens and
their log-probabilities (rounded to :data:`~evallab.canary.outputs.LOGPROB_DECIMALS` decimals)
are hashed per prompt and compared with the baseline of the same combination — (model id +
revision, quant, runtime kind + version, GPU name). The first session of a combination records
the baseline; every session stores its rows in ``canaries``. ``evallab canary baseline --reset``
retires baselines after a deliberate change.

* :mod:`~evallab.canary.outputs` — the prompts, hashes, combinations and results.
* :mod:`~evallab.canary.generate` — the prompts run through a live runtime session.
* :mod:`~evallab.canary.check` — the comparison with the baseline and the policy
  (:func:`~evallab.canary.check.run_canary` is what the campaign runs).

Changing ``CANARY_PROMPTS``, ``MAX_TOKENS`` or ``LOGPROB_DECIMALS`` requires a new
``CANARY_VERSION`` (old baselines are then simply not compared against).
"""
