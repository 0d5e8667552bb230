"""The browser console against a real chain of two looped cameras, in Debian's
headless Chromium: its files served safely without the token, sign-in trading
the token for a cookie (a wrong one keeps the sign-in page), and the live grid
whose tiles move and show each camera's health, one camera large on a click;
the event list filling and growing from the event stream, its filters held in
the address, an event opening its snapshot and playing its clip to the end; the
counts charts showing exactly what /api/counts answers, and as CSV; a line drawn
with the mouse in the rule editor, saved, kept with the config file's comments,
and counting on the next frames."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from browser import DESKTOP, PHONE, chromium, keep_screenshot, new_page
from conftest import (
    ASSETS,
    CROWD_LINE,
    REPO,
    chain_env,
    end_run,
    free_port,
    spawn_run,
    wait_until,
)

TOKEN = "console-test-token-0123456789"
COMMENT = "# the console's test chain: two looped clips played as live"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class Chain:
    def __init__(self, port: int, tmp: Path, process: Any) -> None:
        self.port, self.tmp, self.process = port, tmp, process
        self.base = f"http://127.0.0.1:{port}"

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            headers_in = {k.lower(): v for k, v in response.getheaders()}
            return response.status, response.read(), headers_in
        finally:
            connection.close()

    def post_json(self, path: str, body: str) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(
                "POST", path, body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            headers_in = {k.lower(): v for k, v in response.getheaders()}
            return response.status, response.read(), headers_in
        finally:
            connection.close()

    def metric(self, name: str) -> float:
        status, body, _ = self.get("/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body.decode(), re.M)
        assert found, name
        return float(found.group(1))


def _config(tmp: Path, port: int) -> Path:
    def looped(clip: str) -> dict[str, Any]:
        return {"kind": "file", "path": str(ASSETS / clip), "live": True, "loop": True}

    config = {
        "models_dir": str(ASSETS),
        "cameras": {
            "east": {
                "source": looped("crowd.mp4"),
                "rules": [CROWD_LINE],
                "snapshots": {"directory": str(tmp / "snapshots")},
                "clips": {"directory": str(tmp / "clips"), "pre_s": 2, "post_s": 2},
            },
            "west": {
                "source": looped("traffic.mp4"),
                "rules": [
                    {
                        "kind": "zone",
                        "name": "road",
                        "polygon": [[0, 0], [640, 0], [640, 360], [0, 360]],
                        "classes": ["car"],
                    }
                ],
            },
        },
        "detector": {"model": "yolo11n.onnx", "imgsz": 320},
        "sinks": [{"kind": "sqlite", "path": str(tmp / "events.db")}],
        "http": {
            "listen": f"127.0.0.1:{port}",
            "api": True,
            "token": "${CONSOLE_TOKEN}",
            "preview": {"width": 480, "fps": 4},
        },
    }
    path = tmp / "console.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    text = text.replace("  east:\n", "  east:  # the crowd: people walking\n")
    path.write_text(f"{COMMENT}\n{text}")
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    process = spawn_run(_config(tmp, port), {**chain_env(), "CONSOLE_TOKEN": TOKEN})
    running = Chain(port, tmp, process)

    def both_online() -> bool:
        try:
            status, body, _ = running.get(
                "/api/cameras", {"Authorization": f"Bearer {TOKEN}"}
            )
        except OSError:
            return False
        if status != 200:
            return False
        cameras = json.loads(body)
        # online, and tracked frames reported (the frame size comes with them)
        return all(c["state"] == "online" and c["width"] > 0 for c in cameras)

    try:
        wait_until(
            both_online, 120, "both cameras online", lambda: process.poll() is None
        )
        yield running
    finally:
        end_run(process)


def _sign_in(page: Any, chain: Chain, token: str = TOKEN) -> None:
    page.goto(chain.base + "/")
    page.fill("#token", token)
    page.click("form.sign-in button[type=submit]")


def _open_signed_in(page: Any, chain: Chain) -> None:
    """The console, signed in, its live grid on screen."""
    _sign_in(page, chain)
    page.wait_for_selector(".tile")


def _picture(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return image.astype(np.int16)


def test_vendored_files_are_the_published_ones() -> None:
    """What console/vendor holds is byte for byte what its README says was
    copied from the registry's package: no hand edit slips in unseen."""
    vendor = REPO / "stages" / "api" / "console" / "vendor"
    listed = re.findall(
        r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$",
        (vendor / "README.md").read_text(),
        re.M,
    )
    assert {name for name, _ in listed} == {
        p.name for p in vendor.iterdir() if p.name != "README.md"
    }
    for name, digest in listed:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name


