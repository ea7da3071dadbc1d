"""The web viewer in a real headless Chromium against a real `ductai serve` on loopback.

A simulated breast (CC + MLO) is submitted over HTTP, analysed by the shipped default model
(its heatmap and duct mask have content, which the tiny test nets do not promise), and the
page ``/viewer/?analysis=<id>&token=<token>`` is asserted on what it renders: image pixels on
each view's canvas, the heatmap and outline layers changing the canvas, one table row per
lesion of report.json, the surgical map decoded, fill warnings shown when flagged.

Chromium is the system package (Debian ``chromium``); Playwright's own browser download is
not needed. The screenshot is kept under ``tmp_path`` and, with ``DUCTAI_TEST_ARTIFACTS``
set, copied to ``test-artifacts/viewer.png`` in the repository.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = ROOT / "models" / "default"
HEATMAP_VISIBLE = 13  # viewer.js: heatmap alpha is 0 at and below grey level 12
PAGE_TIMEOUT_MS = 90_000

# In the page: pixel statistics of one canvas, so that assertions read what was drawn.
CANVAS_STATS = """(id) => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let bright = 0, coloured = 0, hash = 2166136261;
  for (let i = 0; i < d.length; i += 4) {
    const r = d[i], g = d[i + 1], b = d[i + 2];
    if (r + g + b > 30) bright++;
    if (Math.max(r, g, b) - Math.min(r, g, b) > 24) coloured++;
    hash = Math.imul(hash ^ (r + 3 * g + 7 * b), 16777619) >>> 0;
  }
  return {n: c.width * c.height, bright, coloured, hash,
          renders: Number(c.dataset.renderCount)};
}"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no system Chromium on PATH (Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def tiny_bundle():
    """Overrides the conftest's for this module: `serve_process` serves the shipped default
    model, so no tiny nets are trained for this test."""
    if not (DEFAULT_MODEL / "bundle.json").is_file():
        pytest.skip(f"no default model bundle at {DEFAULT_MODEL}")
    return DEFAULT_MODEL


@pytest.fixture
def analysed(serve_process, simulated_study, wait_analysis):
    """A server on the default model and one analysed breast: (server, status)."""
    server = serve_process(threads=2, backend="auto")
    with server.client() as http:
        files = [
            ("files", (p.name, p.read_bytes(), "application/dicom")) for p in simulated_study.images
        ]
        response = http.post("/v1/analyses", files=files)
        assert response.status_code == 202, response.text
        status = wait_analysis(http, response.json()["id"], timeout=300)
    assert status["state"] == "done", status
    return server, status


def _png(http, url: str) -> np.ndarray:
    response = http.get(url)
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content)))


def _wait_render(page, canvas_id: str, after: int) -> dict:
    page.wait_for_function(
        "([id, n]) => Number(document.getElementById(id).dataset.renderCount) > n",
        arg=[canvas_id, after],
        timeout=10_000,
    )
    return page.evaluate(CANVAS_STATS, canvas_id)


def _toggle(page, selector: str, canvas_id: str) -> dict:
    before = page.evaluate(CANVAS_STATS, canvas_id)
    page.click(selector)
    return _wait_render(page, canvas_id, before["renders"])


def _save_screenshot(page, tmp_path: Path) -> Path:
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"viewer screenshot: {shot}")
    if os.environ.get("DUCTAI_TEST_ARTIFACTS"):
        kept = ROOT / "test-artifacts" / "viewer.png"
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, kept)
        print(f"viewer screenshot kept: {kept}")
    return shot


