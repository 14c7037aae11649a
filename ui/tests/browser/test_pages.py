"""`cohort ui` in a real browser: every page loads without console errors; sorting and
filtering change the table; selecting trials changes the chart; a live trial's new points
appear without a reload; the URL holds the page's state. Screenshots of the main pages are
written to target/ui-screenshots/."""

import json
import os
import subprocess
import sys
import time
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from conftest import TOKEN, console_errors, open_page, shot, wait_for


def api(ui, path):
    request = urllib.request.Request(ui + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def rows(driver):
    """The trial numbers of the table's rendered rows, in order."""
    return [int(a.text) for a in driver.find_elements(By.CSS_SELECTOR, ".tablewrap tbody tr td:nth-child(2) a")]


def legend(driver, index=0):
    return driver.find_elements(By.CSS_SELECTOR, ".legend")[index].text


def test_every_page_loads_without_console_errors(driver, ui):
    pages = {
        "experiments": ("#/", "td a"),
        "experiment": ("#/e/synth", ".tablewrap tbody tr td a"),
        "trial": ("#/e/synth/t/3", ".charts canvas"),
        "compare": ("#/e/synth/compare?ids=1,2,3", "table th a"),
        "search": ("#/e/search/search", "h2"),
        "search-experiment": ("#/e/search", ".tablewrap tbody tr td a"),
        "models": ("#/models", ".tablewrap tbody tr td a"),
        "model": ("#/m/synth-best", ".tablewrap tbody tr td a"),
    }
    for name, (fragment, ready) in pages.items():
        open_page(driver, ui, fragment)
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ready), what=f"{name} to render")
        time.sleep(0.5)  # the chart's first draw
        assert "error" not in driver.find_element(By.ID, "status").get_attribute("class"), \
            driver.find_element(By.ID, "status").text
        errors = console_errors(driver)
        assert not errors, f"{name}: {errors}"
        shot(driver, name)
    # The search page says what ASHA did.
    open_page(driver, ui, "#/e/search/search")
    wait_for(lambda: "rung 0" in driver.find_element(By.ID, "main").text, what="the rungs")
    text = driver.find_element(By.ID, "main").text
    assert "6 of 6 trials created" in text and "promoted" in text and "stopped" in text, text


def test_sorting_and_filtering_change_the_table(driver, ui):
    open_page(driver, ui, "#/e/synth")
    wait_for(lambda: rows(driver), what="the table")
    assert rows(driver)[:3] == [1, 2, 3], "no sort: trial order"
    header = [th for th in driver.find_elements(By.CSS_SELECTOR, ".tablewrap th") if th.text == "val_loss"][0]
    header.click()
    expected = [r[0] for r in api(ui, "api/experiments/synth/table?sort=val_loss")["rows"]]
    wait_for(lambda: rows(driver)[:5] == expected[:5], what="the sort by val_loss")
    assert "sort=val_loss" in driver.current_url
    header = [th for th in driver.find_elements(By.CSS_SELECTOR, ".tablewrap th") if th.text == "val_loss"][0]
    header.click()
    expected = [r[0] for r in api(ui, "api/experiments/synth/table?sort=val_loss&desc=1")["rows"]]
    wait_for(lambda: rows(driver)[:5] == expected[:5], what="the descending sort")
    box = driver.find_element(By.CSS_SELECTOR, ".toolbar input[type=text]")
    box.send_keys("layers<3", Keys.ENTER)
    matching = api(ui, "api/experiments/synth/table?where=layers%3C3")["rows"]
    assert 0 < len(matching) < 60
    wait_for(lambda: f"{len(matching)} of 60 trials" in driver.find_element(By.ID, "main").text,
             what="the filter")
    assert set(rows(driver)) == {r[0] for r in matching}
    assert "where=layers" in driver.current_url
    # A filter that does not parse says why and keeps the page working.
    box.clear()
    box.send_keys("nosuch<1", Keys.ENTER)
    wait_for(lambda: "nosuch" in driver.find_element(By.ID, "main").text, what="the filter's error")
    # The one expected error: the browser's note of the server's 400 for that filter.
    others = [e for e in console_errors(driver) if "nosuch" not in e["message"]]
    assert not others, others


