import pytest

from sfu.negotiation import SubscriberNegotiator


def test_one_offer_at_a_time_and_changes_merge() -> None:
    n = SubscriberNegotiator()
    assert n.want_offer()
    n.offered(1)
    # three changes while offer 1 is outstanding: none may go out now
    assert not n.want_offer()
    assert not n.want_offer()
    assert not n.want_offer()
    # the answer releases exactly one merged follow-up
    assert n.answered(1) is True
    assert n.want_offer()
    n.offered(2)
    assert n.answered(2) is False
    assert (n.offers, n.answers) == (2, 2)


def test_answer_must_match_outstanding_offer() -> None:
    n = SubscriberNegotiator()
    n.offered(1)
    with pytest.raises(ValueError, match="answer for offer version 2"):
        n.answered(2)
    with pytest.raises(RuntimeError):
        n.offered(2)