def test_viewer_renders_an_analysis(analysed, simulated_study, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    server, status = analysed
    analysis_id = status["id"]
    assert status["views"] and status["studies"]

    with server.client() as http:
        reports = {
            v["sop_instance_uid"]: http.get(v["files"]["report.json"]).json()
            for v in status["views"]
        }
        studies = {
            s["folder"]: http.get(s["files"]["study_report.json"]).json() for s in status["studies"]
        }
        layers = {
            sop: {
                "heatmap": int((_png(http, v["files"]["heatmap.png"]) >= HEATMAP_VISIBLE).sum()),
                "outline": int((_png(http, v["files"]["duct_mask.png"]) > 0).sum()),
            }
            for v in status["views"]
            for sop in [v["sop_instance_uid"]]
        }
    # The default model finds a duct and a heatmap on this study: the layer checks below bite.
    assert any(c["heatmap"] for c in layers.values()), layers
    assert any(c["outline"] for c in layers.values()), layers

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.base_url}/viewer/?analysis={analysis_id}&token={server.token}")
            page.wait_for_selector("body[data-state=ready]", timeout=PAGE_TIMEOUT_MS)
            assert "token=" not in page.url  # the secret leaves the address bar
            assert page.input_value("#analysis-select") == analysis_id

            for sop, report in reports.items():
                panel = f".view-panel[data-sop='{sop}']"
                assert page.get_attribute(panel, "data-ready") == "true"
                canvas_id = f"view-canvas-{sop}"
                stats = page.evaluate(CANVAS_STATS, canvas_id)
                # The radiograph fills a large part of the panel (breast tissue, not black).
                assert stats["bright"] > 0.2 * stats["n"], stats

                # One row per lesion, in report order, with its id and score.
                rows = page.query_selector_all(
                    f"table.lesion-table[data-sop='{sop}'] tr.lesion-row"
                )
                lesions = report["lesions"]
                assert len(rows) == len(lesions)
                for row, lesion in zip(rows, lesions):
                    assert row.get_attribute("data-lesion-id") == str(lesion["id"])
                    assert float(row.get_attribute("data-score")) == pytest.approx(lesion["score"])
                    shown = float(row.query_selector(".col-score").inner_text())
                    assert shown == pytest.approx(lesion["score"], abs=6e-4)
                    assert row.query_selector(".col-label").inner_text() == lesion["label"]

                warning = page.query_selector(f"{panel} .flags-warning")
                assert warning.is_visible() == bool(report["flags"] or report["messages"])
                for flag in report["flags"]:
                    assert flag in (warning.get_attribute("data-flags") or "").split()

                # Layers: turning the heatmap or the outline off removes coloured pixels.
                for layer, count in layers[sop].items():
                    if not count:
                        continue
                    off = _toggle(page, f"[data-layer={layer}]", canvas_id)
                    on = _toggle(page, f"[data-layer={layer}]", canvas_id)
                    assert off["hash"] != on["hash"], layer
                    assert off["coloured"] < on["coloured"], (layer, off, on)

            # Window/level and zoom redraw the image differently.
            sop = next(iter(reports))
            canvas_id = f"view-canvas-{sop}"
            before = page.evaluate(CANVAS_STATS, canvas_id)
            page.eval_on_selector(
                "#window-width",
                "el => { el.value = '60'; el.dispatchEvent(new Event('input')); }",
            )
            narrow = _wait_render(page, canvas_id, before["renders"])
            assert narrow["hash"] != before["hash"]
            page.click("[data-zoom=reset-wl]")
            reset = _wait_render(page, canvas_id, narrow["renders"])
            assert reset["hash"] == before["hash"]
            page.click("[data-zoom=in]")
            zoomed = _wait_render(page, canvas_id, reset["renders"])
            assert zoomed["hash"] != reset["hash"]
            page.click("[data-zoom=fit]")

            # Per breast: the surgical map decoded, one row per study-level lesion.
            for folder, study in studies.items():
                img = f"img.surgical-map[data-study='{folder}']"
                page.wait_for_selector(f"{img}[data-loaded=true]", timeout=10_000)
                assert page.eval_on_selector(img, "el => el.naturalWidth") > 0
                rows = page.query_selector_all(
                    f"table.study-lesion-table[data-study='{folder}'] tr.lesion-row"
                )
                assert [r.get_attribute("data-lesion-id") for r in rows] == [
                    str(lesion["id"]) for lesion in study["lesions"]
                ]
            _save_screenshot(page, tmp_path)

            # Upload through the page: a new analysis, polled until done, then shown.
            page.set_input_files("#upload-files", [str(p) for p in simulated_study.images])
            page.click("#upload-submit")
            page.wait_for_function(
                "old => document.body.dataset.state === 'ready'"
                " && document.getElementById('analysis-select').value !== old",
                arg=analysis_id,
                timeout=PAGE_TIMEOUT_MS,
            )
            uploaded = page.input_value("#analysis-select")
            assert f"analysis={uploaded}" in page.url
            assert len(page.query_selector_all(".view-panel[data-ready=true]")) == len(reports)
            with server.client() as http:
                assert http.get(f"/v1/analyses/{uploaded}").json()["source"] == "http"
        finally:
            browser.close()
    assert not errors, errors
