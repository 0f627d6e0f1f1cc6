"""The HTML report in a real browser: headless Chromium, offline, at phone and desktop widths.

Unit tests prove the markup; only a browser proves the page lays out, the inline SVG paints, and nothing is fetched.
Each run gets a fresh profile and a resolver that maps every host to NOTFOUND, and Chromium's net log is read back
to tell the page's own requests (top-frame site ``file://``) from the browser's background chatter, which
--disable-background-networking does not fully silence. A canary page with a deliberate external image and console
error proves both detectors work on the installed Chromium before the report is judged by them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from nwp500d.analysis.report import CATEGORY_COLOURS, CAUSE_COLOURS, render_html
from tests.unit.test_report import HOSTILE_ATTR, HOSTILE_SCRIPT, realistic_analysis

CHROMIUM = Path("/usr/bin/chromium")
PHONE = (412, 2400)
DESKTOP = (1280, 2000)
SHOTS = ("phone", "desktop")
KEEP_SHOTS_IN = "NWP500D_KEEP_SCREENSHOTS"  # a directory to copy the screenshots to, for a human to look at
RUN_TIMEOUT = 90.0
SESSION_COLOUR = (0x8D, 0xA2, 0xB8)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package chromium: apt-get install chromium)"
)


@dataclass
class Run:
    stdout: str
    stderr: str
    seconds: float
    net_log: dict[str, Any] | None


def chromium(page: Path, work: Path, *args: str) -> Run:
    """One headless Chromium run in its own process group and fresh profile, killed whole if it overruns."""
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=work))
    net_log = profile.with_name(profile.name + "-net.json")
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}", '--host-resolver-rules=MAP * ~NOTFOUND', "--enable-logging=stderr",
            "--v=0", f"--log-net-log={net_log}", *args, page.as_uri()]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "HOME": str(profile)})
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the renderer and GPU helpers go too
        proc.communicate()
        pytest.fail(f"chromium did not finish within {RUN_TIMEOUT:.0f}s: {' '.join(args)}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {stderr[-2000:]}"
    log = _read_net_log(net_log)
    net_log.unlink(missing_ok=True)
    return Run(stdout, stderr, seconds, log)


def _read_net_log(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").rstrip()
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit lacks its closing brackets
        data = json.loads(text.rstrip(",") + "]}")
    return data


def page_requests(log: dict[str, Any] | None) -> list[str]:
    """URLs requested on behalf of a file:// page (not by the browser itself), from Chromium's net log."""
    assert log is not None, "chromium wrote no net log"
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    urls = []
    for entry in log["events"]:
        params = entry.get("params") or {}
        if names.get(entry["type"]) == "URL_REQUEST_START_JOB" and "file://" in str(
                params.get("network_isolation_key", "")):
            urls.append(str(params.get("url")))
    return urls


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and unfiltered rows of an 8-bit non-interlaced PNG; CRCs checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    assert len(raw) == height * (stride + 1)
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + (((line[i - bpp] if i >= bpp else 0) + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colours(rows: list[bytes], bpp: int) -> dict[tuple[int, int, int], int]:
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            key = (row[i], row[i + 1], row[i + 2])
            counts[key] = counts.get(key, 0) + 1
    return counts


def rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 255, value & 255


class Dom(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.classes: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.classes += (dict(attrs).get("class") or "").split()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("chromium")
    analysis, connections = realistic_analysis()
    started = time.monotonic()
    page = work / "report.html"
    page.write_text(render_html(analysis, connections=connections, title="NaviLink drops — home",
                                generated_at="2026-11-22T09:00:00Z"), encoding="utf-8")
    render_seconds = time.monotonic() - started
    shots = {name: work / f"{name}.png" for name in SHOTS}
    runs = {
        "phone": chromium(page, work, f"--screenshot={shots['phone']}", f"--window-size={PHONE[0]},{PHONE[1]}"),
        "desktop": chromium(page, work, f"--screenshot={shots['desktop']}",
                            f"--window-size={DESKTOP[0]},{DESKTOP[1]}"),
        "dom": chromium(page, work, "--dump-dom", f"--window-size={PHONE[0]},{PHONE[1]}"),
    }
    keep = os.environ.get(KEEP_SHOTS_IN)
    for name, shot in shots.items():
        if keep and shot.exists():
            shutil.copyfile(shot, Path(keep) / f"nwp500d-report-{name}.png")
    yield {"analysis": analysis, "page": page, "shots": shots, "runs": runs, "render_seconds": render_seconds}
    shutil.rmtree(work, ignore_errors=True)


def test_detectors_catch_a_bad_page(tmp_path: Path) -> None:
    """Canary: without it, an empty net log or a renamed console prefix would make the real checks pass vacuously."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("canary")</script>'
                   '<img src="http://canary.invalid/x.png"></body></html>', encoding="utf-8")
    run = chromium(bad, tmp_path, "--dump-dom")
    assert any("canary" in line for line in console_lines(run.stderr)), run.stderr[-2000:]
    assert "http://canary.invalid/x.png" in page_requests(run.net_log)


def test_screenshots_are_real_renderings(rendered: dict[str, Any]) -> None:
    expected = {"phone": PHONE, "desktop": DESKTOP}
    for name, shot in rendered["shots"].items():
        assert shot.exists() and shot.stat().st_size > 20_000, f"{name}: missing or tiny screenshot"
        width, height, bpp, rows = decode_png(shot.read_bytes())
        assert (width, height) == expected[name]
        counts = colours(rows, bpp)
        white = counts.get((255, 255, 255), 0) / (width * height)
        assert len(counts) > 200, f"{name}: only {len(counts)} colours"
        assert white < 0.9, f"{name}: {white:.0%} white"
        # Solid fills of the SVG and the verdict card, exact: the charts painted, with the page's own palette.
        assert counts.get(SESSION_COLOUR, 0) > 200, f"{name}: no session bars"
        assert counts.get(rgb(CAUSE_COLOURS["network"]), 0) > 200, f"{name}: no verdict colour / network drops"
        painted = [cat for cat, colour in CATEGORY_COLOURS.items() if counts.get(rgb(colour), 0) >= 10]
        assert len(painted) >= 6, f"{name}: host-event lanes painted: {painted}"
        histogram = [cause for cause in ("rate_limit", "client_config", "system_event", "server_timeout")
                     if counts.get(rgb(CAUSE_COLOURS[cause]), 0) > 300]
        assert len(histogram) == 4, f"{name}: histogram fills: {histogram}"


def test_dom_holds_the_report_and_the_hostile_strings_stay_text(rendered: dict[str, Any]) -> None:
    dom = rendered["runs"]["dom"].stdout
    parsed = Dom(dom)
    assert '<svg class="chart timeline"' in dom and '<svg class="chart histogram"' in dom
    assert "Most likely cause" in dom and "Network" in dom and "wifi_disconnect" in dom
    assert parsed.classes.count("drop-row") == len(rendered["analysis"].drops)
    assert parsed.classes.count("drop") == len(rendered["analysis"].drops)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert HOSTILE_SCRIPT.replace("<", "&lt;").replace(">", "&gt;") in dom
    assert 'onerror=alert(2)&gt;' in dom and HOSTILE_ATTR not in dom


def test_no_console_output_and_no_network(rendered: dict[str, Any]) -> None:
    for name, run in rendered["runs"].items():
        assert console_lines(run.stderr) == [], name
        assert page_requests(run.net_log) == [], name
    text = rendered["page"].read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text


def test_it_renders_quickly(rendered: dict[str, Any]) -> None:
    assert rendered["render_seconds"] < 1.0
    for name, run in rendered["runs"].items():
        assert run.seconds < 30, f"{name}: {run.seconds:.1f}s"
