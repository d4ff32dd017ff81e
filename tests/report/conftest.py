"""A real headless Chromium for the report page's tests: installed if missing (Debian's package, as
tests/sshd.py installs the SSH server), skipped with the reason only where it cannot be installed."""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 120


def ensure_chromium() -> tuple[str | None, str | None]:
    """(path of the browser, None), or (None, why it cannot be had)."""
    found = next((shutil.which(name) for name in NAMES if shutil.which(name)), None)
    if found:
        return found, None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "Chromium is not installed and this user cannot install it (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0 and command[1] == "install":
            return None, f"apt-get could not install chromium: {done.stderr.strip()[-300:]}"
    found = shutil.which("chromium")
    return (found, None) if found else (None, "the chromium package installed no chromium command")


class Chromium:
    """`chromium --headless` on a local file: the DOM after its scripts ran, or a screenshot."""

    def __init__(self, path: str, profile: Path):
        self.path = path
        self.profile = profile

    def _run(self, page: Path, width: int, height: int, *action: str) -> str:
        command = [self.path, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                   "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
                   f"--window-size={width},{height}", *action, page.resolve().as_uri()]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def dump_dom(self, page: Path, width: int = 1280, height: int = 900) -> str:
        return self._run(page, width, height, "--dump-dom")

    def screenshot(self, page: Path, out: Path, width: int = 1280, height: int = 900) -> Path:
        self._run(page, width, height, f"--screenshot={out}")
        return out

    def probe(self, page: Path, script: str, width: int = 1280, height: int = 900) -> dict:
        """Run `script` (JavaScript whose last statement is an expression) in a copy of `page` after it
        is laid out; its value, as JSON, comes back through the DOM that --dump-dom prints."""
        copy = page.with_name(page.stem + ".probe.html")
        probe = ("<script>document.body.insertAdjacentHTML('beforeend', '<pre id=\"edgeslim-probe\"></pre>');"
                 "document.getElementById('edgeslim-probe').textContent = JSON.stringify((() => {"
                 f"{script}" "})());</script>")
        text = page.read_text()
        copy.write_text(text.replace("</body>", probe + "</body>"))
        dom = self.dump_dom(copy, width, height)
        found = re.findall(r'<pre id="edgeslim-probe">(.*?)</pre>', dom, re.S)  # the script's own text first
        assert found and found[-1], dom[-2000:]
        return json.loads(html.unescape(found[-1]))


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    path, reason = ensure_chromium()
    if reason:
        pytest.skip(reason)
    return Chromium(path, tmp_path_factory.mktemp("chromium-profile"))
