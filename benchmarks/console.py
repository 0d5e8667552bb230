"""``framechain bench console``: what the browser console's live grid costs the
chain. Eight cameras on the clip, each run to its end as fast as the detector
takes the frames, with the API on: once with no browser, once with four headless
Chromium browsers (Debian's, driven by Playwright) each showing the console's
live grid of every camera. Runs alternate; the throughput is compared by its
median, as a ratio (``benchmarks.api.compare``).

The browsers run in a process of their own at the lowest CPU priority, standing
for browsers on other machines: what this shows is what serving them costs the
box. Needs the test extras (``playwright``) and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.api import CAMERAS, compare

BROWSERS = 4
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def run_browsers(port: int, browsers: int) -> None:
    """Until killed: ``browsers`` Chromium browsers showing the live grid."""
    from playwright.sync_api import Error, sync_playwright

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        # as far from the chain as browsers on other machines can be put on
        # this one: nice 19 does not hold (Playwright starts each browser in a
        # session of its own, an autogroup the kernel weighs as an equal of
        # the chain's, and Chromium run as root renices its own processes up
        # to -8), so the wrapper also puts each browser in a CPU cgroup of the
        # least weight before Chromium starts, where one can be made
        group = _least_cpu_group()
        wrapper = Path(folder) / "chromium"
        wrapper.write_text(
            "#!/bin/sh\n"
            + (f"echo $$ > {group}/cgroup.procs 2>/dev/null\n" if group else "")
            + "echo 19 > /proc/self/autogroup 2>/dev/null\n"
            + f'exec nice -n 19 {binary} "$@"\n'
        )
        wrapper.chmod(0o755)
        pages = []
        for _ in range(browsers):
            browser = playwright.chromium.launch(
                executable_path=str(wrapper), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            pages.append(page)
        print("ready", flush=True)  # the chain starts now, see benchmarks.api
        for page in pages:
            deadline = time.monotonic() + 120
            while True:  # until the API is up
                try:
                    page.goto(f"http://127.0.0.1:{port}/#/live", timeout=10_000)
                    page.wait_for_selector(".tile img", timeout=10_000)
                    break
                except Error:
                    if time.monotonic() > deadline:
                        raise SystemExit("the console did not open in 120 s") from None
                    time.sleep(0.5)
        # blocked only now: the browsers, started above, keep the default
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})  # then closed with care
    if group is not None:
        with contextlib.suppress(OSError):  # empty once the browsers have ended
            group.rmdir()


def _least_cpu_group() -> Path | None:
    """A CPU cgroup of the least weight for the browsers (cgroup v2 or v1), or
    None where this process may not make one (not root, no cpu controller)."""
    for parent, knob, least in (
        (Path("/sys/fs/cgroup"), "cpu.weight", "1"),
        (Path("/sys/fs/cgroup/cpu"), "cpu.shares", "2"),
    ):
        if not (parent / knob).exists() and not (parent / "cgroup.procs").exists():
            continue  # not a cgroup file system with that controller
        group = parent / "framechain-bench-browsers"
        try:
            group.mkdir(exist_ok=True)
            (group / knob).write_text(least)
        except OSError:
            continue
        return group
    return None


def suite_console(args: Any, model: Path, clip: Path) -> str:
    lines = [
        f"## framechain bench console ({CAMERAS} cameras, {clip.name}, {model.name} "
        f"at {args.imgsz}, {args.repeats} alternating runs each)",
        "",
    ]
    if not args.repeats:
        return "\n".join([*lines, "(not measured: --repeats 0)"])
    lines += compare(
        args,
        model,
        clip,
        ["benchmarks.console", "--browsers", str(BROWSERS)],
        f"{BROWSERS} headless Chromium browsers, each showing the console's live "
        f"grid of {CAMERAS} cameras",
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--browsers"]:  # --browsers N CAMERA... PORT
        run_browsers(int(sys.argv[-1]), int(sys.argv[2]))
