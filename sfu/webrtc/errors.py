"""The root error of :mod:`sfu.webrtc`."""

from __future__ import annotations


class WebRtcError(Exception):
    """A WebRTC transport could not be set up or used (bad SDP, failed DTLS handshake...)."""