def test_selecting_trials_changes_the_chart(driver, ui):
    open_page(driver, ui, "#/e/synth")
    wait_for(lambda: "10 curves" in legend(driver), what="the top 10 curves")
    for index in (4, 6):  # a click redraws the table: find the boxes again each time
        driver.find_elements(By.CSS_SELECTOR, ".tablewrap tbody input[type=checkbox]")[index].click()
    wait_for(lambda: "2 curves" in legend(driver), what="the chart of the selection")
    assert "trial 5" in legend(driver) and "trial 7" in legend(driver)
    assert "sel=5%2C7" in driver.current_url or "sel=5,7" in driver.current_url
    shot(driver, "experiment-selected")
    # The state is in the URL: opening it again shows the same selection and settings.
    url = driver.current_url + "&log=1&smooth=0.6"
    driver.get("about:blank")
    driver.get(url)
    wait_for(lambda: "2 curves" in legend(driver), what="the selection from the URL")
    assert driver.find_element(By.CSS_SELECTOR, "input[type=checkbox]:checked")
    assert driver.find_element(By.CSS_SELECTOR, "input[type=range]").get_attribute("value") == "0.6"


def test_a_live_trials_new_points_appear_without_a_reload(driver, ui, catalog):
    # A running trial: a tracker that logs and syncs N more points whenever it reads N.
    writer = subprocess.Popen(
        [sys.executable, "-c", "\n".join([
            "import sys, cohort",
            f"tracker = cohort.init('live', catalog={str(catalog)!r})",
            "step = 0",
            "for line in sys.stdin:",
            "    for _ in range(int(line)):",
            "        step += 1",
            "        tracker.log({'loss': 1.0 / step}, step)",
            "    tracker.sync()",
            "    print(step, flush=True)",
            "tracker.finish()",
        ])], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        writer.stdin.write("20\n"); writer.stdin.flush(); writer.stdout.readline()
        open_page(driver, ui, "#/e/live/t/1")
        wait_for(lambda: "20 points" in legend(driver), what="the first 20 points")
        driver.execute_script("window.__notReloaded = true")
        writer.stdin.write("15\n"); writer.stdin.flush(); writer.stdout.readline()
        wait_for(lambda: "35 points" in legend(driver), timeout=30, what="the new points, live")
        assert driver.execute_script("return window.__notReloaded") is True
        shot(driver, "trial-live")
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
    assert not console_errors(driver)


def test_the_model_page_shows_versions_aliases_and_their_history(driver, ui):
    open_page(driver, ui, "#/models")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".tablewrap tbody tr td a"), what="the models")
    assert "production → 2" in driver.find_element(By.ID, "main").text
    driver.find_element(By.LINK_TEXT, "synth-best").click()
    wait_for(lambda: "Alias history" in driver.find_element(By.ID, "main").text, what="the model page")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".tablewrap tbody tr"), what="the versions")
    versions = [r.text for r in driver.find_elements(By.CSS_SELECTOR, ".tablewrap tbody tr")]
    assert versions[0].startswith("2 production synth/3 150"), versions
    text = driver.find_element(By.ID, "main").text
    model = api(ui, "api/models/synth-best")
    assert model["versions"][0]["checkpoint"]["sha256"][:12] in text
    assert [(h["from"], h["to"]) for h in model["alias_history"]] == [(None, 1), (1, 2)]
    # The source trial is one click away.
    driver.find_elements(By.LINK_TEXT, "synth/3")[0].click()
    wait_for(lambda: "trial 3" in driver.find_element(By.ID, "main").text, what="the trial page")
    assert not console_errors(driver)
