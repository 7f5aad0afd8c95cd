"""The web demo in a real headless Chromium (Debian's, never a downloaded one): upload an
image and ask, upload a text file and see the error, draw images and watch the progress;
answers and images must be the Pipeline's own. A screenshot lands in the test's folder."""

from __future__ import annotations

import base64
import io
import os
import shutil
import threading

import httpx
import pytest
from PIL import Image

from modal_core_images.shapes import render_scene, scene_for_index

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
QUESTION = "what colour is the circle?"
PROMPT = "a green square"


def _chromium() -> str:
    """Path of the system's Chromium: $MODAL_CORE_CHROMIUM, else the first on PATH."""
    explicit = os.environ.get("MODAL_CORE_CHROMIUM")
    found = explicit or next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if not found:
        pytest.skip("no Chromium found (install it with scripts/ensure-chromium.sh or set MODAL_CORE_CHROMIUM)")
    return found


@pytest.fixture
def page(live_server):
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to run as root, as in containers and CI.
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(live_server.url)
            page.wait_for_selector("body[data-ready=true]", timeout=15_000)
            yield page
        finally:
            browser.close()


def _assistant_messages(page) -> list[str]:
    page.wait_for_function("() => [...document.querySelectorAll('#chat-log .message')].every(m => m.textContent !== '…')")
    return page.locator("#chat-log .message.assistant, #chat-log .message.error").all_inner_texts()


