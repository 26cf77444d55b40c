"""`scanside display`: the technologist's live page at the scanner console (docs/display.md).

A gRPC client of the appliance (feed: StreamResults resumed from the last event it applied, so a restart of the
appliance or a cut network leaves no gap and no repeat; GetSeriesPreview for the thumbnails and, over TLS to a
named client, the exam identity), an in-memory board of the newest studies (board), what the page says in plain
words (words), and a stdlib HTTP server with server-sent events on loopback (web) serving one page (page, script).
No patient identifier reaches a log line.
"""
