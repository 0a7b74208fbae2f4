"""One self-contained HTML page of mined triplets, for finding false negatives by eye and marking them.

Renders `mining.inspect.inspect_triplets`' summary: per round, each band's statistics, its anchor-negative
similarity histogram (inline SVG), and a table of its highest-similarity rows followed by a seeded random sample
(capped per band; the page says how many rows the band has). Suspected false negatives are highlighted: the
highest anchor-negative similarities of the bands whose negatives are not labeled, and rows whose anchor-negative
similarity is at or above their anchor-positive one. A text filter narrows the rows shown; rows can be marked as
false negatives and the marked (anchor_id, negative_id) pairs downloaded as CSV, the file that
`mine --exclude-pairs` and the run config's `mining.exclude_pairs` take.

The page loads nothing: styles and script are inline and a Content-Security-Policy forbids any other source, so
it opens from a mail attachment or an air-gapped machine. Every text is HTML-escaped (tweets hold <, & and
quotes); the rows are rendered here, the script only filters, sorts, marks and downloads.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from dataio.atomic import atomic_write_text

ROW_KEY = ("anchor_id", "positive_id", "negative_id")
CSV_NAME = "false_negatives.csv"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def band_rows(band: dict[str, Any], limit: int) -> list[tuple[dict[str, Any], bool]]:
    """(row, is_highest) shown for a band: its highest-similarity rows first, then its samples, no row twice."""
    out: list[tuple[dict[str, Any], bool]] = []
    seen: set[tuple[Any, ...]] = set()
    for rows, highest in ((band.get("highest") or [], True), (band.get("samples") or [], False)):
        for row in rows:
            key = tuple(row.get(k) for k in ROW_KEY)
            if key not in seen and len(out) < limit:
                seen.add(key)
                out.append((row, highest))
    return out


def _row_html(row: dict[str, Any], *, suspect: bool, with_band: bool, positive_pair: bool = False) -> str:
    """One row; `positive_pair`: a mined positive, whose mark rejects the pair (anchor, positive)."""
    ap, an = row.get("anchor_positive_sim"), row.get("anchor_negative_sim")
    above = ap is not None and an is not None and an >= ap
    classes = " ".join(["row"] + (["suspect"] if suspect else []) + (["above"] if above else []))
    rank = row.get("negative_rank")
    cells = ['<td><input type="checkbox" class="mark" aria-label="mark as a false negative"></td>']
    if with_band:
        cells.append(f"<td>{esc(row.get('band'))}</td>")
    for name in ("anchor", "positive", "negative"):
        cells.append(f'<td class="{name}"><div class="t">{esc(row.get(name))}</div>'
                     f'<div class="id">{esc(row.get(name + "_id"))}</div></td>')
    cells.append(f'<td class="num" data-v="{esc(_num(ap, 4))}">{esc(_num(ap))}</td>')
    cells.append(f'<td class="num" data-v="{esc(_num(an, 4))}">{esc(_num(an))}</td>')
    rank_v = -1 if rank is None else int(rank)
    cells.append(f'<td class="num" data-v="{rank_v}">{esc(rank_v) if rank_v >= 0 else "–"}</td>')
    teacher = row.get("teacher_positive_score" if positive_pair else "teacher_score")
    cells.append(f'<td class="num" data-v="{esc(_num(teacher, 4)) if teacher is not None else -9}">'
                 f'{esc(_num(teacher)) if teacher is not None else "–"}</td>')
    cells.append(f"<td>{esc(row.get('positive_source') or '–')}</td>")
    other = row.get("positive_id") if positive_pair else row.get("negative_id")
    return (f'<tr class="{classes}" data-anchor-id="{esc(row.get("anchor_id"))}" '
            f'data-negative-id="{esc(other)}">{"".join(cells)}</tr>')


def _rows_table(table_id: str, rows: list[tuple[dict[str, Any], bool]], *, with_band: bool, caption: str,
                positive_pairs: bool = False) -> str:
    head = ['<th title="mark as a false negative">FN</th>'] + (['<th data-sort="text">band</th>'] if with_band else [])
    head += ['<th data-sort="text">anchor</th>', '<th data-sort="text">positive</th>',
             '<th data-sort="text">negative</th>', '<th data-sort="num" title="cosine(anchor, positive)">a–p</th>',
             '<th data-sort="num" title="cosine(anchor, negative)">a–n</th>',
             '<th data-sort="num" title="kNN rank of the negative (nearest_neighbour band)">rank</th>',
             '<th data-sort="num" title="the teacher\'s cosine of the pair (rounds mined with a teacher)">teacher</th>',
             '<th data-sort="text" title="why the positive is what it is: anchor (its own view), pair or nli '
             '(labeled), mined (a judge paired two corpus texts)">positive from</th>']
    body = "\n".join(_row_html(r, suspect=s, with_band=with_band, positive_pair=positive_pairs) for r, s in rows)
    counter = f"{table_id}-shown"
    return (f'<p class="caption"><span id="{counter}">{len(rows)}</span> {caption}</p>\n'
            f'<table class="rows" id="{table_id}" data-counter="{counter}"><thead><tr>{"".join(head)}</tr></thead>'
            f'\n<tbody>\n{body}\n</tbody></table>')


def histogram_svg(counts: list[int], bins: list[float], label: str) -> str:
    """Bars of a histogram as inline SVG (no script, no external file)."""
    width, height, left, bottom, top = 360, 120, 8, 18, 6
    plot_w, plot_h = width - 2 * left, height - bottom - top
    lo, hi = bins[0], bins[-1]
    peak = max(counts) if counts and max(counts) > 0 else 1
    bar_w = plot_w / max(1, len(counts))
    parts = [(f'<svg class="hist" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'),
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>']
    for i, c in enumerate(counts):
        if c:
            h = max(1.0, plot_h * c / peak)
            parts.append(f'<rect x="{left + i * bar_w:.2f}" y="{top + plot_h - h:.2f}" '
                         f'width="{max(0.5, bar_w - 0.6):.2f}" height="{h:.2f}">'
                         f'<title>{bins[i]:.3f} to {bins[i + 1]:.3f}: {c}</title></rect>')
    for tick in (-0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        if lo <= tick <= hi:
            x = left + plot_w * (tick - lo) / (hi - lo)
            parts.append(f'<line x1="{x:.2f}" y1="{top + plot_h}" x2="{x:.2f}" y2="{top + plot_h + 3}" class="axis"/>'
                         f'<text x="{x:.2f}" y="{height - 3}" text-anchor="middle">{tick:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _summary_table(rnd: dict[str, Any]) -> str:
    lines = [('<table class="summary"><thead><tr><th>band</th><th>rows</th><th>mean a–n</th><th>p10</th><th>p50</th>'
             '<th>p90</th><th title="rows whose anchor-negative similarity is at or above the anchor-positive one">'
             'a–n ≥ a–p</th><th>skipped candidates</th></tr></thead><tbody>')]
    for band, b in rnd["bands"].items():
        q = b.get("quantiles") or {}
        skipped = ", ".join(f"{k} {v}" for k, v in (b.get("skipped") or {}).items()) or "–"
        lines.append(f'<tr><td>{esc(band)}</td><td class="num">{b["rows"]:,}</td>'
                     f'<td class="num">{esc(_num(b.get("mean_anchor_negative_sim")))}</td>'
                     f'<td class="num">{esc(_num(q.get("0.1")))}</td><td class="num">{esc(_num(q.get("0.5")))}</td>'
                     f'<td class="num">{esc(_num(q.get("0.9")))}</td>'
                     f'<td class="num">{esc(b.get("negative_above_positive", "n/a"))}</td><td>{esc(skipped)}</td></tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def render_html(report: dict[str, Any], *, rows_per_band: int = 200) -> str:
    """The page for `inspect_triplets(root, samples=rows_per_band, ...)`; at most `rows_per_band` rows per band."""
    bins = report.get("histogram_bins") or []
    body: list[str] = []
    total_shown = 0
    for rnd in report["rounds"]:
        r = int(rnd["round"])
        idx = rnd.get("index") or {}
        recall = idx.get("recall_at_k")
        body.append(f'<section class="round" id="round-{r}"><h2>Round {r}</h2>')
        body.append(f'<p class="meta">model {esc(str(rnd.get("model_fingerprint"))[:12])} · corpus '
                    f'{esc(str(rnd.get("corpus_fingerprint"))[:12])} · index {esc(idx.get("backend", "n/a"))}'
                    f'{"" if recall is None else f" · recall@k {esc(_num(recall))}"} · mined '
                    f'{esc(rnd.get("created") or "n/a")}</p>')
        body.append(_summary_table(rnd))
        mined = rnd.get("mined_positives")
        if mined:
            samples = rnd.get("mined_positive_samples") or []
            body.append(f'<h3>Mined positives <small>{mined.get("judge")} judge: {mined.get("mined", 0):,} of '
                        f'{mined.get("candidates", 0):,} anchors ({100 * mined.get("share", 0):.1f}%)</small></h3>')
            if samples:
                body.append(_rows_table(f"r{r}-mined", [(row, False) for row in samples], with_band=True,
                                        positive_pairs=True,
                                        caption="mined positive pairs shown (a random sample); mark a pair that "
                                                "does not say the same thing: the download's pairs are never "
                                                "mined as positives again (mine --exclude-pairs)"))
                total_shown += len(samples)
        suspects = rnd.get("suspected_false_negatives") or []
        if suspects:
            body.append("<h3>Suspected false negatives</h3>")
            body.append(_rows_table(f"r{r}-suspects", [(row, True) for row in suspects], with_band=True,
                                    caption=f"shown: the {len(suspects)} highest anchor-negative similarities of the "
                                            f"bands whose negatives are not labeled"))
            total_shown += len(suspects)
        for i, (band, b) in enumerate(rnd["bands"].items()):
            rows = band_rows(b, rows_per_band)
            total_shown += len(rows)
            highest = sum(1 for _, h in rows if h)
            body.append(f'<section class="band" id="round-{r}-{esc(band)}"><h3>{esc(band)} '
                        f'<small>{b["rows"]:,} rows</small></h3>')
            if b.get("note"):
                body.append(f'<p class="note">{esc(b["note"])}</p>')
            if b.get("histogram_counts") and bins and b["rows"]:
                body.append(histogram_svg(b["histogram_counts"], bins,
                                          f"round {r}, {band}: anchor-negative similarity, {b['rows']} rows"))
                body.append(f'<p class="caption">anchor-negative similarity: rows per {bins[1] - bins[0]:.3g} '
                            f'(values below {bins[0]:g} or above {bins[-1]:g} fall in the end bars)</p>')
            if not rows:
                body.append('<p class="caption">no rows in this band</p></section>')
                continue
            how = (f"the {highest} highest anchor-negative similarities first, then a random sample"
                   if highest else "a random sample")
            body.append(_rows_table(f"r{r}-b{i}", rows, with_band=False,
                                    caption=f"of {len(rows):,} rows shown here, out of {b['rows']:,} in this band "
                                            f"({how}; --rows sets the cap)"))
            body.append("</section>")
        body.append("</section>")
    return _PAGE.format(title=esc(f"Triplets: {report['root']}"), root=esc(report["root"]),
                        rounds=len(report["rounds"]), shown=total_shown, csv_name=CSV_NAME, style=_STYLE,
                        script=_SCRIPT, body="\n".join(body))


def write_html(report: dict[str, Any], path: str | os.PathLike, *, rows_per_band: int = 200) -> Path:
    """Write the page atomically (a reader never sees half a page)."""
    path = Path(path)
    atomic_write_text(path, render_html(report, rows_per_band=rows_per_band))
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>Mined triplets <small>{root}</small></h1>
<p class="help">{rounds} round(s), {shown} rows on this page. Highlighted: <span class="key suspect">highest
anchor-negative similarity</span> (bands whose negatives are not labeled) and <span class="key above">a–n ≥ a–p</span>
(the negative is at least as close to the anchor as the positive). Tick <b>FN</b> on a row whose negative means
the same as its anchor, then download the marked pairs and pass the file to
<code>simcse-curriculum mine --exclude-pairs FILE</code> or to <code>mining.exclude_pairs</code> in a run config:
later rounds never mine those pairs again. Marks live in this page until downloaded.</p>
<div class="toolbar">
<input id="filter" type="search" placeholder="filter rows: any text or id" aria-label="filter rows" autocomplete="off">
<label><input id="only-flagged" type="checkbox"> highlighted only</label>
<span><span id="marked-count">0</span> marked</span>
<button id="download" type="button" data-filename="{csv_name}" disabled>Download marked pairs ({csv_name})</button>
<button id="clear" type="button">Clear marks</button>
</div>
</header>
<main>
{body}
</main>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ddd;
  padding: 8px 16px; }
h1 { font-size: 18px; margin: 0 0 4px; } h1 small, h3 small { color: #666; font-weight: normal; }
main { padding: 0 16px 32px; } h2 { margin: 24px 0 4px; } h3 { margin: 18px 0 4px; }
.help { margin: 0 0 6px; color: #333; max-width: 1100px; }
.toolbar { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
#filter { width: 320px; padding: 4px 6px; }
.meta, .caption, .note { color: #555; margin: 4px 0; }
table { border-collapse: collapse; background: #fff; }
table.summary td, table.summary th { border: 1px solid #ddd; padding: 2px 8px; }
table.rows { width: 100%; table-layout: fixed; margin-bottom: 8px; }
table.rows th { background: #eee; text-align: left; padding: 3px 6px; cursor: pointer; }
table.rows th:first-child { width: 32px; cursor: default; }
table.rows th:nth-last-child(-n+3) { width: 56px; }
table.rows td { border-top: 1px solid #e5e5e5; padding: 3px 6px; vertical-align: top; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.id { color: #888; font-size: 11px; font-family: ui-monospace, monospace; }
tr.suspect td { background: #fff3d6; } tr.above td { box-shadow: inset 3px 0 #d33; }
tr.above td.num:nth-last-child(2) { color: #b00; font-weight: bold; }
tr.marked td { background: #e8e8e8; } tr.marked .t { text-decoration: line-through; }
.key { padding: 0 4px; } .key.suspect { background: #fff3d6; } .key.above { box-shadow: inset 3px 0 #d33; }
svg.hist { display: block; margin: 4px 0; } svg.hist rect { fill: #4a78b5; }
svg.hist .axis { stroke: #888; } svg.hist text { font-size: 10px; fill: #555; }
"""

