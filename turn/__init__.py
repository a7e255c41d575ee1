"""TURN relay (RFC 8656). Stands alone: imports nothing from sfu/ or signaling/.

One module per concept: ``stun`` (codec), ``channeldata``, ``framing`` (TCP/TLS streams),
``auth`` (long-term and REST credentials, nonces), ``policy`` (which peers may be reached),
``allocation`` (allocations, permissions, channel bindings as data), ``ports`` (relay ports),
``handlers`` (request handlers by class and method), ``server`` (the sans-I/O core),
``shell`` (asyncio), ``config``, ``cli`` (``sfu turn``), ``client`` (a small blocking client),
``bench`` (``python -m turn.bench``).
"""

from turn.auth import mint_rest_credentials
from turn.config import TurnConfig
from turn.errors import TurnConfigError, TurnError
from turn.server import TurnServer

__all__ = ["TurnConfig", "TurnConfigError", "TurnError", "TurnServer", "mint_rest_credentials"]
