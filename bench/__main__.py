"""``python -m bench forward|floor …``: the same as ``sfu bench …``."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
