"""Prefect flows of the lab. They wire steps from ``evallab``; the logic lives there."""
