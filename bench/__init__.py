"""Load generators and reports. Never imported by tests (the smoke test runs them as a
subprocess).

``sfu bench forward`` (or ``python -m bench forward``) runs one publisher and N subscribers
through the SFU; ``livestream`` the same with simulcast; ``audio`` P audio publishers and S
subscribers; ``meeting`` N participants who all receive each other (``--rooms R`` copies any
of them into R rooms, ``--processes K`` spreads the clients over K processes); ``sfu bench
floor`` pushes the forward packet stream through a plain UDP + SRTP fan-out, the floor to
compare with. All print one JSON report with ``--json``.

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
- ``scenario``: which clients each room of a run has (:func:`~bench.scenario.plan`) and the
  clients of one bench process (:class:`~bench.scenario.ClientGroup`); ``worker``: a bench
  worker process and the coordinator's handle on it (``--processes``).
- ``daemon``: a daemon subprocess for a run; ``report``: CPU clocks, /metrics, percentiles.
- ``forward``: runs and measures a scenario (forward, livestream, audio, meeting);
  ``floor``: the floor bench; ``sweep``: ``--sweep``; ``cli``: ``main(argv)``.
"""
