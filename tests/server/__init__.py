"""Tests of the interface server (chanserve.server)."""
