"""`simcse-curriculum inspect --html`: one self-contained page (nothing loaded from elsewhere), every text escaped,
rows capped per band, suspected false negatives highlighted; and in a real headless Chromium: rows rendered, the
filter hides non-matching rows, no console errors, a screenshot, and marked pairs downloaded as the CSV that
`mine --exclude-pairs` then keeps out of every band."""

from __future__ import annotations

import copy
import csv
import re
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import mining.encoders
from dataio.triplets import read_triplets
from flows.cli.app import main
from mining.inspect import inspect_triplets
from mining.inspect_html import render_html
from mining.testing import HashEncoder, toy_sentences

# Texts and ids that break a page that does not escape: markup, an attribute break-out, entities, quotes.
HOSTILE_TEXT = 'the <img src=x onerror="window.__pwned=1"> cat & dog\'s "red" </td></tr> &amp; bird'
HOSTILE_ID = 'id"><script>window.__pwned=2</script>'


class _Rows(HTMLParser):
    """Collects each <tr class="row ..."> with its classes, data attributes and the text of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.scripts = 0
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "tr" and "row" in (a.get("class") or "").split():
            self.rows.append({"classes": set((a["class"] or "").split()), "anchor_id": a.get("data-anchor-id"),
                              "negative_id": a.get("data-negative-id"), "text": []})
            self._in_row = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._in_row = False

    def handle_data(self, data: str) -> None:
        if self._in_row:
            self.rows[-1]["text"].append(data)


def parse(page: str) -> _Rows:
    parser = _Rows()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two domains, NLI triplets and one hostile sentence (with a hostile id), mined with the hash encoder."""
    d = tmp_path_factory.mktemp("mined")
    sents = toy_sentences(120, seed=5)
    with open(d / "a.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerow([HOSTILE_ID, HOSTILE_TEXT])
        writer.writerows([(f"a{i}", s) for i, s in enumerate(sents[:60])])
    (d / "b.txt").write_text("\n".join(sents[60:]) + "\n", encoding="utf-8")
    with open(d / "nli.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        writer.writerows([(sents[i], sents[i] + " indeed", sents[i + 1] + " not") for i in range(20)])
    args = ["--corpus", str(d / "a.csv"), "--corpus", str(d / "b.txt"), "--domain", "A", "--domain", "B", "--nli",
            str(d / "nli.csv"), "--quiet", "--seed", "3"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
        assert main(["mine", "--out", str(d / "triplets"), *args]) == 0
    (d / "args.txt").write_text("\n".join(args), encoding="utf-8")
    return d


def test_page_is_self_contained_escaped_and_complete(mined: Path, tmp_path: Path, capsys) -> None:
    page_path = tmp_path / "sub" / "page.html"
    assert main(["inspect", str(mined / "triplets"), "--html", str(page_path), "--false-negatives", "4"]) == 0
    assert f"page: {page_path}" in capsys.readouterr().out
    page = page_path.read_text(encoding="utf-8")

    # Nothing is loaded from elsewhere: no remote (or protocol-relative) src/href, no external script or
    # stylesheet, no CSS url(), and a Content-Security-Policy that forbids any other source.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script[^>]*\ssrc\s*=|<link[^>]*stylesheet", page, re.IGNORECASE)
    styles = "".join(re.findall(r"<style>(.*?)</style>", page, re.DOTALL))
    assert styles and "url(" not in styles and "@import" not in styles
    assert "Content-Security-Policy" in page and "default-src 'none'" in page

    # Hostile text and ids are escaped: only the page's own script tag exists, and parsing gives them back verbatim.
    parsed = parse(page)
    assert parsed.scripts == 1
    assert HOSTILE_TEXT not in page and "<img" not in page
    assert any(HOSTILE_TEXT in "".join(r["text"]) for r in parsed.rows)
    assert any(r["anchor_id"] == HOSTILE_ID for r in parsed.rows)
    assert any(HOSTILE_ID in "".join(r["text"]) for r in parsed.rows)

    # Every row of these small bands is on the page (default cap 200), each band with its histogram.
    triplets = read_triplets(mined / "triplets")
    report = inspect_triplets(mined / "triplets")
    for band, b in report["rounds"][0]["bands"].items():
        assert f"of {b['rows']:,} rows shown here, out of {b['rows']:,} in this band" in page, band
        assert f'aria-label="round 0, {band}: anchor-negative similarity, {b["rows"]} rows"' in page
    shown = {(r["anchor_id"], r["negative_id"]) for r in parsed.rows}
    assert shown == set(zip(triplets.column("anchor_id").to_pylist(), triplets.column("negative_id").to_pylist()))
    # Suspects: the round's list (4) plus each unlabeled band's 4 highest; never the labeled NLI contradictions.
    suspects = [r for r in parsed.rows if "suspect" in r["classes"]]
    assert len(suspects) == 4 + 4 * 3
    nli = set(zip(*[triplets.filter(triplets.column("band").to_numpy(zero_copy_only=False) == "nli_contradiction")
                    .column(c).to_pylist() for c in ("anchor_id", "negative_id")]))
    assert not {(r["anchor_id"], r["negative_id"]) for r in suspects} & nli


def test_rows_are_capped_per_band_and_the_page_says_how_many_exist(mined: Path) -> None:
    report = inspect_triplets(mined / "triplets", samples=7, false_negatives=3)
    page = render_html(report, rows_per_band=5)
    parsed = parse(page)
    bands = report["rounds"][0]["bands"]
    assert len(parsed.rows) == 3 + 5 * len(bands)  # the round's suspects + 5 per band
    for b in bands.values():
        assert f"of 5 rows shown here, out of {b['rows']:,} in this band" in page
    assert "the 3 highest anchor-negative similarities first, then a random sample" in page


def test_negative_at_or_above_positive_is_highlighted(mined: Path) -> None:
    report = inspect_triplets(mined / "triplets", samples=5, false_negatives=0)
    report = copy.deepcopy(report)
    row = report["rounds"][0]["bands"]["random"]["samples"][0]
    row["anchor_negative_sim"] = row["anchor_positive_sim"]  # equal counts: "at or above"
    parsed = parse(render_html(report))
    above = [r for r in parsed.rows if "above" in r["classes"]]
    assert [(r["anchor_id"], r["negative_id"]) for r in above] == [(row["anchor_id"], row["negative_id"])]
    assert not any("suspect" in r["classes"] for r in parsed.rows)  # false_negatives=0: no highest rows


def _chrome_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    return browser, driver


def test_page_in_headless_chromium(mined: Path, tmp_path: Path) -> None:
    browser, driver_path = _chrome_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page_path = tmp_path / "page.html"
    assert main(["inspect", str(mined / "triplets"), "--html", str(page_path), "--false-negatives", "5"]) == 0
    expected_rows = len(parse(page_path.read_text(encoding="utf-8")).rows)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(page_path.as_uri())
        visible = "return [...document.querySelectorAll('tr.row')].filter(tr => tr.getClientRects().length).length"
        counters = ("return [...document.querySelectorAll('table.rows')]"
                    ".reduce((s, t) => s + Number(document.getElementById(t.dataset.counter).textContent), 0)")
        assert driver.execute_script(visible) == expected_rows > 100
        cell = driver.find_element(By.XPATH,
                                   "//td[contains(@class, 'anchor')]/div[@class='t' and contains(., 'onerror')]")
        assert cell.text == " ".join(HOSTILE_TEXT.split())  # shown as text, not markup
        assert driver.execute_script("return window.__pwned === undefined")

        box = driver.find_element(By.ID, "filter")
        box.send_keys("ONERROR")  # case-insensitive
        shown = [tr for tr in driver.find_elements(By.CSS_SELECTOR, "tr.row") if tr.is_displayed()]
        assert 0 < len(shown) < expected_rows
        assert all("onerror" in tr.text.lower() for tr in shown)
        assert driver.execute_script(visible) == driver.execute_script(counters) == len(shown)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        assert driver.execute_script(visible) == driver.execute_script(counters) == expected_rows

        # Mark the top suspect: every row with the same pair is ticked; download the CSV.
        first = driver.find_element(By.CSS_SELECTOR, "table.rows tr.row.suspect")
        pair = (first.get_attribute("data-anchor-id"), first.get_attribute("data-negative-id"))
        first.find_element(By.CSS_SELECTOR, "input.mark").click()
        same = [tr for tr in driver.find_elements(By.CSS_SELECTOR, "tr.row")
                if (tr.get_attribute("data-anchor-id"), tr.get_attribute("data-negative-id")) == pair]
        assert len(same) >= 2 and all(tr.find_element(By.CSS_SELECTOR, "input.mark").is_selected() for tr in same)
        assert driver.find_element(By.ID, "marked-count").text == "1"
        driver.find_element(By.ID, "download").click()
        target = downloads / "false_negatives.csv"
        deadline = time.monotonic() + 30
        while not target.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.is_file(), list(downloads.iterdir())

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        shot = tmp_path / "page.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()

    from PIL import Image

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with Image.open(shot) as image:
        assert image.size[0] >= 1000 and image.size[1] >= 700
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # text, highlights, not a blank

    with open(target, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["anchor_id"], r["negative_id"]) for r in rows] == [pair]

    # The downloaded file is what the next mining takes: the pair is gone from every band.
    args = (mined / "args.txt").read_text(encoding="utf-8").splitlines()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mining.encoders, "load_encoder", lambda model=None, **kw: HashEncoder(16))
        assert main(["mine", "--out", str(tmp_path / "again"), "--exclude-pairs", str(target), *args]) == 0
    again = read_triplets(tmp_path / "again")
    assert pair not in set(zip(again.column("anchor_id").to_pylist(), again.column("negative_id").to_pylist()))


def test_ci_installs_chromium_before_the_tests() -> None:
    """The browser test must run in CI, not skip: .ci/run installs chromium and its driver before `make test`."""
    script = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    install = re.search(r"^[^#\n]*apt-get install[^\n]*chromium[^\n]*\n?[^\n]*chromium-driver", script, re.MULTILINE)
    run_tests = re.search(r"^make test", script, re.MULTILINE)
    assert install and run_tests and install.start() < run_tests.start()
    assert subprocess.run(["bash", "-n", str(Path(__file__).resolve().parent.parent / ".ci" / "run")],
                          check=False).returncode == 0
