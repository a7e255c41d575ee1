"""Load generators and reports. Never imported by tests (the smoke test runs them as a
subprocess).

``sfu bench forward`` (or ``python -m bench forward``) runs one publisher and N subscribers
through the SFU; ``sfu bench floor`` pushes the same packet stream through a plain UDP + SRTP
fan-out, the floor to compare with. Both print one JSON report with ``--json``.

Modules, one concept each:

- ``media``: the Opus + VP8 loop, encoded once with PyAV; VP8 RTP payloads (RFC 7741) and a
  receiver's frame assembly and decoding check.
- ``rtp``: pure cores: :class:`~bench.rtp.PublisherCore` (pacing, header extensions, send
  cache, NACK/RTX, keyframes on PLI/FIR, sender reports) and
  :class:`~bench.rtp.ReceiverCore` (per-SSRC counters, loss, one-way delay, transport-cc,
  RR, NACK, PLI).
- ``transport``: one client transport on its own UDP socket: ICE check, DTLS client, SRTP.
- ``signal``: our JSON-over-WebSocket signaling; ``sdp``: the offers and answers clients write.
- ``client``: :class:`~bench.client.BenchPublisher`, :class:`~bench.client.BenchSubscriber`.
- ``daemon``: a daemon subprocess for a run; ``report``: CPU clocks, /metrics, percentiles.
- ``forward``, ``floor``: the two benches; ``cli``: ``main(argv)``.
"""
