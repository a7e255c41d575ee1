"""The pure ICE-lite core: STUN checks, tuple learning, demultiplexing, restarts, consent."""

from __future__ import annotations

import pytest
from aioice import stun

from sfu.webrtc.ice import Decision, DropReason, IceCredentials, IceLiteMux, Kind

UFRAG, PWD = "srv1", "serverpasswordserverpwd"  # 4 and 23 ice-chars
CLIENT = ("127.0.0.1", 50000)
OTHER = ("127.0.0.1", 50001)
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 §2.1 and §2.2: sample IPv4 request (ICE-CONTROLLED) and response, password below.
RFC5769_PWD = "VOkJxbRl1RmTxUk/WvJxBt"
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae8022001053545"
    "54e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36"
    "000600096576746a3a6836765920202000080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf"
)
RFC5769_XOR_MAPPED_ADDRESS = bytes.fromhex("002000080001a147e112a643")  # 192.0.2.1:32853


def binding(
    username: str | None = f"{UFRAG}:cli1",
    pwd: str | None = PWD,
    *,
    use_candidate: bool = False,
    controlling: bool = True,
    transaction_id: bytes = TID,
    fingerprint: bool = True,
) -> bytes:
    """A Binding request as a full ICE agent (aioice, Chromium) sends it."""
    attributes: dict[str, object] = {"PRIORITY": 1853824767}
    if username is not None:
        attributes["USERNAME"] = username
    attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = 0x1234
    if use_candidate:
        attributes["USE-CANDIDATE"] = None
    message = stun.Message(
        stun.Method.BINDING, stun.Class.REQUEST, transaction_id=transaction_id,
        attributes=attributes,
    )
    if pwd is not None:
        message.add_message_integrity(pwd.encode())
    elif fingerprint:
        message.add_fingerprint()
    return bytes(message)


def rtp(first_byte: int = 0x80) -> bytes:
    return bytes([first_byte, 111]) + bytes(10) + b"payload"


def dtls(first_byte: int = 22) -> bytes:
    return bytes([first_byte, 0xFE, 0xFD]) + bytes(10)


@pytest.fixture
def mux() -> IceLiteMux:
    m = IceLiteMux(restart_grace_s=10.0, consent_timeout_s=30.0)
    m.add("t1", UFRAG, PWD, now=0.0)
    return m


def test_authenticated_check_is_answered_and_selects_the_tuple(mux: IceLiteMux) -> None:
    decision = mux.receive_datagram(binding(), CLIENT, now=1.0)

    assert decision.kind is Kind.STUN
    assert decision.transport_id == "t1"
    assert decision.selected
    assert decision.response is not None
    response = stun.parse_message(decision.response)  # also checks FINGERPRINT
    assert response.message_class is stun.Class.RESPONSE
    assert response.message_method is stun.Method.BINDING
    assert response.transaction_id == TID
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert "FINGERPRINT" in response.attributes
    assert response.check_message_integrity(PWD.encode())
    assert mux.selected_addr("t1") == CLIENT
    assert mux.consent_at("t1") == 1.0
    assert mux.drops == {}


def test_xor_mapped_address_bytes_match_rfc5769() -> None:
    m = IceLiteMux()
    m.add("t", "evtj", RFC5769_PWD)
    request = stun.Message(
        stun.Method.BINDING, stun.Class.REQUEST, transaction_id=TID,
        attributes={"USERNAME": "evtj:h6vY", "ICE-CONTROLLING": 1},
    )
    request.add_message_integrity(RFC5769_PWD.encode())
    decision = m.receive_datagram(bytes(request), ("192.0.2.1", 32853), now=0.0)
    assert decision.response is not None
    assert decision.response[20:32] == RFC5769_XOR_MAPPED_ADDRESS


