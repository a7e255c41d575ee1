"""Command line: ``sfu serve``, ``sfu config check``, ``sfu token create``.

argv → config → logging → uvloop.run(app.serve()). Secrets never come only from argv: the
token command reads the API secret from the config's key sources, ``SFU_API_SECRET``, or a file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sfu import config as config_mod
from sfu.config import DEV_API_KEY, DEV_API_SECRET, Config, ConfigError

DEV_WARNING = f"""
************************************************************************
*  RUNNING ON EMBEDDED DEVELOPMENT DEFAULTS — NOT FOR PRODUCTION        *
*  API key:    {DEV_API_KEY:<56}*
*  API secret: {DEV_API_SECRET:<56}*
*  Anyone who knows these can join any room. Pass --config FILE.        *
************************************************************************
"""


def _load(path: str | None) -> Config:
    return config_mod.load(path) if path else config_mod.defaults()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        cfg = _load(args.config)
        cfg.api_secrets()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    from sfu import log

    log.configure(cfg.logging.format, cfg.logging.level)
    if cfg.development:
        print(DEV_WARNING, file=sys.stderr, flush=True)
    import uvloop

    from sfu.app import App

    async def main() -> int:
        return await App(cfg).serve()

    return uvloop.run(main())


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.file)
    except ConfigError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(cfg.auth.hmac_keys)} API keys, "
          f"{len(cfg.auth.public_keys)} public keys)")
    return 0


def _api_credentials(args: argparse.Namespace) -> tuple[str, str]:
    if args.config:
        secrets = config_mod.load(args.config).api_secrets()
        key = args.api_key or next(iter(secrets))
        if key not in secrets:
            raise ConfigError("auth.hmac_keys", f"no API key {key!r} in {args.config}")
        return key, secrets[key]
    if args.api_secret_file:
        secret = Path(args.api_secret_file).read_text().strip()
    else:
        secret = os.environ.get("SFU_API_SECRET", "")
    if not secret:
        print("warning: no --config, --api-secret-file or SFU_API_SECRET: using the embedded "
              "development key (tokens only work against a daemon on embedded defaults)",
              file=sys.stderr)
        return DEV_API_KEY, DEV_API_SECRET
    return args.api_key or DEV_API_KEY, secret


def cmd_token_create(args: argparse.Namespace) -> int:
    from signaling.auth import VideoGrant, mint_token, parse_ttl

    try:
        ttl_s = parse_ttl(args.ttl)
        key, secret = _api_credentials(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    admin = args.admin
    grant = VideoGrant(
        room_join=not args.no_join, room=args.room or "",
        can_publish=not args.no_publish, can_subscribe=not args.no_subscribe,
        can_publish_data=not args.no_publish,
        room_admin=admin, room_create=admin, room_list=admin, room_record=admin,
        hidden=args.hidden,
    )
    if grant.room_join and not grant.room:
        print("error: --room is required unless --no-join", file=sys.stderr)
        return 2
    print(mint_token(key, secret, identity=args.identity, now=time.time(), ttl_s=ttl_s,
                     grant=grant, name=args.name or "", metadata=args.metadata or ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfu", description="WebRTC SFU media server daemon.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon",
                           description="Run the daemon. Without --config it runs on embedded "
                                       "development defaults (loudly announced).")
    serve.add_argument("--config", metavar="FILE", help="TOML config file (see config.example.toml)")
    serve.set_defaults(func=cmd_serve)

    cfg = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = cfg_sub.add_parser("check", help="validate a config file",
                               description="Validate FILE; exit 2 naming the offending key.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_config_check)

    tok = sub.add_parser("token", help="access tokens", description="Access token tools.")
    tok_sub = tok.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = tok_sub.add_parser(
        "create", help="print a signed join token",
        description="Print a JWT. The API secret comes from --config, --api-secret-file or "
                    "SFU_API_SECRET (never from argv); without any, the development key.")
    create.add_argument("--room", help="room name (required unless --no-join)")
    create.add_argument("--identity", required=True)
    create.add_argument("--name")
    create.add_argument("--metadata")
    create.add_argument("--ttl", default="6h", help="lifetime, e.g. 90s, 30m, 6h, 2d (default 6h)")
    create.add_argument("--admin", action="store_true",
                        help="grant roomAdmin, roomCreate, roomList, roomRecord")
    create.add_argument("--no-join", action="store_true", help="no roomJoin (control plane)")
    create.add_argument("--no-publish", action="store_true")
    create.add_argument("--no-subscribe", action="store_true")
    create.add_argument("--hidden", action="store_true")
    create.add_argument("--config", metavar="FILE", help="take the API key/secret from FILE")
    create.add_argument("--api-key", help="API key (the token's iss)")
    create.add_argument("--api-secret-file", metavar="FILE")
    create.set_defaults(func=cmd_token_create)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return p


DELEGATED = {
    # subcommands with their own argument parsers: sfu bench …, sfu turn …
    "bench": ("bench.cli", "load tests: sfu bench forward|floor …"),
    "turn": ("turn.cli", "run the TURN relay standalone"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        module = importlib.import_module(DELEGATED[argv[0]][0])
        rc: int = module.main(argv[1:])
        return rc
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
