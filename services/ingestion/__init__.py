"""Ingestion: validates raw events and labels; valid ones go on, bad ones to the DLQ."""