def test_console_files_are_served_without_the_token_and_nothing_else(
    chain: Chain,
) -> None:
    status, body, headers = chain.get("/")
    assert status == 200 and b'src="console/js/main.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, _, headers = chain.get("/console/js/main.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    for forged in (
        "/console/../app.py",
        "/console/%2e%2e/app.py",
        "/console/js/../../app.py",
        "/console/%2e%2e/%2e%2e/pipeline/settings.py",
        "/console/nothing.js",
    ):
        status, body, _ = chain.get(forged)
        assert status in (401, 404), (forged, status)
        assert b"import" not in body
    # data still needs the token; a browser's own fetches are never offered Basic
    # (whose password box would cover the console's sign-in)
    status, _, headers = chain.get("/api/cameras")
    assert status == 401 and "Basic" in headers["www-authenticate"]
    status, _, headers = chain.get("/api/cameras", {"Sec-Fetch-Mode": "cors"})
    assert status == 401 and headers["www-authenticate"] == "Bearer"


def test_the_token_is_traded_for_a_cookie_that_opens_the_api(chain: Chain) -> None:
    status, body, _ = chain.get("/api/session")
    assert status == 200 and body == b'{"signed_in":false,"token_needed":true}'
    started = time.monotonic()
    status, body, headers = chain.post_json("/api/session", '{"token": "guess"}')
    assert status == 200 and b'"signed_in":false' in body
    assert "set-cookie" not in headers
    assert time.monotonic() - started >= 0.9  # guessing is slow
    status, body, headers = chain.post_json("/api/session", f'{{"token": "{TOKEN}"}}')
    assert status == 200 and b'"signed_in":true' in body
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    value = cookie.split(";")[0]
    assert TOKEN not in value
    status, body, _ = chain.get("/api/cameras", {"Cookie": value})
    assert status == 200
    cameras = {c["name"]: c for c in json.loads(body)}
    assert (cameras["east"]["width"], cameras["east"]["height"]) == (800, 450)
    status, _, _ = chain.get("/api/cameras", {"Cookie": value[:-4] + "0000"})
    assert status == 401
    status, body, _ = chain.get("/api/session", {"Cookie": value})
    assert body == b'{"signed_in":true,"token_needed":true}'


def test_a_wrong_or_stale_token_shows_the_sign_in_page(chain: Chain) -> None:
    with chromium() as browser:
        watched = new_page(browser)
        page = watched.page
        _sign_in(page, chain, "not-the-token")
        page.wait_for_selector(".refused:not(:empty)")
        assert page.is_visible("#token") and page.locator(".tile").count() == 0
        keep_screenshot(page, "sign-in-refused-1280x800")
        page.fill("#token", TOKEN)
        page.click("form.sign-in button[type=submit]")
        page.wait_for_selector(".tile")
        assert page.locator(".tile").count() == 2
        # a cookie from before the token changed: back to the sign-in page
        page.context.clear_cookies()
        page.context.add_cookies(
            [{"name": "framechain_session", "value": "0" * 64, "url": chain.base}]
        )
        page.reload()
        page.wait_for_selector("#token")
        _open_signed_in(page, chain)
        page.click("#sign-out")
        page.wait_for_selector("#token")
        page.reload()
        page.wait_for_selector("#token")  # signed out for good
        watched.assert_clean()


