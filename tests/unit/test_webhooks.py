"""The webhook core: Standard Webhooks signatures (checked with the spec's own PyPI
library), the retry schedule, and which outbox heads go out now."""

from __future__ import annotations

import base64
import json
import random
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sfu.webhooks import (
    Delivery,
    RetryPolicy,
    SecretError,
    headers,
    outcome,
    parse_secret,
    plan,
    sign,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def delivery(id: int, endpoint: str = "crm", room: str = "r1", *, attempts: int = 0,
             created_at: float = 0.0, next_attempt_at: float = 0.0) -> Delivery:
    return Delivery(id=id, endpoint=endpoint, room=room, event_id=f"EV_{id}",
                    event_type="participant_joined", body=b"{}", attempts=attempts,
                    created_at=created_at, next_attempt_at=next_attempt_at)


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    body = json.dumps({"id": "EV_1", "type": "room_started", "room": {"name": "ü"}},
                      ensure_ascii=False).encode()
    stamp = int(time.time())
    hdrs = headers(parse_secret(SECRET), "EV_1", stamp, body)
    assert hdrs["webhook-id"] == "EV_1" and hdrs["webhook-timestamp"] == str(stamp)
    assert Webhook(SECRET).verify(body, hdrs)["room"]["name"] == "ü"
    # each attempt signs its own timestamp; a stale one is refused by receivers
    old = headers(parse_secret(SECRET), "EV_1", stamp - 3600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, old)
    tampered = dict(hdrs, **{"webhook-signature": sign(parse_secret(SECRET), "EV_2", stamp,
                                                       body)})
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, tampered)


@pytest.mark.parametrize(("text", "message"), [
    ("whsec_not base64!", "base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "at least 16"),
])
def test_bad_secrets_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        parse_secret(text)


def test_an_unprefixed_or_unpadded_secret_is_accepted() -> None:
    raw = base64.b64encode(bytes(range(20))).decode()
    assert parse_secret(raw) == parse_secret("whsec_" + raw.rstrip("=")) == bytes(range(20))


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_s=1.0, max_s=60.0, max_age_s=86400.0)
    rng = random.Random(3)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (40, 60.0)):
        waits = [policy.delay_s(attempts, rng) for _ in range(200)]
        assert all(0.5 * base <= w < base for w in waits), attempts
        assert max(waits) - min(waits) > 0.3 * base  # jittered, not fixed


def test_outcome_retries_until_max_age_then_fails() -> None:
    policy = RetryPolicy(initial_s=10.0, max_s=100.0, max_age_s=1000.0)
    rng = random.Random(1)
    assert outcome(delivery(1), True, 5.0, policy, rng).status == "delivered"
    retry = outcome(delivery(1, attempts=2, created_at=0.0), False, 100.0, policy, rng)
    assert retry.status == "retry" and retry.next_attempt_at is not None
    assert 100.0 + 20.0 <= retry.next_attempt_at < 100.0 + 40.0
    assert outcome(delivery(1, attempts=9, created_at=0.0), False, 990.0, policy,
                   rng).status == "failed"


def test_plan_sends_each_rooms_head_once_and_holds_a_room_behind_its_retry() -> None:
    heads = [delivery(1, room="r1"), delivery(2, room="r2", next_attempt_at=50.0),
             delivery(3, room="r3"), delivery(4, endpoint="billing", room="r1")]
    due, wake = plan(heads, in_flight=[("crm", "r3")], now=10.0, max_in_flight=16, busy={})
    assert [d.id for d in due] == [1, 4]  # r2 waits for its retry, r3 is in flight
    assert wake == 50.0
    due, wake = plan(heads, in_flight=[], now=60.0, max_in_flight=2, busy={"crm": 1})
    assert [d.id for d in due] == [1, 4]  # crm has room for one more
    assert wake is None
