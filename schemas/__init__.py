"""Avro schemas of the system, shipped as package data (see schemas/README.md)."""