def test_rfc5769_request_from_a_controlled_peer_gets_487() -> None:
    m = IceLiteMux()
    m.add("t", "evtj", RFC5769_PWD)
    decision = m.receive_datagram(RFC5769_REQUEST, CLIENT, now=0.0)

    assert decision.kind is Kind.DROP
    assert decision.reason == DropReason.ROLE_CONFLICT
    assert decision.response is not None
    error = stun.parse_message(decision.response)
    assert error.message_class is stun.Class.ERROR
    assert error.attributes["ERROR-CODE"] == (487, "Role Conflict")
    assert error.check_message_integrity(RFC5769_PWD.encode())
    assert m.drops == {"role_conflict": 1}
    assert m.selected_addr("t") is None


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (binding(pwd="wrongpasswordwrongpassw"), DropReason.BAD_INTEGRITY),
        (binding(username="nope:cli1"), DropReason.UNKNOWN_UFRAG),
        (binding(username=None), DropReason.MISSING_CREDENTIALS),
        (binding(pwd=None), DropReason.MISSING_CREDENTIALS),
    ],
    ids=["bad_integrity", "unknown_ufrag", "no_username", "no_integrity"],
)
def test_unauthenticated_checks_are_dropped_silently(
    mux: IceLiteMux, request_bytes: bytes, reason: str
) -> None:
    decision = mux.receive_datagram(request_bytes, CLIENT, now=1.0)
    assert decision == Decision(Kind.DROP, reason=reason)
    assert mux.drops == {reason: 1}
    assert mux.selected_addr("t1") is None
    assert mux.consent_at("t1") is None
    # ... and the tuple stays unknown.
    assert mux.receive_datagram(rtp(), CLIENT, now=1.0).reason == DropReason.UNKNOWN_TUPLE


