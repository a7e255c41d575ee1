"""Byte-level RTP/RTCP toolkit for the forwarding path.

Pure and synchronous: no asyncio, sockets, clocks or logging. Time is always passed in.

- :mod:`sfu.rtp.header`: parse an RTP header into an :class:`~sfu.rtp.header.RtpView`, read
  and rewrite header extensions (RFC 8285), rewrite seq/ts/ssrc/pt in place, unwrap seq/ts.
- :mod:`sfu.rtp.rtcp`: parse compound RTCP into dataclasses; build SR, RR, SDES, BYE, NACK,
  PLI, FIR, REMB and transport-cc feedback.
- :mod:`sfu.rtp.twcc`: :class:`~sfu.rtp.twcc.TwccRecorder`, transport-cc feedback for a
  publisher's transport.
- :mod:`sfu.rtp.stats`: RFC 3550 receive statistics (loss, jitter, LSR/DLSR) and sender counts.
- :mod:`sfu.rtp.ntp`: NTP timestamp conversions.

Malformed wire input raises :class:`ValueError` with a precise message; callers count and drop.
"""
