"""WebRTC transports of the SFU: every participant on ONE UDP port, ICE-lite, DTLS-SRTP, SCTP.

The datagram path::

    socket ──► udp.UdpEndpoint.datagram_received(data, addr)
                 └─► ice.IceLiteMux.receive_datagram(data, addr, now) → Decision   (pure)
                       first byte 0..3    STUN Binding request: authenticated by the local
                                          ufrag in USERNAME + MESSAGE-INTEGRITY; the response
                                          is sent back to addr; the 5-tuple is learned on the
                                          first valid check, re-selected on USE-CANDIDATE
                       first byte 20..63  DTLS from a learned tuple ──► transport's
                                          IceTransportAdapter queue ──► aiortc RTCDtlsTransport
                                          (handshake; afterwards SCTP data channels)
                       first byte 128..191 SRTP/SRTCP from a learned tuple (one dict lookup)
                                          ──► DtlsSrtpTransport.srtp_received: unprotected with
                                          the pylibsrtp session, on_rtp / on_rtcp called in the
                                          same datagram_received (no queue, no task per packet)
                       anything else      dropped and counted in mux.drops[reason]
    outbound: DtlsSrtpTransport.send_rtp / aiortc DTLS ──► UdpEndpoint.send(transport_id, data)
              ──► sendto(the transport's selected 5-tuple)

Modules: ``ice`` (pure ICE-lite core), ``udp`` (asyncio shell of the shared socket), ``dtls``
(the only module touching aiortc internals), ``sdp`` (offer/answer), ``errors``
(``WebRtcError``).
"""