def test_live_tiles_move_and_show_health_and_one_camera_opens_large(
    chain: Chain,
) -> None:
    with chromium() as browser:
        for viewport, name in ((DESKTOP, "1280x800"), (PHONE, "390x844")):
            watched = new_page(browser, viewport)
            page = watched.page
            _sign_in(page, chain)
            for camera in ("east", "west"):
                page.wait_for_function(
                    "c => Number(document.querySelector("
                    "`.tile[data-camera=${c}] img`)?.dataset.pictures) >= 2",
                    arg=camera,
                )
            tiles = {
                c: page.locator(f".tile[data-camera={c}]") for c in ("east", "west")
            }
            before = {c: _picture(t.screenshot()) for c, t in tiles.items()}
            page.wait_for_timeout(2500)
            after = {c: _picture(t.screenshot()) for c, t in tiles.items()}
            for camera in tiles:
                change = float(np.abs(after[camera] - before[camera]).mean())
                assert change > 1.0, f"tile {camera} did not move ({change:.2f})"
                health = tiles[camera].locator(".health")
                assert health.get_attribute("data-state") == "online"
                assert re.search(r"online · [\d.]+ fps · age \d+", health.inner_text())
            keep_screenshot(page, f"live-grid-{name}")
            watched.assert_clean()
            page.context.close()

        watched = new_page(browser)
        page = watched.page
        _sign_in(page, chain)
        page.click(".tile[data-camera=east]")
        page.wait_for_function(
            "() => document.querySelector('img.large')?.naturalWidth === 480"
        )
        assert page.url.endswith("#/live/east")
        wait_until(
            lambda: chain.metric("framechain_api_live_streams") == 1, 10, "one stream"
        )
        keep_screenshot(page, "live-camera-1280x800")
        page.click("text=← All cameras")
        page.wait_for_selector(".tile")
        # leaving the large view closes its stream (its slot is free again)
        wait_until(
            lambda: chain.metric("framechain_api_live_streams") == 0, 10, "no stream"
        )
        watched.assert_clean()


