"""turn.stun, turn.channeldata, turn.framing: RFC 5769 vectors, packets captured from coturn's
turnutils_uclient and aioice round-tripped byte for byte, exact errors on malformed input, and
fuzzing (nothing but ValueError ever escapes a parser)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turn import stun
from turn.channeldata import encode_channel_data, is_channel_data, parse_channel_data
from turn.framing import StreamFramer
from turn.stun import Message, long_term_key

# --- RFC 5769 test vectors ----------------------------------------------------------------------

RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"  # short-term: the key is the password itself
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74"
    "002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf")
RFC5769_RESPONSE_V4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96")
RFC5769_RESPONSE_V6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf1"
    "1784c97c8292c275bfe3ed4180280004c8fb0b4c")
RFC5769_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383"
    "e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c394653547679"
    "363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e071"
    "2e85c9a28ca89666")

# --- captured from real clients against this server (user alice, password pw, realm
# example.org); each carries MESSAGE-INTEGRITY and FINGERPRINT --------------------------------

UCLIENT_ALLOCATE = bytes.fromhex(
    "000300802112a442c1a1a03af6bd728aac3568e30019000411000000000d0004000003090018000180000000"
    "001700040100000000060005616c6963650000000015001f3337613362362e38393038633534393762636535"
    "3034393163393131373764000014000b6578616d706c652e6f726700000800146dcee6daf9d1e4e6583309fc"
    "f3041b62c159f90f80280004e01decc3")
UCLIENT_CHANNEL_BIND = bytes.fromhex(
    "000900742112a442cc89e57c98aec3a37caff7e8000c000459d20000001200080001a6f55e12a44300060005"
    "616c6963650000000015001f3337613362392e336539323864313266653461663734326631366437366634"
    "000014000b6578616d706c652e6f72670000080014463c9b309e6bcc63f11a2631d55e445c3f747e6c8028"
    "0004a60f1f25")
UCLIENT_CREATE_PERMISSION = bytes.fromhex(
    "0008006c2112a442fa4600c42a77ad526e354481001200080001a6f45e12a44300060005616c6963650000"
    "000015001f3337623961312e383566653635623062656232356539363165636235633736000014000b6578"
    "616d706c652e6f726700000800148fa919bbfdedb1db5c738ac057162a4727a96890802800046c9a6263")
UCLIENT_SEND = bytes.fromhex(
    "001600282112a442d4a39fc33324c7e625e93c2d0013001000000000070707070810000000000000001200"
    "080001a6f55e12a44380280004abd608c6")
UCLIENT_CHANNEL_DATA_TCP = bytes.fromhex("602300100000000007070707640b000000000000")
AIOICE_ALLOCATE = bytes.fromhex(
    "000300702112a442f17c198ba5ef20789c3aad1b000d000400000258001900041100000000060005616c69"
    "63650000000015001f3338303236392e663133323036313030613164623333643762326137346662000014"
    "000b6578616d706c652e6f726700000800147076c03a210b25673a4e8491c90f2a38b234373e8028000421"
    "562cdb")
AIOICE_CHANNEL_DATA_TCP = bytes.fromhex("4000000568656c6c6f000000")

ALICE = long_term_key("alice", "example.org", "pw")
CAPTURED = [UCLIENT_ALLOCATE, UCLIENT_CHANNEL_BIND, UCLIENT_CREATE_PERMISSION, AIOICE_ALLOCATE]


def test_rfc5769_request_parses_and_verifies() -> None:
    m = Message.parse(RFC5769_REQUEST)
    assert (m.method, m.cls) == (stun.BINDING, stun.REQUEST)
    assert m.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert m.get(stun.SOFTWARE) == "STUN test client"
    assert m.get(stun.USERNAME) == "evtj:h6vY"
    assert m.fingerprint
    assert m.check_integrity(RFC5769_PASSWORD)
    assert not m.check_integrity(b"wrong")
    # PRIORITY (0x0024) is comprehension-required and not ours; ICE-CONTROLLED is optional.
    assert m.unknown_required == (0x0024,)
    assert m.get(0x0024) == bytes.fromhex("6e0001ff")
    assert m.get(0x8029) == bytes.fromhex("932ff9b151263b36")


@pytest.mark.parametrize(("vector", "addr"), [
    (RFC5769_RESPONSE_V4, ("192.0.2.1", 32853)),
    (RFC5769_RESPONSE_V6, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
])
def test_rfc5769_responses_decode_xor_mapped_address(vector: bytes, addr: tuple[str, int]) -> None:
    m = Message.parse(vector)
    assert (m.method, m.cls) == (stun.BINDING, stun.SUCCESS)
    assert m.get(stun.XOR_MAPPED_ADDRESS) == addr
    assert m.get(stun.SOFTWARE) == "test vector"
    assert m.check_integrity(RFC5769_PASSWORD) and m.fingerprint


def test_rfc5769_long_term_credentials() -> None:
    m = Message.parse(RFC5769_LONG_TERM)
    assert m.get(stun.USERNAME) == "マトリックス"
    assert m.get(stun.REALM) == "example.org"
    assert m.get(stun.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    # The password after SASLprep is "TheMatrIX".
    assert m.check_integrity(long_term_key("マトリックス", "example.org", "TheMatrIX"))
    assert not m.check_integrity(long_term_key("マトリックス", "example.org", "thematrix"))


def test_any_flipped_byte_breaks_integrity_or_parsing() -> None:
    key = long_term_key("マトリックス", "example.org", "TheMatrIX")
    for i in range(len(RFC5769_LONG_TERM) - 20):
        bad = bytearray(RFC5769_LONG_TERM)
        bad[i] ^= 0x01
        try:
            m = Message.parse(bytes(bad))
        except ValueError:
            continue
        assert not m.check_integrity(key), i


@pytest.mark.parametrize("raw", CAPTURED, ids=["uclient-allocate", "uclient-channel-bind",
                                                "uclient-create-permission", "aioice-allocate"])
def test_captured_requests_round_trip_byte_for_byte(raw: bytes) -> None:
    m = Message.parse(raw)
    assert m.check_integrity(ALICE) and m.fingerprint
    assert m.get(stun.USERNAME) == "alice" and m.get(stun.REALM) == "example.org"
    assert m.encode(ALICE, fingerprint=True) == raw


def test_captured_uclient_allocate_fields() -> None:
    m = Message.parse(UCLIENT_ALLOCATE)
    assert (m.method, m.cls) == (stun.ALLOCATE, stun.REQUEST)
    assert m.get(stun.REQUESTED_TRANSPORT) == 17
    assert m.get(stun.LIFETIME) == 777
    assert m.get(stun.EVEN_PORT) is True
    assert m.get(stun.REQUESTED_ADDRESS_FAMILY) == stun.FAMILY_IPV4
    assert m.unknown_required == ()


def test_captured_channel_bind_and_permission_peers() -> None:
    bind = Message.parse(UCLIENT_CHANNEL_BIND)
    assert bind.get(stun.CHANNEL_NUMBER) == 0x59D2  # an RFC 5766 number (> 0x4FFF)
    assert bind.get(stun.XOR_PEER_ADDRESS) == ("127.0.0.1", 34791)
    perm = Message.parse(UCLIENT_CREATE_PERMISSION)
    assert perm.get_all(stun.XOR_PEER_ADDRESS) == [("127.0.0.1", 34790)]


def test_captured_send_indication_round_trips_without_integrity() -> None:
    m = Message.parse(UCLIENT_SEND)
    assert (m.method, m.cls) == (stun.SEND, stun.INDICATION)
    assert m.integrity is None and m.fingerprint
    assert m.get(stun.XOR_PEER_ADDRESS) == ("127.0.0.1", 34791)
    assert len(m.get(stun.DATA_ATTR)) == 16
    assert m.encode(fingerprint=True) == UCLIENT_SEND


@pytest.mark.parametrize("frame", [UCLIENT_CHANNEL_DATA_TCP, AIOICE_CHANNEL_DATA_TCP])
def test_captured_channel_data_over_tcp_is_padded(frame: bytes) -> None:
    channel, payload = parse_channel_data(frame)
    assert len(frame) % 4 == 0
    assert encode_channel_data(channel, payload, pad=True) == frame
    assert encode_channel_data(channel, payload, pad=False) == frame[:4 + len(payload)]


def test_unknown_attributes_are_kept_and_round_trip() -> None:
    m = Message(stun.BINDING, stun.REQUEST, b"t" * 12)
    m.add(0x7FFE, b"\x01\x02\x03").add(0xC001, b"opt").add(stun.SOFTWARE, "x")
    raw = m.encode(fingerprint=True)
    back = Message.parse(raw)
    assert back.attributes == [(0x7FFE, b"\x01\x02\x03"), (0xC001, b"opt"), (stun.SOFTWARE, "x")]
    assert back.unknown_required == (0x7FFE,)
    assert back.encode(fingerprint=True) == raw


def test_every_table_attribute_round_trips() -> None:
    values = {
        stun.MAPPED_ADDRESS: ("192.0.2.7", 1),
        stun.USERNAME: "1700000000:alice",
        stun.ERROR_CODE: (438, "Stale Nonce"),
        stun.UNKNOWN_ATTRIBUTES: (0x0024, 0x7FFF),
        stun.CHANNEL_NUMBER: 0x4ABC,
        stun.LIFETIME: 3600,
        stun.XOR_PEER_ADDRESS: ("2001:db8::5", 65535),
        stun.DATA_ATTR: b"\x00\xffdata",
        stun.REALM: "example.org",
        stun.NONCE: "abc.def",
        stun.XOR_RELAYED_ADDRESS: ("203.0.113.9", 49152),
        stun.REQUESTED_ADDRESS_FAMILY: stun.FAMILY_IPV6,
        stun.EVEN_PORT: True,
        stun.REQUESTED_TRANSPORT: 17,
        stun.DONT_FRAGMENT: None,
        stun.XOR_MAPPED_ADDRESS: ("::ffff:c000:201", 3478),
        stun.RESERVATION_TOKEN: b"12345678",
        stun.ADDITIONAL_ADDRESS_FAMILY: stun.FAMILY_IPV6,
        stun.ADDRESS_ERROR_CODE: (stun.FAMILY_IPV6, 440, "Address Family not Supported"),
        stun.SOFTWARE: "pysfu",
    }
    m = Message(stun.ALLOCATE, stun.SUCCESS, bytes(range(12)), list(values.items()))
    raw = m.encode(b"k" * 16, fingerprint=True)
    back = Message.parse(raw)
    assert dict(back.attributes) == values
    assert back.check_integrity(b"k" * 16)
    assert back.encode(b"k" * 16, fingerprint=True) == raw


def test_attributes_after_message_integrity_are_ignored() -> None:
    """Someone on the path appends a LIFETIME 0 (or a peer): the HMAC still verifies, and the
    appended attribute must not count (RFC 8489 §14.5)."""
    m = Message(stun.REFRESH, stun.REQUEST, b"r" * 12).add(stun.LIFETIME, 600)
    raw = bytearray(m.encode(ALICE))
    raw += stun._attr(stun.LIFETIME, (0).to_bytes(4, "big"))
    raw += stun._attr(0x001C, bytes(32))  # MESSAGE-INTEGRITY-SHA256, comprehension-required
    raw[2:4] = (len(raw) - 20).to_bytes(2, "big")
    back = Message.parse(bytes(raw))
    assert back.check_integrity(ALICE)
    assert back.get_all(stun.LIFETIME) == [600]
    assert back.unknown_required == ()


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "STUN message truncated: 0 bytes, header needs 20"),
    (UCLIENT_ALLOCATE[:19], "STUN message truncated: 19 bytes, header needs 20"),
    (b"\x80" + UCLIENT_ALLOCATE[1:], "not a STUN message: first two bits are not zero"),
    (UCLIENT_ALLOCATE[:4] + b"\x21\x12\xa4\x43" + UCLIENT_ALLOCATE[8:],
     "not a STUN message: wrong magic cookie"),
    (UCLIENT_ALLOCATE[:-4], "STUN message length 128 does not match 124 bytes of attributes"),
    (bytes.fromhex("00010002") + UCLIENT_ALLOCATE[4:20] + b"\x00\x00",
     "STUN message length 2 is not a multiple of 4"),
    (bytes.fromhex("00010004") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("00060008"),
     "USERNAME at offset 20 overruns the message"),
    (bytes.fromhex("00010008") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("000d000300000000"),
     "LIFETIME must be 4 bytes, got 3"),
    (bytes.fromhex("00010008") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("0012000400030000"),
     "XOR-PEER-ADDRESS has unknown address family 3"),
    (bytes.fromhex("0001000c") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("0012000800010000000000"),
     "STUN message length 12 does not match 11 bytes of attributes"),
    (bytes.fromhex("00010008") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("00090004000007ff"),
     "ERROR-CODE 7255 out of range"),
    (bytes.fromhex("00010008") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("00060004ff000000"),
     "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    (UCLIENT_ALLOCATE[:-1] + bytes([UCLIENT_ALLOCATE[-1] ^ 1]), "FINGERPRINT does not match"),
    (bytes.fromhex("00010010") + UCLIENT_ALLOCATE[4:20] + bytes.fromhex("8028000400000000")
     + bytes.fromhex("0006000061626364"), "attribute after FINGERPRINT"),
])
def test_malformed_messages_raise_exact_value_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        Message.parse(raw)
    assert str(exc.value) == message


def test_every_truncation_of_a_real_message_is_a_value_error() -> None:
    for n in range(len(UCLIENT_ALLOCATE)):
        with pytest.raises(ValueError):
            Message.parse(UCLIENT_ALLOCATE[:n])


def test_method_and_class_bits() -> None:
    assert stun.message_type(stun.ALLOCATE, stun.ERROR) == 0x0113
    assert stun.message_type(stun.DATA, stun.INDICATION) == 0x0017
    assert stun.message_type(stun.CHANNEL_BIND, stun.SUCCESS) == 0x0109
    assert stun.split_type(0x0113) == (stun.ALLOCATE, stun.ERROR)
    for method in range(0x1000):
        for klass in (stun.REQUEST, stun.INDICATION, stun.SUCCESS, stun.ERROR):
            assert stun.split_type(stun.message_type(method, klass)) == (method, klass)


# --- ChannelData and stream framing ------------------------------------------------------------


def test_channel_data_parse_and_errors() -> None:
    assert parse_channel_data(b"\x40\x00\x00\x03abc") == (0x4000, b"abc")
    assert parse_channel_data(b"\x40\x00\x00\x03abc\x00") == (0x4000, b"abc")  # padding ignored
    assert parse_channel_data(b"\x4f\xff\x00\x00") == (0x4FFF, b"")
    with pytest.raises(ValueError, match="ChannelData truncated: 3 bytes"):
        parse_channel_data(b"\x40\x00\x00")
    with pytest.raises(ValueError, match="ChannelData length 4 exceeds the 3 bytes received"):
        parse_channel_data(b"\x40\x00\x00\x04abc")
    with pytest.raises(ValueError, match="0x8000 is not a ChannelData channel"):
        parse_channel_data(b"\x80\x00\x00\x00")
    assert is_channel_data(b"\x7f") and not is_channel_data(b"\x00") and not is_channel_data(b"")
    assert encode_channel_data(0x4001, b"abcde", pad=True) == b"\x40\x01\x00\x05abcde\x00\x00\x00"


def test_framer_splits_a_stream_fed_byte_by_byte() -> None:
    stream = UCLIENT_ALLOCATE + UCLIENT_CHANNEL_DATA_TCP + AIOICE_CHANNEL_DATA_TCP + UCLIENT_SEND
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i:i + 1])
    assert frames == [UCLIENT_ALLOCATE, UCLIENT_CHANNEL_DATA_TCP, AIOICE_CHANNEL_DATA_TCP,
                      UCLIENT_SEND]
    assert framer.buffered == 0
    assert StreamFramer().feed(stream) == frames


def test_framer_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unframeable byte 0x80"):
        StreamFramer().feed(b"\x80\x00\x00\x00")
    with pytest.raises(ValueError, match="not a multiple of 4"):
        StreamFramer().feed(b"\x00\x01\x00\x03")


# --- fuzzing: the parsers raise ValueError and nothing else -----------------------------------


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_random_bytes(data: bytes) -> None:
    for raw in (data, UCLIENT_ALLOCATE[:20] + data, data[:2] + len(data[4:]).to_bytes(2, "big")
                + b"\x21\x12\xa4\x42" + data[4:]):
        try:
            Message.parse(raw)
        except ValueError:
            pass
        try:
            parse_channel_data(raw)
        except ValueError:
            pass


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(CAPTURED + [UCLIENT_SEND, RFC5769_REQUEST, RFC5769_RESPONSE_V6]),
       st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_fuzz_parse_mutated_messages(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(base)
    for pos, value in flips:
        if pos < len(raw):
            raw[pos] = value
    for candidate in (bytes(raw), bytes(raw[:len(raw) - cut])):
        try:
            m = Message.parse(candidate)
        except ValueError:
            continue
        m.check_integrity(ALICE)
        try:  # whatever parsed must serialize again, or fail cleanly
            Message.parse(m.encode(ALICE, fingerprint=True))
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_fuzz_framer(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert len(frame) >= 4
    except ValueError:
        pass
