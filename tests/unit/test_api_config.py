"""The ``[api]`` configuration section and the default join page address."""

from __future__ import annotations

import pytest

from sfu import config
from sfu.app import own_http_url
from sfu.config import ConfigError

KEYS = '[[auth.hmac_keys]]\nkey = "k"\nsecret_env = "SFU_API_SECRET"\n'


def test_defaults() -> None:
    api = config.loads(KEYS).api
    assert (api.rate_limit_per_s, api.rate_limit_burst, api.max_request_bytes) == \
        (20.0, 40, 4 * 1024 * 1024)
    assert api.cors_origins == [] and api.join_base_url == ""


@pytest.mark.parametrize("origins", [
    ["https://crm.example.com"], ["http://127.0.0.1:3000", "https://[::1]:8443"], ["*"],
    ["https://Portal.Example.com"]])
def test_cors_origins_accepted(origins: list[str]) -> None:
    text = f"[api]\ncors_origins = {origins!r}\n".replace("'", '"') + KEYS
    assert config.loads(text).api.cors_origins == origins


@pytest.mark.parametrize("origin", [
    "crm.example.com", "https://crm.example.com/", "https://crm.example.com/app",
    "ftp://crm.example.com", "https://", "https://crm.example.com:99999",
    "https://user@crm.example.com", " https://crm.example.com", "https://a.com?x=1"])
def test_cors_origins_refused(origin: str) -> None:
    with pytest.raises(ConfigError, match=r"^api\.cors_origins\[0\]: must be"):
        config.loads(f'[api]\ncors_origins = ["{origin}"]\n' + KEYS)


@pytest.mark.parametrize(("url", "ok"), [
    ("https://meet.example.com", True), ("https://meet.example.com/app/", True),
    ("http://10.0.0.5:7880", True), ("meet.example.com", False),
    ("https://meet.example.com/?x=1", False), ("https://meet.example.com/#top", False),
    ("javascript:alert(1)", False)])
def test_join_base_url(url: str, ok: bool) -> None:
    text = f'[api]\njoin_base_url = "{url}"\n' + KEYS
    if ok:
        assert config.loads(text).api.join_base_url == url
    else:
        with pytest.raises(ConfigError, match=r"^api\.join_base_url: must be"):
            config.loads(text)


@pytest.mark.parametrize(("text", "message"), [
    ("[api]\nrate_limit_per_s = 0\n", "api.rate_limit_per_s: must be 0.1..100000"),
    ("[api]\nrate_limit_burst = 0\n", "api.rate_limit_burst: must be 1..1000000"),
    ("[api]\nmax_request_bytes = 100\n", "api.max_request_bytes: must be 1024..16777216"),
    ("[api]\ncors = []\n", "api.cors: unknown key"),
])
def test_bounds(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.loads(text + KEYS)
    assert str(e.value) == message


@pytest.mark.parametrize(("host", "port", "url"), [
    ("127.0.0.1", 7880, "http://127.0.0.1:7880"), ("0.0.0.0", 80, "http://127.0.0.1:80"),
    ("::", 7880, "http://[::1]:7880"), ("2001:db8::7", 7880, "http://[2001:db8::7]:7880"),
    ("10.1.2.3", 8080, "http://10.1.2.3:8080")])
def test_own_http_url(host: str, port: int, url: str) -> None:
    cfg = config.loads(f'[server]\nhttp_host = "{host}"\nhttp_port = {port}\n' + KEYS)
    assert own_http_url(cfg) == url