def test_events_fill_grow_filter_and_open_with_snapshot_and_clip(
    chain: Chain,
) -> None:
    status, body, _ = chain.get(
        "/api/event-kinds", {"Authorization": f"Bearer {TOKEN}"}
    )
    kinds = {k["name"]: k for k in json.loads(body)}
    assert status == 200 and kinds["line_crossing"]["directions"] == ["in", "out"]
    # the event stream filters by class as the list does
    connection = http.client.HTTPConnection("127.0.0.1", chain.port, timeout=60)
    connection.request(
        "GET",
        "/api/events/stream?class=car",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    stream = connection.getresponse()
    classes = []
    while len(classes) < 3:  # east's person crossings come as often, filtered out
        line = stream.readline()
        if line.startswith(b"data: "):
            classes.append(json.loads(line[6:])["class_name"])
    assert classes == ["car"] * 3
    connection.close()
    with chromium() as browser:
        watched = new_page(browser)
        page = watched.page
        _open_signed_in(page, chain)
        page.click("nav a[data-view=events]")
        page.wait_for_selector(".events li")
        first = page.locator(".events li").count()
        # new events come from the event stream, at the top, while watched
        page.wait_for_selector(".events li.new", timeout=60_000)
        assert page.locator(".events li").count() > first
        keep_screenshot(page, "events-1280x800")

        page.select_option("select[name=kind]", "line_crossing")
        page.wait_for_url(re.compile(r"#/events\?kind=line_crossing$"))
        page.wait_for_selector(".events li")
        # the address holds the filter: a reload (a shared link) shows the same
        page.reload()
        page.wait_for_selector(".events li")
        assert page.input_value("select[name=kind]") == "line_crossing"
        whats = page.locator(".events li .what").all_inner_texts()
        assert whats
        assert all(w.startswith("line crossing · mid · person") for w in whats)

        # the oldest crossing shown: its clip's post-roll is long recorded
        page.locator(".events li a").last.click()
        page.wait_for_selector("dialog.event[open]")
        assert "#/events/east%3Amid%3Aline_crossing" in page.url
        page.wait_for_function(
            "() => document.querySelector('dialog .media img')?.naturalWidth > 0"
        )
        page.wait_for_selector("dialog video", timeout=30_000)
        duration = page.evaluate(
            """() => new Promise((done, failed) => {
                const video = document.querySelector("dialog video");
                video.addEventListener("ended", () => done(video.duration));
                video.addEventListener("error", () => failed("the clip did not play"));
                video.playbackRate = 4;
                video.play();
            })"""
        )
        # at least the post-roll (the pre-roll is short for an event at the start)
        assert duration >= 2.0
        keep_screenshot(page, "event-1280x800")
        page.keyboard.press("Escape")
        page.wait_for_url(re.compile(r"#/events\?kind=line_crossing$"))
        assert not page.is_visible("dialog.event")
        watched.assert_clean()


def _table(page: Any, rule: str) -> tuple[list[str], dict[int, list[int]]]:
    card = page.locator(f".rule-counts[data-rule={rule}]")
    names = card.locator("details thead th").all_text_contents()[1:]
    rows = {}
    for row in card.locator("details tbody tr").all():
        cells = row.locator("td").all_text_contents()
        rows[int(row.get_attribute("data-start"))] = [int(c) for c in cells]
    return names, rows


def test_counts_charts_show_what_the_api_counts_and_download_as_csv(
    chain: Chain,
) -> None:
    with chromium() as browser:
        watched = new_page(browser)
        page = watched.page
        _open_signed_in(page, chain)
        page.click("nav a[data-view=counts]")
        page.wait_for_selector(".rule-counts[data-rule=mid] .chart canvas")
        page.wait_for_selector(".rule-counts[data-rule=road] .chart canvas")
        query = page.locator(".cards").get_attribute("data-query")
        assert query and "since=" in query and "until=" in query
        names, shown = _table(page, "mid")
        assert names == ["in", "out"]
        time.sleep(2)  # an event of the pinned range still on its way is stored
        status, body, _ = chain.get("/" + query, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        expected: dict[int, list[int]] = {start: [0, 0] for start in shown}
        for row in json.loads(body)["counts"]:
            if row["camera"] == "east" and row["rule"] == "mid":
                expected[row["start"]][names.index(row["direction"])] += row["count"]
        assert shown == expected
        assert sum(map(sum, shown.values())) > 0
        road_names, road = _table(page, "road")
        assert road_names and sum(map(sum, road.values())) > 0
        keep_screenshot(page, "counts-1280x800")

        with page.expect_download() as download:
            page.click(".rule-counts[data-rule=mid] a.download")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "bucket_start,in,out"
        assert [list(map(int, line.split(",")[1:])) for line in lines[1:]] == [
            shown[start] for start in sorted(shown)
        ]

        page.select_option("select[name=bucket]", "hour")
        page.wait_for_url(re.compile(r"bucket=hour&range=24h"))
        page.wait_for_function(
            "() => document.querySelector('.cards')?.dataset.query?.includes('hour')"
        )
        _, hourly = _table(page, "mid")
        assert len(hourly) in (24, 25)  # the first hour begins before the range
        assert sum(map(sum, hourly.values())) > 0
        watched.assert_clean()


def test_every_page_fits_a_phone_and_works_from_the_keyboard(chain: Chain) -> None:
    with chromium() as browser:
        watched = new_page(browser, PHONE)
        page = watched.page
        page.goto(chain.base + "/")
        page.wait_for_selector("#token")
        # signed in, an event opened and closed, without the mouse
        page.keyboard.type(TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector(".tile")
        for view, ready in (
            ("live", ".tile img[data-pictures]"),
            ("events", ".events li"),
            ("counts", ".rule-counts .chart canvas"),
            ("rules", ".overlay g.rule"),
        ):
            page.goto(f"{chain.base}/#/{view}")
            page.wait_for_selector(ready)
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{view} is {overflow} px wider than a phone"
            keep_screenshot(page, f"{view}-390x844")

        page.goto(f"{chain.base}/#/live")
        page.wait_for_selector(".tile")
        page.locator("a.brand").focus()
        for _ in range(2):  # from the brand: Live, Events
            page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Events"
        page.keyboard.press("Enter")
        page.wait_for_selector(".events li a")
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.closest('.events')"):
                break
        else:
            raise AssertionError("no event is reached with Tab")
        page.keyboard.press("Enter")
        page.wait_for_selector("dialog.event[open]")
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.querySelector('dialog.event[open]')")
        watched.assert_clean()


def test_a_line_drawn_in_the_editor_is_saved_and_counts(chain: Chain) -> None:
    """Last in this module: it adds a rule to the shared chain's config."""
    config = chain.tmp / "console.yaml"
    with chromium() as browser:
        watched = new_page(browser)
        page = watched.page
        _open_signed_in(page, chain)
        page.click("nav a[data-view=rules]")
        page.wait_for_url(re.compile(r"#/rules/east$"))
        page.wait_for_selector(".overlay g.rule.line[data-rule=mid] .arrow")
        page.wait_for_function(
            "() => document.querySelector('.stage img')?.naturalWidth > 0"
        )
        box = page.locator(".overlay").bounding_box()
        assert box is not None

        def screen(x: float, y: float) -> tuple[float, float]:  # frame px → page
            return box["x"] + x * box["width"] / 800, box["y"] + y * box["height"] / 450

        page.click("text=Draw a line")
        # low in the picture: a new line counts people's feet (bottom_center)
        page.mouse.move(*screen(20, 400))
        page.mouse.down()
        page.mouse.move(*screen(400, 402), steps=5)
        page.mouse.move(*screen(780, 400), steps=5)
        page.mouse.up()
        page.wait_for_selector(".overlay g.rule.line[data-rule=line-1] .arrow")
        page.fill("#rule-name", "drawn")
        page.press("#rule-name", "Tab")
        # drag its end; the numbers follow
        end = page.locator(".overlay g[data-rule=drawn] circle.handle[data-point='1']")
        handle = end.bounding_box()
        assert handle is not None
        page.mouse.move(
            handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        )
        page.mouse.down()
        page.mouse.move(*screen(790, 410), steps=4)
        page.mouse.up()
        end_x = float(page.input_value("input[aria-label='drawn point 2 x']"))
        end_y = float(page.input_value("input[aria-label='drawn point 2 y']"))
        assert abs(end_x - 790) <= 3 and abs(end_y - 410) <= 3
        start_x = float(page.input_value("input[aria-label='drawn point 1 x']"))
        assert abs(start_x - 20) <= 3
        # a zone: its corners clicked, Enter closes it
        page.click("text=Draw a zone")
        for corner in ((450, 60), (780, 60), (780, 200)):
            page.mouse.click(*screen(*corner))
        page.keyboard.press("Enter")
        page.wait_for_selector(".overlay g.rule.zone[data-rule=zone-1] polygon")
        assert page.input_value("#rule-name") == "zone-1"
        keep_screenshot(page, "rules-drawn-1280x800")

        page.click("button.primary:text('Save')")
        page.wait_for_function(
            "() => document.querySelector('.save-status')?.textContent"
            ".startsWith('Saved')"
        )
        text = config.read_text()
        assert COMMENT in text and "# the crowd: people walking" in text
        assert "name: drawn" in text and "name: mid" in text
        assert "name: zone-1" in text
        # counting with the chain's next frames, shown beside the rule
        page.wait_for_function(
            "() => /(in|out) [1-9]/.test(document.querySelector("
            "'.rule-count[data-rule=drawn]')?.textContent || '')",
            timeout=120_000,
        )
        status, body, _ = chain.get(
            "/api/counts?bucket=day&camera=east&rule=drawn",
            {"Authorization": f"Bearer {TOKEN}"},
        )
        assert status == 200 and sum(r["count"] for r in json.loads(body)["counts"])
        keep_screenshot(page, "rules-counting-1280x800")
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(300)
        keep_screenshot(page, "rules-390x844")
        watched.assert_clean()
