"""Driftline's five services, one package each: `python -m services.<name>`."""
