import re
from pathlib import Path

import pytest

from sfu import config
from sfu.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"


def test_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFU_API_SECRET", "s" * 40)
    cfg = config.load(EXAMPLE)
    assert cfg.rtc.udp_port == 7882
    assert cfg.api_secrets() == {"APIkey1": "s" * 40}
    # the example states the defaults: loading it gives the dataclass defaults
    assert cfg.server == config.ServerConfig()
    assert cfg.signaling == config.SignalingConfig()
    assert cfg.rtc == config.RtcConfig()


def _sections(text: str) -> dict[str, str]:
    """Section header (as dotted key prefix) -> the text up to the next header."""
    out: dict[str, str] = {}
    pattern = re.compile(r"^#?\s*\[(\[?)([a-z_.]+)\]\]?\s*$", re.M)
    matches = list(pattern.finditer(text))
    for i, m in enumerate(matches):
        name = m.group(2) + ("[]" if m.group(1) else "")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[name] = out.get(name, "") + text[m.end():end]
    return out


@pytest.mark.parametrize("key", config.leaf_keys())
def test_example_documents_every_key(key: str) -> None:
    sections = _sections(EXAMPLE.read_text())
    section, _, leaf = key.rpartition(".")
    assert section in sections, f"no [{section}] section in config.example.toml"
    body = sections[section]
    assert re.search(rf"^#?\s*{re.escape(leaf)}\s*=", body, re.M), f"{key} not documented"
    # each key is preceded by a comment
    lines = body.splitlines()
    idx = next(i for i, line in enumerate(lines) if re.match(rf"^#?\s*{re.escape(leaf)}\s*=", line))
    assert idx > 0 and lines[idx - 1].lstrip().startswith("#") or "#" in lines[idx], key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[rtc]\nudp_prot = 1\n", "rtc.udp_prot: unknown key"),
        ("[nonsense]\n", "nonsense: unknown key"),
        ("[rtc]\nudp_port = 80\n", "rtc.udp_port: must be 1024..65535"),
        ("[rtc]\nudp_port = 70000\n", "rtc.udp_port: must be 1024..65535"),
        ("[rtc]\nudp_port = \"7882\"\n", "rtc.udp_port: must be an integer, got str"),
        ("[rtc]\nudp_port = true\n", "rtc.udp_port: must be an integer, got bool"),
        ("[room]\nauto_create = 1\n", "room.auto_create: must be a boolean, got int"),
        ("[server]\ndrain_timeout_s = -1\n", "server.drain_timeout_s: must be 0..3600"),
        ("[server]\nhttp_host = \"localhost\"\n", "server.http_host: must be an explicit IP"),
        ("[logging]\nformat = \"xml\"\n", "logging.format: must be one of console, json"),
        ("rtc = 5\n", "rtc: must be a table"),
        ("[[auth.hmac_keys]]\nkey = \"k\"\nsecret_env = \"A\"\nsecret_file = \"B\"\n",
         "auth.hmac_keys[0]: set exactly one of secret_env or secret_file"),
        ("[[auth.hmac_keys]]\nkey = \"k\"\nsecrt = \"x\"\n", "auth.hmac_keys[0].secrt: unknown key"),
        ("[auth]\nhmac_keys = 3\n", "auth.hmac_keys: must be an array"),
        ("", "auth: configure at least one of auth.hmac_keys or auth.public_keys"),
        ("[rtc\n", "invalid TOML"),
    ],
)
def test_rejects_with_dotted_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    assert str(info.value).startswith(message), str(info.value)


def test_float_accepts_integer_literal() -> None:
    cfg = config.loads("[server]\ndrain_timeout_s = 5\n[[auth.hmac_keys]]\nkey='k'\nsecret_env='E'\n")
    assert cfg.server.drain_timeout_s == 5.0


def test_secret_from_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("f" * 40 + "\n")
    cfg = config.loads(f"[[auth.hmac_keys]]\nkey='a'\nsecret_file='{f}'\n"
                       "[[auth.hmac_keys]]\nkey='b'\nsecret_env='B_SECRET'\n")
    assert cfg.api_secrets({"B_SECRET": "b" * 40}) == {"a": "f" * 40, "b": "b" * 40}
    with pytest.raises(ConfigError, match=r"auth.hmac_keys\[1\].secret_env: environment variable B_SECRET is not set"):
        cfg.api_secrets({})
    with pytest.raises(ConfigError, match=r"auth.hmac_keys\[1\]: secret must be at least 32"):
        cfg.api_secrets({"B_SECRET": "short"})


def test_defaults_are_development() -> None:
    cfg = config.defaults()
    assert cfg.development
    assert cfg.api_secrets({}) == {config.DEV_API_KEY: config.DEV_API_SECRET}
