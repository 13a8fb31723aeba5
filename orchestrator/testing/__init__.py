"""Test doubles that ship with the package: fakes of the remote services the orchestrator talks to."""
