#!/usr/bin/env python3
"""How fast `cohort ui` draws a large experiment in a real browser (headless Chromium through
Selenium, as the browser tests drive it): the time from navigation to the trials table drawn,
and to the chart of the top N trials' curves drawn, read from the page's own performance
marks ("cohort:table", "cohort:chart"); median of several fresh page loads.

    cohort bench catalog generate --catalog DIR --trials 10000 --metrics 10 --steps 1000
    cohort index synth --catalog DIR
    cohort ui --catalog DIR --token TOKEN &
    python bench/ui.py http://localhost:7180/ TOKEN [--experiment synth] [--top 50] [--runs 5]
"""

import argparse
import os
import statistics
import time

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ui", "tests", "browser"))
from chromium import chromium  # noqa: E402  (the tests' own browser set-up)


def mark(d, name, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        t = d.execute_script(f"const m = performance.getEntriesByName({name!r}); return m.length ? m[0].startTime : null")
        if t is not None:
            return t
        time.sleep(0.02)
    raise SystemExit(f"{name} never came")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("token")
    p.add_argument("--experiment", default="synth")
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    d = chromium(window="1400,1000")
    try:
        d.get(f"{a.url}?token={a.token}#/")  # the cookie
        tables, charts = [], []
        for _ in range(a.runs):
            d.get("about:blank")
            d.get(f"{a.url}#/e/{a.experiment}?sort={a.metric}:min&metric={a.metric}&top={a.top}")
            tables.append(mark(d, "cohort:table"))
            charts.append(mark(d, "cohort:chart"))
            legend = d.execute_script("return document.querySelector('.legend').textContent")
        print(f"table drawn {statistics.median(tables):.0f} ms after navigation (min {min(tables):.0f}, max {max(tables):.0f})")
        print(f"chart drawn {statistics.median(charts):.0f} ms after navigation (min {min(charts):.0f}, max {max(charts):.0f}): {legend.split(';')[0].split('━')[-1].strip()}")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
