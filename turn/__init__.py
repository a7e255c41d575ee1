"""TURN relay (RFC 8656). Stands alone: imports nothing from sfu/ or signaling/."""
