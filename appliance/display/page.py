"""The page and its style: one HTML document and one stylesheet, served by appliance/display/web.py.

No external font, CDN or image: system fonts only, every asset from this server. Laid out for a 1280 x 800 console
(it reflows narrower); a study that needs review carries a full-width red band with the words NEEDS REVIEW, so it
stands out from across the room, and the page title counts such studies.
"""

from __future__ import annotations

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ScanSide results</title>
<link rel="stylesheet" href="/display.css">
</head>
<body>
<header class="top">
  <div class="brand"><b>ScanSide</b> <span class="ruo">Research use only &mdash; not for diagnosis</span>
    <span id="model" class="model"></span></div>
  <div id="summary" class="summary" aria-live="polite"></div>
  <div id="conn" class="conn conn-connecting" role="status">Connecting to the appliance&hellip;</div>
</header>
<p id="notice" class="notice" hidden></p>
<main id="studies" aria-label="Studies, newest first"></main>
<p id="empty" class="empty">No results yet. Each study appears here as soon as the appliance has scored it.</p>
<footer class="keys" id="keys">Keys: <kbd>&darr;</kbd>/<kbd>&uarr;</kbd> or <kbd>j</kbd>/<kbd>k</kbd> next and
  previous study &middot; <kbd>r</kbd> next study that needs review &middot; <kbd>Home</kbd>/<kbd>End</kbd> newest and
  oldest &middot; <kbd>Enter</kbd> show or hide the findings</footer>
<script src="/display.js"></script>
</body>
</html>
"""

CSS = """
:root {
  --ink: #14181c; --muted: #56606a; --line: #c9d0d6; --page: #e9edf0; --card: #ffffff;
  --review: #c4161c; --review-tint: #fdecec; --na: #4a3b8f; --na-tint: #efecfa; --ok: #1e7a3c;
  --bar: #8a97a3; --bar-pos: #14508c; --focus: #f2a900;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--page); color: var(--ink);
  font: 15px/1.35 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; }
