"""``--processes K``: the clients of a run spread over K bench worker processes.

Each worker is ``python -c "import bench.worker as w; w.worker_main()"``: it reads one JSON
line on stdin (the options, its index, the server's URL and API key and secret — never on
the command line), pins itself to its CPU, builds the :class:`~bench.scenario.ClientGroup`
of every K-th client of the plan (:func:`bench.scenario.plan`, the same in every process),
says ``{"ready": <clients>}``, and then answers commands, one JSON line each way: ``connect``, ``wait_media``,
``snapshot`` (with ``recording``), ``finish``, ``close``. A command that fails is answered
``{"error": …}``. Only the replies go to the real stdout; anything else a library prints
goes to stderr.

:class:`WorkerGroup` is the coordinator's side: the same methods as a ``ClientGroup``, so
:mod:`bench.forward` drives one process or several the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from typing import IO, Any

from .daemon import child_env
from .report import pin_to_cpu
from .scenario import SWITCH_TIMEOUT_S, ClientGroup, ForwardOptions, plan
from .transport import BenchError

__all__ = ["WorkerGroup", "worker_main"]

_WORKER = "import bench.worker as w; w.worker_main()"
#: A reply line can hold every delay sample of a worker's subscribers.
_LINE_LIMIT = 1 << 28
#: For a worker to encode its media loop and build its clients.
READY_TIMEOUT_S = 120.0


class WorkerGroup:
    """One worker process, driven over its stdin/stdout. Create with :meth:`start`."""

    def __init__(self, proc: asyncio.subprocess.Process, index: int,
                 opts: ForwardOptions) -> None:
        self.proc = proc
        self.index = index
        self.opts = opts
        clients = len(plan(opts)) // opts.processes + 1
        #: generous bounds on each command, so that a stuck worker ends the run
        self._timeouts_s = {
            "connect": opts.connect_timeout_s * (2 + clients // max(1, opts.concurrency)) + 30,
            "wait_media": opts.media_timeout_s + 60,
            "snapshot": 30.0,
            "finish": opts.switches * (SWITCH_TIMEOUT_S + 0.5) + 60,
            "close": 60.0,
        }

    @classmethod
    async def start(cls, opts: ForwardOptions, index: int, *, url: str, key: str,
                    secret: str, seed: int, cpu: int | None) -> WorkerGroup:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=child_env(), limit=_LINE_LIMIT)
        worker = cls(proc, index, opts)
        config = {"opts": {**dataclasses.asdict(opts), "show_progress": False},
                  "index": index, "url": url, "key": key, "secret": secret, "seed": seed,
                  "cpu": cpu}
        await worker._send(config)
        await worker._reply("start", READY_TIMEOUT_S)
        return worker

    async def _send(self, message: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            raise BenchError(f"bench worker {self.index}: no stdin")
        try:
            stdin.write((json.dumps(message) + "\n").encode())
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise BenchError(f"bench worker {self.index} exited "
                             f"({self.proc.returncode})") from None

    async def _call(self, command: str, **args: Any) -> dict[str, Any]:
        await self._send({"command": command, **args})
        return await self._reply(command, self._timeouts_s[command])

    async def _reply(self, command: str, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise BenchError(f"bench worker {self.index}: no answer to {command} in "
                             f"{timeout_s:g} s") from None
        if not line:
            raise BenchError(f"bench worker {self.index} exited during {command}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"bench worker {self.index}: {command}: {reply['error']}")
        return reply

    async def connect(self) -> dict[str, Any]:
        return await self._call("connect")

    async def wait_media(self) -> dict[str, Any]:
        return await self._call("wait_media")

    async def snapshot(self, recording: bool | None = None) -> dict[str, Any]:
        return await self._call("snapshot", recording=recording)

    async def finish(self) -> dict[str, Any]:
        return await self._call("finish")

    async def close(self) -> None:
        try:
            if self.proc.returncode is None:
                await self._call("close")
            await asyncio.wait_for(self.proc.wait(), 10)
        except (BenchError, TimeoutError, OSError):
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


def worker_main() -> None:
    """Entry point of a worker process (see the module docstring)."""
    import uvloop

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints must not corrupt the replies
    config = json.loads(sys.stdin.readline())
    pin_to_cpu(config.get("cpu"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator ends the run
    uvloop.run(_serve(config, replies))


async def _serve(config: dict[str, Any], replies: IO[str]) -> None:
    opts = ForwardOptions(**config["opts"])
    index = config["index"]
    specs = [s for s in plan(opts) if s.index % opts.processes == index]
    group = ClientGroup(opts, specs, url=config["url"], key=config["key"],
                        secret=config["secret"], seed=config["seed"])
    replies.write(json.dumps({"ready": len(specs)}) + "\n")
    replies.flush()
    handlers = {"connect": group.connect, "wait_media": group.wait_media,
                "finish": group.finish}
    closed = False
    try:
        while not closed:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return  # the coordinator is gone
            message = json.loads(line)
            command = message.get("command")
            reply: dict[str, Any] = {}
            try:
                if command == "snapshot":
                    reply = await group.snapshot(message.get("recording"))
                elif command == "close":
                    closed = True
                    await group.close()
                elif command in handlers:
                    reply = await handlers[command]()
                else:
                    reply = {"error": f"unknown command {command!r}"}
            except (BenchError, OSError) as exc:
                reply = {"error": str(exc)}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    finally:
        if not closed:
            await group.close()
