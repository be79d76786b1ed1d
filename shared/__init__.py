"""Driftline's common library: settings, messages, schemas, Kafka and Redis adapters."""
