"""The web page in a real browser: Debian's Chromium, driven by Selenium through chromedriver.

A person opens /ui/, clicks into folders (one with an odd name) down to a file with two
versions, and reads what the page says. A screenshot of the file page is saved in the
test's temporary folder. Needs ``apt-get install chromium chromium-driver``
(scripts/test.sh installs them); skipped, saying so, when they are absent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from castore.store import Store

from ..server_process import castore_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)

ODD_FOLDER = "contest #1 zażółć 100%"
ODD_FILE = "t?st <b>1&2 'q\".in"  # no '/': that would make a folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_click_through_to_a_file_with_two_versions(tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    driver: WebDriver = browser  # type: ignore[assignment]
    root = tmp_path / "store"
    path = f"/contests/{ODD_FOLDER}/tests/{ODD_FILE}"
    with Store.open(root, create=True) as store:
        store.put(path, b"1 2 3\n" * 500, 1_600_000_000)
        store.put(path, b"3 2 1\n" * 700, 1_700_000_000)
        store.put("/contests/other/tests/copy.in", b"3 2 1\n" * 700, 1_700_000_000)
        store.put("/contests/readme.txt", b"hello", 1_600_000_000)

    with castore_server(root) as url:
        driver.get(url + "/ui/")
        assert "castore" in driver.title
        assert "3 (4 versions retained)" in driver.find_element(By.ID, "usage").text

        driver.find_element(By.LINK_TEXT, "Browse the files").click()
        driver.find_element(By.LINK_TEXT, "contests/").click()
        assert driver.find_element(By.ID, "folder").text == "/contests/"
        driver.find_element(By.LINK_TEXT, ODD_FOLDER + "/").click()
        assert driver.find_element(By.ID, "folder").text == f"/contests/{ODD_FOLDER}/"
        driver.find_element(By.LINK_TEXT, "tests/").click()
        row = driver.find_element(By.CSS_SELECTOR, "#listing tr.file")
        assert ODD_FILE in row.text and "4.1 KiB" in row.text  # 4200 bytes, current version
        driver.find_element(By.LINK_TEXT, ODD_FILE).click()

        # the file page, as a person sees it
        assert driver.find_element(By.ID, "name").text == ODD_FILE
        facts = driver.find_element(By.ID, "current").text
        assert path in facts
        assert "1700000000" in facts and "2023-11-14 22:13:20 UTC" in facts
        assert "4200 bytes" in facts and "zstd" in facts
        versions = driver.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
        assert [v.find_element(By.CSS_SELECTOR, "td").text for v in versions] == ["1700000000", "1600000000"]
        assert "3000 B" not in versions[0].text and "2.9 KiB" in versions[1].text
        same = driver.find_element(By.ID, "same").text
        assert "/contests/other/tests/copy.in" in same
        crumbs = driver.find_element(By.ID, "crumbs").text
        assert crumbs == f"/contests/{ODD_FOLDER}/tests/"
        download = driver.find_element(By.ID, "download").get_attribute("href")
        assert download is not None and download.startswith(url + "/files/contests/contest%20%231%20za")
        screenshot = tmp_path / "file-page.png"
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000

        # the old version downloads through the page; the shared copy opens
        old_link = versions[1].find_element(By.LINK_TEXT, "download").get_attribute("href")
        assert old_link is not None and old_link.endswith("?version=1600000000")
        driver.find_element(By.LINK_TEXT, "/contests/other/tests/copy.in").click()
        assert driver.find_element(By.ID, "name").text == "copy.in"

        # the dedup report of /contests, by contest
        driver.get(url + "/ui/report?prefix=/contests&by=1")
        groups = driver.find_element(By.ID, "groups").text
        assert f"/contests/{ODD_FOLDER}/" in groups and "/contests/readme.txt" in groups
        assert "/contests/other/ (1)" in driver.find_element(By.ID, "shared").text
        driver.save_screenshot(str(tmp_path / "report-page.png"))