def _corrupt_fingerprint(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _truncated_attribute() -> bytes:
    # PRIORITY announced with 4 bytes but the message ends after 2.
    body = b"\x00\x24\x00\x04\x00\x00"
    return b"\x00\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + TID + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x00\x00", DropReason.MALFORMED_STUN),  # shorter than a header
        (binding()[:-4], DropReason.MALFORMED_STUN),  # length field does not match
        (binding()[:4] + b"\xde\xad\xbe\xef" + binding()[8:], DropReason.MALFORMED_STUN),
        (_corrupt_fingerprint(binding()), DropReason.MALFORMED_STUN),
        (_truncated_attribute(), DropReason.MALFORMED_STUN),
        (b"\x00\x05\x00\x00\x21\x12\xa4\x42" + TID, DropReason.MALFORMED_STUN),  # no method 5
        (b"\x01\x01\x00\x00\x21\x12\xa4\x42" + TID, DropReason.UNEXPECTED_STUN),  # a response
        (b"\x00\x11\x00\x00\x21\x12\xa4\x42" + TID, DropReason.UNEXPECTED_STUN),  # indication
        (b"", DropReason.EMPTY),
        (bytes([4]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),  # RFC 7983: 4..19 unused
        (bytes([19]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),  # ZRTP
        (bytes([64]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),  # TURN channel data
        (bytes([127]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),
        (bytes([192]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),
        (bytes([255]) + bytes(30), DropReason.UNKNOWN_FIRST_BYTE),
    ],
)
def test_malformed_and_unclassifiable_datagrams_are_counted(
    mux: IceLiteMux, data: bytes, reason: str
) -> None:
    mux.receive_datagram(binding(), CLIENT, now=1.0)  # even from a known tuple
    decision = mux.receive_datagram(data, CLIENT, now=1.0)
    assert decision.kind is Kind.DROP
    assert decision.reason == reason
    assert decision.response is None
    assert mux.drops == {reason: 1}


@pytest.mark.parametrize(
    ("data", "kind"),
    [(dtls(20), Kind.DTLS), (dtls(22), Kind.DTLS), (dtls(63), Kind.DTLS),
     (rtp(128), Kind.RTP), (rtp(0x90), Kind.RTP), (rtp(191), Kind.RTP)],
)
def test_dtls_and_rtp_are_demultiplexed_by_tuple(
    mux: IceLiteMux, data: bytes, kind: Kind
) -> None:
    assert mux.receive_datagram(data, CLIENT, now=1.0).reason == DropReason.UNKNOWN_TUPLE
    mux.receive_datagram(binding(), CLIENT, now=1.0)

    decision = mux.receive_datagram(data, CLIENT, now=2.0)

    assert decision == Decision(kind, "t1")
    assert mux.receive_datagram(data, OTHER, now=2.0).reason == DropReason.UNKNOWN_TUPLE
    assert mux.drops == {"unknown_tuple": 2}


def test_fast_path_returns_shared_decisions(mux: IceLiteMux) -> None:
    mux.receive_datagram(binding(), CLIENT, now=1.0)
    first = mux.receive_datagram(rtp(), CLIENT, now=1.0)
    assert mux.receive_datagram(rtp(), CLIENT, now=1.0) is first


def test_tuple_moves_only_on_use_candidate(mux: IceLiteMux) -> None:
    assert mux.receive_datagram(binding(), CLIENT, now=1.0).selected

    # A check on another pair: answered, the tuple becomes valid, the selection stays.
    decision = mux.receive_datagram(binding(), OTHER, now=2.0)
    assert decision.kind is Kind.STUN and not decision.selected
    assert mux.selected_addr("t1") == CLIENT
    assert mux.receive_datagram(rtp(), OTHER, now=2.0).kind is Kind.RTP

    # The controlling agent nominates the other pair.
    decision = mux.receive_datagram(binding(use_candidate=True), OTHER, now=3.0)
    assert decision.selected
    assert mux.selected_addr("t1") == OTHER

    # Nominating the selected pair again changes nothing.
    assert not mux.receive_datagram(binding(use_candidate=True), OTHER, now=4.0).selected
    assert mux.selected_addr("t1") == OTHER


def test_first_check_with_use_candidate_selects(mux: IceLiteMux) -> None:
    assert mux.receive_datagram(binding(use_candidate=True), OTHER, now=1.0).selected
    assert mux.selected_addr("t1") == OTHER


def test_learned_tuples_are_bounded_and_keep_the_selected_one() -> None:
    m = IceLiteMux(max_tuples=2)
    m.add("t", UFRAG, PWD)
    addrs = [("127.0.0.1", 40000 + i) for i in range(4)]
    for addr in addrs:
        m.receive_datagram(binding(), addr, now=1.0)
    assert m.selected_addr("t") == addrs[0]
    routed = [a for a in addrs if m.receive_datagram(rtp(), a, now=1.0).kind is Kind.RTP]
    assert routed == [addrs[0], addrs[3]]


def test_a_tuple_authenticating_for_another_transport_moves(mux: IceLiteMux) -> None:
    mux.add("t2", "srv2", "secondpasswordsecondpwd")
    mux.receive_datagram(binding(), CLIENT, now=1.0)
    decision = mux.receive_datagram(binding("srv2:c", "secondpasswordsecondpwd"), CLIENT, 2.0)
    assert decision.transport_id == "t2" and decision.selected
    assert mux.receive_datagram(rtp(), CLIENT, now=2.0).transport_id == "t2"
    assert mux.selected_addr("t1") is None


def test_remote_ufrag_is_remembered_but_not_enforced(mux: IceLiteMux) -> None:
    mux.set_remote("t1", "cli1", "clientpasswordclientpwd")
    assert mux.remote_credentials("t1") == ("cli1", "clientpasswordclientpwd")
    # Chromium after restartIce(), before our answer: our old ufrag with its NEW ufrag.
    decision = mux.receive_datagram(binding(f"{UFRAG}:cli2"), CLIENT, 1.0)
    assert decision.kind is Kind.STUN
    mux.restart("t1", "srvB", "restartedpasswordrestar", now=2.0)
    assert mux.remote_credentials("t1") == ("cli1", "clientpasswordclientpwd")
    mux.set_remote("t1", "cli2", "clientpasswordclientpw2")
    assert mux.remote_credentials("t1") == ("cli2", "clientpasswordclientpw2")


def test_ice_restart_keeps_old_credentials_for_the_grace_period(mux: IceLiteMux) -> None:
    mux.receive_datagram(binding(), CLIENT, now=1.0)
    new_ufrag, new_pwd = "srvB", "restartedpasswordrestar"
    mux.restart("t1", new_ufrag, new_pwd, now=100.0)
    assert mux.local_ufrags("t1") == [UFRAG, new_ufrag]

    # Both generations answer; the learned tuple survives the restart.
    assert mux.receive_datagram(binding(), CLIENT, now=105.0).kind is Kind.STUN
    new = mux.receive_datagram(binding(f"{new_ufrag}:cliB", new_pwd), CLIENT, now=105.0)
    assert new.kind is Kind.STUN and not new.selected
    assert stun.parse_message(new.response or b"").check_message_integrity(new_pwd.encode())
    assert mux.receive_datagram(rtp(), CLIENT, now=105.0).kind is Kind.RTP
    assert mux.get_timer() == 110.0

    # After the grace period the old ufrag is unknown, even before handle_timeout runs.
    assert mux.receive_datagram(binding(), CLIENT, now=110.0).reason == DropReason.UNKNOWN_UFRAG
    assert mux.handle_timeout(110.0) == []
    assert mux.local_ufrags("t1") == [new_ufrag]
    assert mux.receive_datagram(binding(), CLIENT, now=111.0).reason == DropReason.UNKNOWN_UFRAG
    assert mux.receive_datagram(binding(f"{new_ufrag}:c", new_pwd), CLIENT, 111.0).kind is Kind.STUN
    # The old ufrag may be used again by a new transport.
    mux.add("t2", UFRAG, PWD)


def test_consent_expires_once_and_is_refreshed_by_checks(mux: IceLiteMux) -> None:
    mux.add("never_checked", "srv9", "ninepasswordninepasswor", now=0.0)
    mux.add("no_clock", "srv8", "eightpasswordeightpassw")
    mux.receive_datagram(binding(), CLIENT, now=10.0)

    assert mux.get_timer() == 30.0
    assert mux.handle_timeout(29.9) == []
    assert mux.handle_timeout(30.0) == ["never_checked"]
    assert mux.handle_timeout(39.0) == []
    assert mux.handle_timeout(40.0) == ["t1"]
    assert mux.handle_timeout(80.0) == []  # reported once
    assert mux.get_timer() is None

    mux.receive_datagram(binding(), CLIENT, now=90.0)
    assert mux.consent_at("t1") == 90.0
    assert mux.handle_timeout(120.0) == ["t1"]


def test_remove_forgets_credentials_and_tuples(mux: IceLiteMux) -> None:
    mux.receive_datagram(binding(), CLIENT, now=1.0)
    mux.remove("t1")
    mux.remove("t1")  # idempotent
    assert "t1" not in mux and len(mux) == 0
    assert mux.receive_datagram(rtp(), CLIENT, now=2.0).reason == DropReason.UNKNOWN_TUPLE
    assert mux.receive_datagram(binding(), CLIENT, now=2.0).reason == DropReason.UNKNOWN_UFRAG


def test_registry_rejects_duplicates_and_bad_credentials(mux: IceLiteMux) -> None:
    with pytest.raises(ValueError, match="already exists"):
        mux.add("t1", "othr", PWD)
    with pytest.raises(ValueError, match="in use"):
        mux.add("t2", UFRAG, PWD)
    with pytest.raises(ValueError, match="ufrag"):
        mux.add("t3", "a:b!", PWD)
    with pytest.raises(ValueError, match="pwd"):
        mux.add("t4", "abcd", "short")
    with pytest.raises(KeyError):
        mux.restart("nope", "abcd", PWD, now=0.0)


def test_generated_credentials_are_valid_and_distinct() -> None:
    creds = {IceCredentials.generate() for _ in range(100)}
    assert len(creds) == 100
    assert all(len(c.ufrag) == 8 and len(c.pwd) == 24 for c in creds)


def test_200_transports_on_one_mux() -> None:
    m = IceLiteMux()
    creds = [IceCredentials.generate() for _ in range(200)]
    for i, c in enumerate(creds):
        m.add(f"t{i}", c.ufrag, c.pwd, now=0.0)
    addrs = [("127.0.0.1", 20000 + i) for i in range(200)]

    for i, (c, addr) in enumerate(zip(creds, addrs, strict=True)):
        decision = m.receive_datagram(binding(f"{c.ufrag}:x", c.pwd), addr, now=1.0)
        assert (decision.kind, decision.transport_id, decision.selected) == (
            Kind.STUN, f"t{i}", True
        )
    for i, addr in enumerate(addrs):
        assert m.receive_datagram(rtp(), addr, now=2.0) == Decision(Kind.RTP, f"t{i}")
        assert m.receive_datagram(dtls(), addr, now=2.0) == Decision(Kind.DTLS, f"t{i}")
    for i in range(0, 200, 2):
        m.remove(f"t{i}")
    assert len(m) == 100
    kinds = [m.receive_datagram(rtp(), addr, now=3.0).kind for addr in addrs]
    assert kinds == [Kind.DROP, Kind.RTP] * 100
    assert m.drops == {"unknown_tuple": 100}
