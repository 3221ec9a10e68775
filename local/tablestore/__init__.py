"""A Tablestore emulator that speaks the wire protocol, for local runs and tests.

``TablestoreEmulator`` (server.py) runs in-process; ``python -m local.tablestore`` or
``barrage emulate tablestore`` runs it standalone.
"""

from local.tablestore.engine import ManualClock, OTSError
from local.tablestore.server import TablestoreEmulator

__all__ = ["ManualClock", "OTSError", "TablestoreEmulator"]
