"""`dnnspec export --web`: the site trains the digits MLP in headless Chromium with
onnxruntime-web and matches `dnnspec train` epoch for epoch.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: fd 3
in, fd 4 out, NUL-terminated JSON), which needs no port and no client library. The test
skips when Chromium or npm (which installs onnxruntime-web into web/) is missing; CI
installs both (.ci/run)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dnnspec.api import export, train
from dnnspec.errors import DiagnosticError
from dnnspec.tools import web

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_SECONDS = 240
"""How long the page may take to load onnxruntime-web and train two epochs."""


def _runtime_or_skip() -> None:
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    ready = (web.WEB_DIR / "node_modules" / "onnxruntime-web").is_dir()
    if not ready and shutil.which("npm") is None:
        pytest.skip("npm is not installed to install onnxruntime-web (apt-get install npm)")


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[str]:
    """The folder over HTTP on 127.0.0.1 at a free port, for the test's duration."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Browser:
    """Headless Chromium and its DevTools pipe."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # above 4, so moving them to the fds 3 (commands in) and 4 (answers out) where
        # Chromium reads and writes cannot overwrite one with the other
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        assert CHROMIUM is not None
        args = [
            CHROMIUM,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args,
            close_fds=False,  # keeps the inheritable 3 and 4 (every other fd closes on exec)
            preexec_fn=lambda: [os.dup2(fd, n) for n, fd in ((3, ends[0]), (4, ends[1]))] and None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._id = 0

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._next()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)

    def open(self, url: str) -> str:
        """A new tab at `url`; returns its DevTools session."""
        target = self.send("Target.createTarget", url=url)["targetId"]
        session: str = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the tab (a promise's, awaited)."""
        answer = self.send(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_text(self, session: str, element: str, seconds: float, holding: str = "") -> str:
        """The text of element `element` once it has some (that contains `holding`)."""
        expression = f"(document.getElementById('{element}') || {{}}).textContent || ''"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            text = self.evaluate(session, expression)
            if text and holding in text:
                return str(text)
            time.sleep(0.5)
        status = self.evaluate(session, "document.getElementById('status').textContent")
        raise AssertionError(f"no #{element} after {seconds} s; the page says: {status}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    _runtime_or_skip()
    chromium = Browser(tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def _two_epochs(tmp_path: Path) -> Path:
    text = (ROOT / "specs" / "digits_mlp.dnn").read_text()
    assert "epochs 30" in text
    spec = tmp_path / "digits_mlp.dnn"
    spec.write_text(text.replace("epochs 30", "epochs 2"))
    return spec


MODEL_BASE64 = """(async () => {
  const bytes = new Uint8Array(await window.trainedModel().arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
})()"""


@pytest.mark.slow
def test_site_trains_the_digits_mlp_in_chromium_with_dnnspec_trains_losses(
    tmp_path: Path, browser: Browser
) -> None:
    spec = _two_epochs(tmp_path)
    site = tmp_path / "site"
    export(spec, site, web=True)
    train(spec, tmp_path / "run", plot=False, runtime="onnxruntime")
    with serving(site) as url:
        tab = browser.open(url + "?autostart=1")
        summary = json.loads(browser.wait_text(tab, "result", PAGE_SECONDS))
        assert "error" not in summary, summary
        notes = browser.evaluate(tab, "document.getElementById('notes').textContent")
        downloaded = base64.b64decode(browser.evaluate(tab, MODEL_BASE64))
    assert summary["epochs"] == 2 and summary["steps"] == 2 * 23
    reference = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    np.testing.assert_allclose(summary["loss"], [r["loss"] for r in reference], atol=1e-4)
    np.testing.assert_allclose(summary["val_loss"], [r["val_loss"] for r in reference], atol=1e-4)
    last = reference[-1]["val_accuracy"]
    assert summary["metrics"]["val_accuracy"] == pytest.approx(last, abs=1e-6)
    # http.server sends no cross-origin isolation headers: one thread, and the page says so
    assert "training on one thread" in notes
    trained = onnx.load_from_string(downloaded)
    onnx.checker.check_model(trained, full_check=True)
    run_model = onnx.load(str(tmp_path / "run" / "model.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in run_model.graph.initializer}
    for init in trained.graph.initializer:
        np.testing.assert_allclose(numpy_helper.to_array(init), weights[init.name], atol=1e-5)


@pytest.mark.slow
def test_site_continues_a_paused_run_as_dnnspec_train_resume_would(
    tmp_path: Path, browser: Browser
) -> None:
    spec = _two_epochs(tmp_path)
    train(spec, tmp_path / "whole", plot=False, runtime="onnxruntime")
    train(spec, tmp_path / "paused", plot=False, runtime="onnxruntime", stop_after=1)
    export(tmp_path / "paused", tmp_path / "site", web=True)
    with serving(tmp_path / "site") as url:
        tab = browser.open(url + "?autostart=1")
        summary = json.loads(browser.wait_text(tab, "result", PAGE_SECONDS))
    assert "error" not in summary, summary
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").open()]
    assert summary["epochs"] == 2 and summary["steps"] == 2 * 23
    np.testing.assert_allclose(summary["loss"], [r["loss"] for r in whole], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits_two_heads", "padded_digits"])
def test_site_feeds_named_targets_and_several_inputs_by_name(
    tmp_path: Path, browser: Browser, name: str
) -> None:
    spec = tmp_path / f"{name}.dnn"
    spec.write_text(re.sub(r"epochs \d+", "epochs 1", (ROOT / "specs" / f"{name}.dnn").read_text()))
    export(spec, tmp_path / "site", web=True)
    train(spec, tmp_path / "run", plot=False, runtime="onnxruntime")
    with serving(tmp_path / "site") as url:
        tab = browser.open(url + "?autostart=1")
        summary = json.loads(browser.wait_text(tab, "result", PAGE_SECONDS))
    assert "error" not in summary, summary
    (reference,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert summary["loss"] == pytest.approx([reference["loss"]], abs=1e-4)
    assert summary["val_loss"] == pytest.approx([reference["val_loss"]], abs=1e-4)


@pytest.mark.slow
def test_paused_training_stands_still_and_resumes_to_the_same_losses(
    tmp_path: Path, browser: Browser
) -> None:
    spec = _two_epochs(tmp_path)
    export(spec, tmp_path / "site", web=True)
    train(spec, tmp_path / "run", plot=False, runtime="onnxruntime")
    status = "document.getElementById('status').textContent"
    with serving(tmp_path / "site") as url:
        tab = browser.open(url + "?autostart=1")
        browser.wait_text(tab, "pause", PAGE_SECONDS)  # the button exists from the start
        deadline = time.monotonic() + PAGE_SECONDS
        while browser.evaluate(tab, "document.getElementById('pause').disabled"):
            assert time.monotonic() < deadline, browser.evaluate(tab, status)
            time.sleep(0.05)
        browser.evaluate(tab, "document.getElementById('pause').click()")
        paused = browser.wait_text(tab, "status", 30, "paused at step")
        time.sleep(1.5)
        assert browser.evaluate(tab, status) == paused
        assert not browser.evaluate(tab, "document.getElementById('result').textContent")
        browser.evaluate(tab, "document.getElementById('pause').click()")
        summary = json.loads(browser.wait_text(tab, "result", PAGE_SECONDS))
    reference = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    np.testing.assert_allclose(summary["loss"], [r["loss"] for r in reference], atol=1e-4)


@pytest.mark.slow
def test_asked_for_webgpu_a_browser_without_it_trains_with_webassembly_and_says_so(
    tmp_path: Path, browser: Browser
) -> None:
    # headless Chromium with --disable-gpu offers navigator.gpu but no adapter
    spec = _two_epochs(tmp_path)
    export(spec, tmp_path / "site", web=True)
    train(spec, tmp_path / "run", plot=False, runtime="onnxruntime")
    with serving(tmp_path / "site") as url:
        tab = browser.open(url + "?autostart=1&backend=webgpu")
        summary = json.loads(browser.wait_text(tab, "result", PAGE_SECONDS))
        notes = browser.evaluate(tab, "document.getElementById('notes').textContent")
    assert "WebGPU is not available in this browser: training with WebAssembly" in notes
    reference = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    np.testing.assert_allclose(summary["loss"], [r["loss"] for r in reference], atol=1e-4)


def test_site_opened_from_a_file_says_how_to_serve_it(tmp_path: Path, browser: Browser) -> None:
    site = tmp_path / "site"
    export(_two_epochs(tmp_path), site, web=True)
    tab = browser.open((site / "index.html").as_uri())
    assert "must be served over HTTP" in browser.wait_text(tab, "status", 30, "http.server")


def test_web_export_without_npm_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "package-lock.json").write_text("{}")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DiagnosticError) as caught:
        web.runtime_dir(tmp_path)
    assert "npm is not installed" in str(caught.value)
    assert "make web" in caught.value.render()


def test_web_export_refuses_fp16(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError, match="--web trains float32 steps"):
        export(ROOT / "specs" / "digits_mlp.dnn", tmp_path / "site", fp16=True, web=True)
