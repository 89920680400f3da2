"""Prefect blocks of the lab: results database, runtime profiles, Hugging Face token."""

from blocks.lab import (
    HF_TOKEN_BLOCK,
    RESULTS_DB_BLOCK,
    ResultsDatabase,
    RuntimeProfile,
    RuntimeProfiles,
    apply_worker_settings,
    profile_block_name,
    results_database,
)

__all__ = [
    "HF_TOKEN_BLOCK",
    "RESULTS_DB_BLOCK",
    "ResultsDatabase",
    "RuntimeProfile",
    "RuntimeProfiles",
    "apply_worker_settings",
    "profile_block_name",
    "results_database",
]
