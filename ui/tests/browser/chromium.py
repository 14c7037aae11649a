"""Headless Chromium through Selenium, as the browser tests and the UI benchmarks drive it:
Debian's chromium and chromium-driver (CHROMIUM and CHROMEDRIVER name others)."""

import os

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service


def chromium(window="1400,1300", console=False):
    """A new headless browser; `console` keeps the page's console messages for get_log."""
    options = Options()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window}",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(60)
    return browser