_SCRIPT = """
(function () {
  "use strict";
  const rows = Array.from(document.querySelectorAll("tr.row"));
  const tables = Array.from(document.querySelectorAll("table.rows"));
  const searchText = new Map(rows.map((tr) => [tr, tr.textContent.toLowerCase()]));
  const pairKey = (tr) => JSON.stringify([tr.dataset.anchorId, tr.dataset.negativeId]);
  const samePair = new Map();
  for (const tr of rows) {
    const k = pairKey(tr);
    if (!samePair.has(k)) samePair.set(k, []);
    samePair.get(k).push(tr);
  }
  const marked = new Map();
  const filter = document.getElementById("filter");
  const onlyFlagged = document.getElementById("only-flagged");
  const download = document.getElementById("download");
  const count = document.getElementById("marked-count");

  function setMark(k, on) {
    const group = samePair.get(k) || [];
    for (const tr of group) {
      tr.querySelector("input.mark").checked = on;
      tr.classList.toggle("marked", on);
    }
    if (on && group.length) {
      const tr = group[0];
      marked.set(k, [tr.dataset.anchorId, tr.dataset.negativeId, tr.querySelector(".anchor .t").textContent,
                     tr.querySelector(".negative .t").textContent]);
    } else {
      marked.delete(k);
    }
    count.textContent = String(marked.size);
    download.disabled = marked.size === 0;
  }

  function applyFilter() {
    const q = filter.value.trim().toLowerCase();
    const flaggedOnly = onlyFlagged.checked;
    for (const table of tables) {
      let shown = 0;
      for (const tr of table.tBodies[0].rows) {
        const flagged = tr.classList.contains("suspect") || tr.classList.contains("above");
        const hit = (!q || searchText.get(tr).includes(q)) && (!flaggedOnly || flagged);
        tr.hidden = !hit;
        if (hit) shown += 1;
      }
      const counter = document.getElementById(table.dataset.counter);
      if (counter) counter.textContent = String(shown);
    }
  }

  function csvCell(value) {
    return /[",\\r\\n]/.test(value) ? '"' + value.replace(/"/g, '""') + '"' : value;
  }

  function markedPairsCsv() {
    const lines = ["anchor_id,negative_id,anchor,negative"];
    for (const row of marked.values()) lines.push(row.map(csvCell).join(","));
    return lines.join("\\r\\n") + "\\r\\n";
  }
  window.markedPairsCsv = markedPairsCsv;

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box instanceof HTMLInputElement && box.classList.contains("mark")) {
      setMark(pairKey(box.closest("tr.row")), box.checked);
    }
  });
  filter.addEventListener("input", applyFilter);
  onlyFlagged.addEventListener("change", applyFilter);
  document.getElementById("clear").addEventListener("click", () => {
    for (const k of Array.from(marked.keys())) setMark(k, false);
  });
  download.addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([markedPairsCsv()], { type: "text/csv;charset=utf-8" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = download.dataset.filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });
  document.addEventListener("click", (event) => {
    const th = event.target instanceof Element ? event.target.closest("th[data-sort]") : null;
    if (!th) return;
    const body = th.closest("table").tBodies[0];
    const col = th.cellIndex;
    const descending = th.dataset.dir !== "desc";
    th.dataset.dir = descending ? "desc" : "asc";
    const value = (tr) => {
      const td = tr.cells[col];
      return th.dataset.sort === "num" ? Number(td.dataset.v) : td.textContent.toLowerCase();
    };
    const sorted = Array.from(body.rows).sort((a, b) => {
      const x = value(a), y = value(b);
      const c = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -c : c;
    });
    body.append(...sorted);
  });
})();
"""