.top { position: sticky; top: 0; z-index: 2; display: flex; gap: 16px; align-items: center;
  padding: 8px 16px; background: #1f2a33; color: #fff; min-height: 52px; }
.brand { flex: 1 1 auto; min-width: 0; font-size: 18px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.ruo { font-size: 13px; color: #ffd479; margin-left: 8px; text-transform: uppercase; letter-spacing: .03em; }
.model { font-size: 13px; color: #b9c4cc; margin-left: 8px; }
.summary { font-size: 17px; font-weight: 600; white-space: nowrap; }
.summary .n-review { background: var(--review); color: #fff; padding: 2px 10px; border-radius: 4px; }
.conn { font-size: 14px; padding: 4px 10px; border-radius: 4px; white-space: nowrap; max-width: 420px;
  overflow: hidden; text-overflow: ellipsis; }
.conn::before { content: "\\25CF  "; }
.conn-live { background: #17402a; color: #b8f0c8; }
.conn-reconnecting, .conn-connecting { background: #5a4300; color: #ffe08a; }
.conn-refused, .conn-display { background: var(--review); color: #fff; }
main { padding: 10px 16px 44px; display: flex; flex-direction: column; gap: 10px; }
.empty { margin: 40px 16px; font-size: 18px; color: var(--muted); }
.study { background: var(--card); border: 1px solid var(--line); border-left: 10px solid var(--ok);
  border-radius: 6px; outline: none; }
.study:focus { box-shadow: 0 0 0 4px var(--focus); }
.study.needs-review { border: 3px solid var(--review); border-left: 14px solid var(--review);
  background: var(--review-tint); }
.study.not-assessable { border-left-color: var(--na); }
.band { display: flex; align-items: baseline; gap: 14px; padding: 4px 14px; font-weight: 700; }
.band-review { background: var(--review); color: #fff; font-size: 26px; letter-spacing: .06em; padding: 6px 14px; }
.band-review .why { font-size: 15px; font-weight: 600; letter-spacing: 0; }
.band-na { background: var(--na); color: #fff; font-size: 20px; }
.band-ok { color: var(--ok); font-size: 15px; }
.series { display: grid; grid-template-columns: 328px minmax(0, 1fr); grid-template-areas: "who who"
  "thumbs findings" "na na" "reasons reasons"; gap: 6px 18px; padding: 8px 14px 10px; }
.series + .series { border-top: 1px dashed var(--line); }
.who { grid-area: who; display: flex; flex-wrap: wrap; align-items: baseline; gap: 2px 18px; }
.who h2 { margin: 0; font-size: 24px; line-height: 1.2; }
.who .withheld { font-size: 18px; font-weight: 600; color: var(--muted); font-style: italic; }
.who p { margin: 0; }
.who .ids { font-size: 18px; font-weight: 600; }
.who .meta { color: var(--muted); font-size: 14px; flex-basis: 100%; }
.sr { font-size: 14px; font-weight: 600; }
.sr-delivered { color: var(--ok); } .sr-pending { color: #8a6100; } .sr-failed { color: var(--review); }
.sr-none { color: var(--muted); font-weight: 400; }
.thumbs { grid-area: thumbs; display: flex; gap: 8px; margin: 0; }
.thumbs figure { margin: 0; text-align: center; font-size: 13px; color: var(--muted); }
.thumbs img { display: block; width: 104px; height: 104px; background: #000; border-radius: 3px; }
.thumbs .none { width: 328px; height: 104px; display: flex; align-items: center; justify-content: center;
  background: #f1f3f5; color: var(--muted); border-radius: 3px; font-size: 14px; }
.findings { grid-area: findings; min-width: 0; }
.findings .head { display: flex; justify-content: space-between; font-size: 13px; color: var(--muted); }
.findings ul { list-style: none; margin: 2px 0 0; padding: 0; display: grid;
  grid-template-columns: 1fr 1fr; gap: 2px 22px; }
.f { display: grid; grid-template-columns: minmax(0, 1fr) 16px minmax(60px, 96px) 40px; gap: 6px;
  align-items: center; font-size: 14px; min-height: 20px; }
.f .name { overflow-wrap: break-word; line-height: 1.15; }
.f.pos .name { font-weight: 700; }
.f .flag { color: var(--review); text-align: center; }
.f .val { text-align: right; font-variant-numeric: tabular-nums; }
.track { position: relative; height: 12px; background: #e3e7eb; border-radius: 2px; }
.fill { position: absolute; left: 0; top: 0; bottom: 0; background: var(--bar); border-radius: 2px; }
.f.pos .fill { background: var(--bar-pos); }
.mark { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #000; }
.reasons { grid-area: reasons; margin: 2px 0 0; padding-left: 20px; font-size: 15px; }
.reasons.many { columns: 2; column-gap: 40px; }
.findings .none { margin: 0; color: var(--muted); font-size: 15px; }
.na-text { grid-area: na; margin: 0; font-size: 17px; font-weight: 700; color: var(--na); }
.notice { margin: 10px 16px 0; padding: 6px 12px; background: #fff8e0; border: 1px solid #e0c36a; border-radius: 4px;
  font-size: 14px; }
.collapsed .findings ul { display: none; }
.keys { position: fixed; bottom: 0; left: 0; right: 0; padding: 5px 16px; background: #dfe4e8;
  border-top: 1px solid var(--line); font-size: 13px; color: var(--muted); }
kbd { font: 12px/1 ui-monospace, "DejaVu Sans Mono", monospace; border: 1px solid #9aa5ae; border-radius: 3px;
  padding: 1px 4px; background: #fff; color: var(--ink); }
@media (max-width: 1000px) { .series { grid-template-columns: 1fr; grid-template-areas: "who" "thumbs" "findings"
  "na" "reasons"; } .findings ul { grid-template-columns: 1fr; } .reasons.many { columns: 1; } }
"""
