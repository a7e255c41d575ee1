"""Codec payload inspection and rewriting for the forwarding path (no decoding).

Pure and synchronous like :mod:`sfu.rtp`: no asyncio, sockets, clocks or logging.

- :mod:`sfu.codecs.vp8`: RFC 7741 payload descriptor parsing and rewriting (always a 15-bit
  picture id), keyframe detection and size, :class:`~sfu.codecs.vp8.Vp8Munger` keeping
  picture id and TL0PICIDX continuous across source switches.
- :mod:`sfu.codecs.h264`: RFC 6184 NAL unit types and keyframe detection for single NAL,
  STAP-A/B and FU-A/B payloads.

Malformed payloads raise :class:`ValueError` with a precise message; callers count and drop.
"""