def test_upload_ask_and_draw_in_the_browser(live_server, page, tmp_path):
    pipeline = live_server.app.state.pipeline
    image_path = tmp_path / "scene.png"
    render_scene(scene_for_index(3, 0, "heldout", image_size=32)).save(image_path)
    (tmp_path / "notes.txt").write_text("not an image")
    assert page.locator("#uploads input[type=file]").evaluate_all("inputs => inputs.map(i => i.name)") == ["image"]

    page.set_input_files("#upload-image", str(image_path))
    assert page.locator("#uploads img").is_visible()  # a preview of the chosen image
    page.fill("#question", QUESTION)
    page.fill("#max-new-tokens", "10")
    page.click("#ask")
    answers = _assistant_messages(page)
    expected = pipeline.answer(QUESTION, image=image_path, max_new_tokens=10) or "(empty answer)"
    assert answers == [expected]

    page.set_input_files("#upload-image", str(tmp_path / "notes.txt"))
    page.fill("#question", QUESTION)
    page.click("#ask")
    answers = _assistant_messages(page)
    assert len(answers) == 2 and "notes.txt: not a recognised image format" in answers[1]

    # Record what the progress area shows while the request is in flight.
    page.evaluate("""() => {
        window.progressSeen = [];
        new MutationObserver(() => {
            if (!document.getElementById('progress').hidden) window.progressSeen.push(document.getElementById('progress-text').textContent);
        }).observe(document.getElementById('progress'), {attributes: true, subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#prompt", PROMPT)
    page.fill("#n", "4")
    page.fill("#cfg", "3")
    page.fill("#temperature", "1")
    page.fill("#seed", "5")
    page.click("#draw")
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length === 4 && document.getElementById('progress').hidden")
    assert page.evaluate("window.progressSeen.length") >= 1 and page.locator("#progress").is_hidden()
    sources = page.locator("#gallery img").evaluate_all("images => images.map(i => [i.src, i.naturalWidth])")
    expected_images = pipeline.generate_images(PROMPT, n=4, cfg=3.0, temperature=1.0, seed=5)
    for (source, width), image in zip(sources, expected_images, strict=True):
        assert width == 32
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as drawn:
            assert drawn.convert("RGB").tobytes() == image.tobytes()

    screenshot = tmp_path / "demo.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with Image.open(screenshot) as shot:
        assert shot.width >= 1280 and shot.height >= 600


def test_the_chat_shows_the_upload_and_the_draw_tab_has_the_janus_controls(live_server, page, tmp_path):
    pipeline = live_server.app.state.pipeline
    image_path = tmp_path / "scene.png"
    render_scene(scene_for_index(3, 0, "heldout", image_size=32)).save(image_path)
    page.set_input_files("#upload-image", str(image_path))
    page.fill("#question", QUESTION)
    page.fill("#max-new-tokens", "4")
    page.click("#ask")
    _assistant_messages(page)
    shown = page.locator("#chat-log .message.user img.attachment")
    assert shown.count() == 1 and shown.evaluate("image => image.naturalWidth") == 32

    # An emptied CFG box keeps the server's default (5), not cfg=0; top-k and top-p are sent.
    page.fill("#prompt", PROMPT)
    page.fill("#n", "2")
    page.fill("#cfg", "")
    page.fill("#temperature", "1")
    page.fill("#top-k", "5")
    page.fill("#top-p", "0.9")
    page.fill("#seed", "")
    page.click("#draw")
    page.wait_for_function("() => document.querySelectorAll('#gallery figure').length === 2 && document.getElementById('progress').hidden")
    captions = page.locator("#gallery figcaption").all_inner_texts()
    seed = int(captions[0].split()[1])
    assert captions == [f"seed {seed} · 1/2 download", f"seed {seed} · 2/2 download"]
    links = page.locator("#gallery figcaption a").evaluate_all("links => links.map(a => [a.download, a.href])")
    sources = page.locator("#gallery img").evaluate_all("images => images.map(i => i.src)")
    assert [download for download, _ in links] == [f"a-green-square-seed{seed}-1.png", f"a-green-square-seed{seed}-2.png"]
    assert [href for _, href in links] == sources
    expected = pipeline.generate_images(PROMPT, n=2, cfg=5.0, temperature=1.0, top_k=5, top_p=0.9, seed=seed)
    for source, image in zip(sources, expected, strict=True):
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as drawn:
            assert drawn.convert("RGB").tobytes() == image.tobytes()
    page.screenshot(path=str(tmp_path / "controls.png"), full_page=True)


def test_the_progress_text_follows_the_clients_own_request(live_server, page):
    """Two other requests hold the model (each call waits for its gate): the page says how
    many wait ahead of its own request, then that its own images are being drawn."""
    queue = live_server.app.state.queue
    draw = queue._runners["generate"]  # the worker's runner, wrapped so each call waits for the test
    gates = [threading.Event() for _ in range(3)]
    calls = iter(gates)

    def gated(jobs):
        next(calls).wait(timeout=60)
        return draw(jobs)

    def post(seed: int) -> threading.Thread:
        body = {"prompt": "a red circle", "n": 1, "seed": seed}
        thread = threading.Thread(target=httpx.post, args=(f"{live_server.url}/v1/generate",), kwargs={"json": body, "timeout": 60})
        thread.start()
        return thread

    def progress(words: str) -> None:
        page.wait_for_function(f"() => document.getElementById('progress-text').textContent.startsWith({words!r})", timeout=30_000)

    # One draw first: the first call of a process pays one-off costs (building the CPU
    # kernel, warming the cache) that, on a loaded machine, outlast the waits below.
    assert httpx.post(f"{live_server.url}/v1/generate", json={"prompt": "a red circle", "n": 1, "seed": 0}, timeout=120).status_code == 200
    queue._runners["generate"] = gated
    others = []
    try:
        others.append(post(1))
        page.wait_for_function("() => fetch('/v1/health').then(r => r.json()).then(h => h.running !== null)", timeout=30_000)
        others.append(post(2))  # another seed: it cannot join the running batch and waits
        page.fill("#prompt", PROMPT)
        page.fill("#n", "4")
        page.fill("#seed", "5")
        page.click("#draw")
        progress("waiting in queue: 1 request(s) ahead of yours")
        gates[0].set()
        progress("waiting in queue: 0 request(s) ahead of yours")
        gates[1].set()
        progress("drawing your 4 image(s)")
        gates[2].set()
        page.wait_for_function("() => document.querySelectorAll('#gallery img').length === 4 && document.getElementById('progress').hidden")
    finally:
        for gate in gates:
            gate.set()
        queue._runners["generate"] = draw
        for thread in others:
            thread.join(timeout=60)
