"""engine.flow.parse_rate: the rate texts a task, `app.control.rate_limit` and the
`rate_limit` control command accept."""

import pytest

from engine.flow import parse_rate


@pytest.mark.parametrize("text, per_second, burst", [
    ("100/s", 100.0, 100.0), ("30/m", 0.5, 30.0), ("2/h", 2 / 3600, 2.0),
    (" 5 / m ", 5 / 60, 5.0), (10, 10.0, 10.0), (0.5, 0.5, 1.0),
    # a bare number as text is per second, as in Celery (Flower's API sends "10")
    ("10", 10.0, 10.0), ("0.5", 0.5, 1.0)])
def test_a_rate_is_per_second_with_a_burst_of_n(text, per_second, burst):
    assert parse_rate(text) == pytest.approx((per_second, burst))


@pytest.mark.parametrize("text", [None, "", 0, "0", "none"])
def test_no_limit(text):
    assert parse_rate(text) is None


@pytest.mark.parametrize("text", ["fast", "10/d", "/s", "-1", "0/s", "10/s/s", "1e3"])
def test_a_bad_rate_is_a_value_error_naming_it(text):
    with pytest.raises(ValueError, match=f"bad rate limit {text!r}"):
        parse_rate(text)
