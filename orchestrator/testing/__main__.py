"""`python -m orchestrator.testing [--port 8765] [--echo]`: the fake Realtime server, standalone."""
from orchestrator.testing.fake_realtime import main

main()
