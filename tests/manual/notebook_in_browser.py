"""Manual check (not run by pytest): open notebook 01 in JupyterLab in headless Chromium, run all cells,
move the tau slider and save a screenshot.

Needs Debian's chromium (/usr/bin/chromium) and `pip install playwright` (no browser download):

    python tests/manual/notebook_in_browser.py   # screenshot at /tmp/nb.png
"""
import json, os, subprocess, time, urllib.request, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
from playwright.sync_api import sync_playwright
env = dict(os.environ, JUPYTER_CONFIG_DIR="/tmp/jl/cfg", JUPYTER_DATA_DIR="/tmp/jl/data", JUPYTER_RUNTIME_DIR="/tmp/jl/rt")
token = "abc123"
proc = subprocess.Popen(["jupyter", "lab", "--no-browser", "--allow-root", "--port", "8899", "--ip", "127.0.0.1",
                         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}"], env=env,
                        stdout=open("/tmp/jl/log.txt", "w"), stderr=subprocess.STDOUT)
try:
    for _ in range(60):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:8899/api/status?token={token}"); break
        except Exception:
            time.sleep(1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1300, "height": 1600})
        page.goto(f"http://127.0.0.1:8899/lab/tree/notebooks/01_layerwise_cosine.ipynb?token={token}&reset")
        page.wait_for_timeout(8000)
        # wait for a stable kernel
        last, stable = None, 0
        for _ in range(60):
            try:
                ks = json.loads(urllib.request.urlopen(f"http://127.0.0.1:8899/api/kernels?token={token}").read())
            except Exception:
                ks = []
            ids = [k["id"] for k in ks]
            if ids and ids == last:
                stable += 1
                if stable >= 3: break
            else:
                stable = 0
            last = ids
            time.sleep(1)
        page.keyboard.press("Escape")
        page.click("text=Run", timeout=10000)
        page.click("text=Run All Cells", timeout=10000)
        page.wait_for_selector(".js-plotly-plot", timeout=180000)
        page.wait_for_timeout(5000)
        # move the tau slider via keyboard: focus the slider handle
        readout = page.locator("text=TPR").first.inner_text()
        print("readout before:", readout)
        handles = page.locator(".widget-slider .noUi-handle")
        print("sliders:", handles.count())
        if handles.count() >= 2:
            h = handles.nth(1)
            h.focus(); 
            for _ in range(5): page.keyboard.press("ArrowRight")
            page.wait_for_timeout(2000)
            print("readout after:", page.locator("text=TPR").first.inner_text())
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        page.screenshot(path="/tmp/nb.png", full_page=False)
        browser.close()
finally:
    proc.terminate()
