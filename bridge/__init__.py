"""chatwoot-bridge: Chatwoot's ActionCable feed, normalised and re-published locally.

The package is laid out as a pure core (``actioncable``, ``events``, ``normalise``,
``eventlog``, ``retry``) with thin asyncio services around it; ``app`` wires them.
"""

__version__ = "0.1.0"
