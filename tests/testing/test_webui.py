"""The capture web UI in a real browser: Debian's chromium under Selenium (chromium-driver).

One headless browser serves the whole module.  Set MAILSUITE_SCREENSHOTS to a
directory to keep screenshots of the list and of a message (desktop and phone).
"""

from __future__ import annotations

import http.server
import os
import shutil
import smtplib
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailsuite.testing import MailServer

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The network is closed: without these, chromium hangs trying to reach its vendor's services.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900")
WAIT = 10.0


class Pixels(http.server.BaseHTTPRequestHandler):
    """A stand-in for a sender's tracking server: remembers every path asked for."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Pixels.seen.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
                         b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[MailServer]:
    with MailServer() as running:
        yield running


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mailsuite-ui-downloads-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are needed (Debian packages; .ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mailsuite-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def pixels() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pixels)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def page(server: MailServer, browser: Any) -> Any:
    """The UI freshly loaded on an empty server, desktop size."""
    server.purge()
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(f"http://{server.host}:{server.http_port}/")
    wait(browser, lambda d: d.find_element(By.ID, "live").text == "Live")
    wait(browser, lambda d: not d.find_element(By.ID, "list-empty").get_attribute("hidden"))
    return browser


def wait(driver: Any, condition: Any, timeout: float = WAIT) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def send(server: MailServer, subject: str, *, to: str = "bob@example.test", sender: str = "Alice <alice@sender.example>",
         text: str = "Hello Bob,\nthe plain text body.\n", html: str | None = None, attachment: tuple[str, bytes] | None = None) -> None:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 07 Dec 2026 10:00:00 +0000"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    with smtplib.SMTP(server.host, server.smtp_port) as client:
        client.send_message(message)


def subjects(driver: Any) -> list[str]:
    # Read in one script: the list is rebuilt on every change, so element handles go stale.
    return driver.execute_script("return [...document.querySelectorAll('#message-list .subject-line')].map(e => e.innerText)")


def listed(driver: Any, *expected: str) -> Any:
    """Wait until the list shows exactly these subjects (attachment counts aside), top to bottom."""
    return wait(driver, lambda d: [s.split(" · ")[0] for s in subjects(d)] == list(expected))


def open_message(driver: Any, subject: str) -> None:
    """Click the message in the list (again if the list was rebuilt under the click)."""
    def click(d: Any) -> bool:
        try:
            for link in d.find_elements(By.CSS_SELECTOR, "#message-list a"):
                if link.find_element(By.CSS_SELECTOR, ".subject-line").text.startswith(subject):
                    link.click()
                    return True
        except StaleElementReferenceException:
            pass
        return False

    wait(driver, click)
    wait(driver, lambda d: d.find_element(By.ID, "message-subject").text == subject)


def screenshot(driver: Any, name: str) -> None:
    folder = os.environ.get("MAILSUITE_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        time.sleep(0.3)  # let the iframe paint
        driver.save_screenshot(os.path.join(folder, name))


def phone(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})


def horizontal_overflow(driver: Any) -> int:
    return int(driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth"))


# -- the tests -------------------------------------------------------------------------

def test_list_shows_message_sent_over_smtp(page: Any, server: MailServer) -> None:
    send(server, "Your order has shipped", html="<p>Shipped!</p>", attachment=("invoice.pdf", b"%PDF-1.4"))
    send(server, "Welcome to the service", sender="Service <noreply@service.example>")
    listed(page, "Welcome to the service", "Your order has shipped")
    senders = page.execute_script("return [...document.querySelectorAll('#message-list .from')].map(e => e.innerText)")
    assert "noreply@service.example" in senders[0] and "alice@sender.example" in senders[1]
    assert page.find_element(By.ID, "count").text == "(2)"
    screenshot(page, "webui-list-desktop.png")


def test_new_message_appears_live_without_reload(page: Any, server: MailServer) -> None:
    page.execute_script("window.notReloaded = true")
    send(server, "First")
    listed(page, "First")
    send(server, "Second, to a new mailbox", to="someone.new@example.test")
    listed(page, "Second, to a new mailbox", "First")
    assert page.execute_script("return window.notReloaded") is True


def test_search_filters(page: Any, server: MailServer) -> None:
    send(server, "Alpha report", sender="alpha@sender.example")
    send(server, "Beta report", sender="beta@sender.example", text="mentions the word zebra\n")
    listed(page, "Beta report", "Alpha report")
    box = page.find_element(By.ID, "search")
    assert page.find_element(By.CSS_SELECTOR, "label[for=search]")  # labelled
    box.send_keys("from:alpha\n")
    listed(page, "Alpha report")
    assert page.find_element(By.ID, "count").text == "(1 of 2)"
    box.clear()
    box.send_keys("zebra\n")
    listed(page, "Beta report")
    box.clear()
    box.send_keys("-subject:beta\n")
    listed(page, "Alpha report")
    box.clear()
    page.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    listed(page, "Beta report", "Alpha report")


def test_message_view_text_html_headers_raw(page: Any, server: MailServer) -> None:
    send(server, "Your weekly summary", text="Plain text version: 3 new comments.\n",
         html='<h1 id="greeting">Hello Bob</h1><p>You have <strong>3</strong> new comments.</p><p><a href="https://app.example/c">Open</a></p>',
         attachment=("summary.csv", b"day,comments\nmon,3\n"))
    listed(page, "Your weekly summary")
    open_message(page, "Your weekly summary")
    meta = page.find_element(By.ID, "message-meta").text
    assert "Alice <alice@sender.example>" in meta and "bob@example.test" in meta
    assert not page.find_element(By.ID, "remote-notice").is_displayed()  # links are not remote content
    frame = page.find_element(By.ID, "html-frame")
    assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    page.switch_to.frame(frame)
    try:
        assert wait(page, lambda d: d.find_element(By.ID, "greeting").text) == "Hello Bob"
    finally:
        page.switch_to.default_content()
    screenshot(page, "webui-message-desktop.png")
    page.find_element(By.ID, "tab-text").click()
    assert page.find_element(By.ID, "text-body").text == "Plain text version: 3 new comments."
    assert not page.find_element(By.ID, "panel-text").get_attribute("hidden")
    assert page.find_element(By.ID, "panel-html").get_attribute("hidden")
    page.find_element(By.ID, "tab-text").send_keys("\ue014")  # arrow right: the next tab, by keyboard
    wait(page, lambda d: d.switch_to.active_element.get_attribute("id") == "tab-headers")
    rows = [r.text for r in page.find_elements(By.CSS_SELECTOR, "#header-rows tr")]
    assert "Subject Your weekly summary" in rows
    page.find_element(By.ID, "tab-raw").click()
    wait(page, lambda d: "Subject: Your weekly summary" in d.find_element(By.ID, "raw-body").text)


def test_keyboard_only(page: Any, server: MailServer) -> None:
    """Skip link, arrow keys through the list, Enter opens the message and its heading gets focus."""
    send(server, "Older")
    send(server, "Newer")
    listed(page, "Newer", "Older")
    keys = lambda *k: ActionChains(page).send_keys(*k).perform()  # noqa: E731 - to whatever has focus, as a user types
    keys(Keys.TAB)
    assert page.switch_to.active_element.text == "Skip to the message list"
    keys(Keys.ENTER)
    wait(page, lambda d: d.switch_to.active_element.get_attribute("id") == "message-list")
    assert page.find_element(By.ID, "live").text == "Live"  # the skip link's fragment is not taken for a message
    keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert "Older" in page.switch_to.active_element.text
    keys(Keys.ENTER)
    wait(page, lambda d: d.switch_to.active_element.get_attribute("id") == "message-subject")
    assert page.switch_to.active_element.text == "Older"


def test_html_cannot_run_scripts_and_remote_content_waits_for_the_button(page: Any, server: MailServer, pixels: str) -> None:
    Pixels.seen.clear()
    html = (f'<p id="content">Tracked newsletter</p><img id="tracker" src="{pixels}/open.gif" alt="">'
            f'<div style="background-image:url({pixels}/bg.gif)">styled</div>'
            '<script>document.body.setAttribute("data-script", "ran"); try { parent.document.title = "pwned" } catch (e) {}</script>'
            '<img src="data:," onerror="document.body.setAttribute(\'data-onerror\', \'ran\')" alt="">')
    send(server, "Newsletter", html=html)
    listed(page, "Newsletter")
    open_message(page, "Newsletter")
    notice = page.find_element(By.ID, "remote-notice")
    assert notice.is_displayed()
    page.switch_to.frame(page.find_element(By.ID, "html-frame"))
    try:
        wait(page, lambda d: d.find_element(By.ID, "content").text == "Tracked newsletter")
        time.sleep(0.5)  # time for a script or an image request, were they allowed
        body = page.find_element(By.TAG_NAME, "body")
        assert body.get_attribute("data-script") is None and body.get_attribute("data-onerror") is None
        assert page.find_element(By.ID, "tracker").get_property("naturalWidth") == 0
    finally:
        page.switch_to.default_content()
    assert page.title != "pwned"
    assert Pixels.seen == []  # nothing reached the "tracker"
    page.find_element(By.ID, "allow-remote").click()
    wait(page, lambda d: "/open.gif" in Pixels.seen and "/bg.gif" in Pixels.seen)
    page.switch_to.frame(page.find_element(By.ID, "html-frame"))
    try:
        wait(page, lambda d: d.find_element(By.ID, "tracker").get_property("naturalWidth") == 1)
        assert page.find_element(By.TAG_NAME, "body").get_attribute("data-script") is None  # still no script
    finally:
        page.switch_to.default_content()


def test_attachment_downloads(page: Any, server: MailServer, downloads: Path) -> None:
    data = bytes(range(256)) * 4
    send(server, "Quarterly figures", attachment=("figures.bin", data))
    listed(page, "Quarterly figures")
    open_message(page, "Quarterly figures")
    link = page.find_element(By.CSS_SELECTOR, "#attachment-list a")
    assert link.text == "figures.bin"
    link.click()
    target = downloads / "figures.bin"
    wait(page, lambda d: target.exists() and target.read_bytes() == data)


def test_delete_one_and_purge(page: Any, server: MailServer) -> None:
    send(server, "Keep me")
    send(server, "Delete me")
    send(server, "Also here", to="carol@example.test")
    listed(page, "Also here", "Delete me", "Keep me")
    open_message(page, "Delete me")
    page.find_element(By.ID, "delete").click()
    listed(page, "Also here", "Keep me")
    assert sorted(m.subject for m in server.messages()) == ["Also here", "Keep me"]
    assert page.find_element(By.ID, "message-pane").get_attribute("hidden")
    page.find_element(By.ID, "purge").click()
    page.switch_to.alert.accept()
    listed(page)
    assert server.messages() == []
    assert page.find_element(By.ID, "list-empty").is_displayed()


def test_phone_width_has_no_horizontal_scroll(page: Any, server: MailServer) -> None:
    long_word = "https://very-long-domain-name.example/" + "x" * 150
    send(server, "A subject long enough to need wrapping on a phone screen " + "y" * 60,
         sender=f"Someone With A Long Name <{'z' * 40}@sender.example>", text=f"See {long_word}\n",
         html=f"<p>See <a href='{long_word}'>{long_word}</a></p>", attachment=("a-file-with-a-rather-long-name-" + "w" * 40 + ".txt", b"x"))
    send(server, "Short one")
    phone(page)
    listed(page, "Short one", "A subject long enough to need wrapping on a phone screen " + "y" * 60)
    assert horizontal_overflow(page) <= 0
    screenshot(page, "webui-list-phone.png")
    open_message(page, "A subject long enough to need wrapping on a phone screen " + "y" * 60)
    assert not page.find_element(By.CSS_SELECTOR, ".list-pane").is_displayed()  # one pane at a time
    assert horizontal_overflow(page) <= 0
    screenshot(page, "webui-message-phone.png")
    for tab in ("text", "headers", "raw"):
        page.find_element(By.ID, f"tab-{tab}").click()
        time.sleep(0.1)
        assert horizontal_overflow(page) <= 0, tab
    page.find_element(By.ID, "back").click()
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, ".list-pane").is_displayed())
    try:
        page.find_element(By.CSS_SELECTOR, "#message-list a[aria-current]")
        raise AssertionError("a message is still marked current after going back")
    except NoSuchElementException:
        pass
