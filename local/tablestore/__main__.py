"""``python -m local.tablestore``: the same as ``barrage emulate tablestore``."""

from local.tablestore.cli import emulate_tablestore

if __name__ == "__main__":
    emulate_tablestore(prog_name="python -m local.tablestore")
