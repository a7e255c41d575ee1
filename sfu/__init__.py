"""A WebRTC selective forwarding unit (SFU) daemon."""

__version__ = "0.1.0"
