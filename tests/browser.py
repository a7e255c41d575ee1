"""Headless Debian Chromium driven by Playwright (never a browser download)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def require_chromium() -> None:
    if shutil.which("chromium") is None:
        pytest.fail("Debian chromium is not installed (bash .ci/run installs it)")


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A fresh persistent context (Playwright rejects --user-data-dir in args)."""
    require_chromium()
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="sfu-chromium-")
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield ctx
        finally:
            await ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


async def client_page(ctx: Any, http_base: str) -> Any:
    """A page on the daemon's origin (a secure context) with sfu-client.js loaded."""
    page = await ctx.new_page()
    await page.goto(f"{http_base}/healthz")
    await page.add_script_tag(url=f"{http_base}/static/sfu-client.js")
    return page
