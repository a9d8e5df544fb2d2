"""End-to-end tests against a docker compose cluster built from this repository (see conftest.py)."""
