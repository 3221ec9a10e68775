"""Pure barrage handlers: the domain model, the ports and send/process/fetch.

Standard library only and no I/O: every effect goes through a port in ``handlers.ports``.
"""
