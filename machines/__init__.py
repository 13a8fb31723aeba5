"""The per-call finite-state machine: pure, synchronous, no I/O.

Typed events go in (`machines.events`), typed effects come out (`machines.effects`).
"""
