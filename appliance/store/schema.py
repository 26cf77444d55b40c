"""The SQLite schema and its version. Tables are only ever added, so older files upgrade in place."""

from __future__ import annotations

SCHEMA_VERSION = 8
# Version 2 added sources, reports and exports; version 3 added the results' assessable, quality_reasons and
# bank_version columns (UPGRADES adds them to an older file); version 4 the sealed prediction ledger (its table and
# triggers come with SCHEMA; UPGRADE_STEPS seals what an older file already holds) and results.input_sha256;
# version 5 the ground truth (truth_records, truth, truth_history: appliance/store/truth.py) and the series'
# accession_number and station_name (series of an older file keep '': their reports match by Study Instance UID);
# version 6 the series' patient_id and patient_name (for the technologist's display, served to named TLS clients
# only; an older file's series keep '') and the thumbnails of the slices the model saw (appliance/store/thumbnails.py;
# results of an older file have none); version 7 storage commitment: the receiver's record of what it was sent
# (received_instances) and the results it owes its senders (commitment_reports), and the PACS destination's requests
# awaiting their results (commitment_requests). New tables only: an older file gets them empty. Version 8 the series'
# instance_digests (which images a closed series had, so that a late image is told from a re-sent one; an older
# file's series keep '', and a late image of one is set aside, never taken for a re-send) and the sources' used (the
# images the model was given, which the SR references; an older file's sources keep '[]': all the series' images).
UPGRADABLE = (1, 2, 3, 4, 5, 6, 7)

# Columns added after a table was first created: (table, column, definition). An older file gets each one it lacks,
# with its default, when it is opened (SQLite has no ADD COLUMN IF NOT EXISTS, so the database checks first).
UPGRADES = (
    ("results", "assessable", "INTEGER NOT NULL DEFAULT 1"),
    ("results", "quality_reasons", "TEXT NOT NULL DEFAULT '[]'"),
    ("results", "bank_version", "TEXT NOT NULL DEFAULT ''"),
    ("results", "input_sha256", "TEXT NOT NULL DEFAULT ''"),
    ("series", "accession_number", "TEXT NOT NULL DEFAULT ''"),
    ("series", "station_name", "TEXT NOT NULL DEFAULT ''"),
    ("series", "patient_id", "TEXT NOT NULL DEFAULT ''"),
    ("series", "patient_name", "TEXT NOT NULL DEFAULT ''"),
    ("series", "instance_digests", "TEXT NOT NULL DEFAULT ''"),
    ("sources", "used", "TEXT NOT NULL DEFAULT '[]'"),
)

# Run on every open after SCHEMA and the upgrades: what needs a column an older file only has once UPGRADES ran.
AFTER_UPGRADES = """
CREATE INDEX IF NOT EXISTS series_accession ON series(accession_number) WHERE accession_number != '';
"""

# Steps run once on an older file, after its columns are added and in the same transaction: (the version that
# brought the step, what it does: a function name in appliance/store/ledger.py, called with the connection and the
# time). A file older than that version gets the step.
UPGRADE_STEPS = (
    (4, "seal_existing"),  # results and failed series stored before the ledger: sealed in their stored order
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    key TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'other',
    state TEXT NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    expected INTEGER,
    manufacturer TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    completed_by TEXT,
    detail TEXT,
    first_seen REAL NOT NULL,
    last_file_at REAL,
    updated_at REAL NOT NULL,
    accession_number TEXT NOT NULL DEFAULT '',  -- (0008,0050): reports are matched by it; never logged
    station_name TEXT NOT NULL DEFAULT '',      -- (0008,1010)
    patient_id TEXT NOT NULL DEFAULT '',        -- (0010,0020): for the display (named TLS clients); never logged
    patient_name TEXT NOT NULL DEFAULT '',      -- (0010,0010), as in the file (family^given...)
    instance_digests TEXT NOT NULL DEFAULT ''   -- its SOP Instance UIDs' digests once closed (series.digest)
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    scored_at REAL NOT NULL,
    bundle_name TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    backend TEXT NOT NULL,
    precision TEXT NOT NULL,
    needs_review INTEGER NOT NULL,
    review_reasons TEXT NOT NULL,
    ood_distance REAL,
    findings TEXT NOT NULL,
    timings TEXT NOT NULL,
    assessable INTEGER NOT NULL DEFAULT 1,
    quality_reasons TEXT NOT NULL DEFAULT '[]',
    bank_version TEXT NOT NULL DEFAULT '',
    input_sha256 TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
CREATE INDEX IF NOT EXISTS results_time ON results(scored_at);
-- The header of one source instance (patient and study modules, no pixels) and the series' instance references,
-- kept for its SR: the images themselves leave the spool once scored.
CREATE TABLE IF NOT EXISTS sources (
    series_uid TEXT PRIMARY KEY REFERENCES series(series_uid),
    header BLOB NOT NULL,
    instances TEXT NOT NULL,
    captured_at REAL NOT NULL,
    used TEXT NOT NULL DEFAULT '[]'  -- the SOP Instance UIDs the model tensor was made of: the SR references them
);
-- Built once and kept, so every try (and every destination) sends the same SOP instance. Once every destination has
-- it, the document and the series' source are dropped (the patient data they carry is in PACS now); the SR's UID
-- stays, linking the result to the SR in PACS.
CREATE TABLE IF NOT EXISTS reports (
    series_uid TEXT PRIMARY KEY REFERENCES series(series_uid),
    sop_instance_uid TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    document BLOB
);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (series_uid, destination)
);
CREATE INDEX IF NOT EXISTS exports_due ON exports(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL
);
-- The sealed prediction ledger (appliance/store/ledger.py, docs/ledger.md): one entry per series outcome, written in
-- the outcome's own transaction, each hashing the one before. Append-only: SQLite itself refuses to change one.
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    payload TEXT NOT NULL,
    bundle_name TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    bank_version TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    mode TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_series ON ledger(series_uid);
CREATE INDEX IF NOT EXISTS ledger_time ON ledger(recorded_at);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: entries are never changed'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: entries are never removed'); END;
-- Ground truth (appliance/store/truth.py, docs/ground-truth.md). Every final report received and every assessment is
-- a record, kept (the report's text is not: only the labels read from it); `truth` is the current truth per study and
-- finding, recomputed from its records in receipt order (the latest wins); `truth_history` every change of it.
CREATE TABLE IF NOT EXISTS truth_records (
    id INTEGER PRIMARY KEY,                 -- receipt order: the latest record wins
    source TEXT NOT NULL,                   -- report | assessment
    status TEXT NOT NULL,                   -- F final, C corrected, X cancelled (reports); A (assessment)
    sender TEXT NOT NULL,                   -- MSH-3 sending application; for an assessment, the assessor
    control_id TEXT NOT NULL,               -- MSH-10 ('' for an assessment)
    accession_number TEXT NOT NULL DEFAULT '',
    study_uid TEXT,                         -- as the report named it or its accession number matched; NULL: pending
    series_uid TEXT,                        -- an assessment: the result it assessed
    observed_at REAL,                       -- OBR-7, when given
    received_at REAL NOT NULL,
    labels TEXT NOT NULL,                   -- JSON {finding_id: true|false}; {} for a cancellation
    mentioned TEXT NOT NULL DEFAULT '[]',   -- JSON [finding_id]: stated either way in the text
    verdicts TEXT NOT NULL DEFAULT '{}',    -- an assessment: JSON {finding_id: accept|reject|correct}
    comment TEXT NOT NULL DEFAULT '',       -- an assessment's comment
    matched_at REAL                         -- when its study first had a scored result
);
CREATE UNIQUE INDEX IF NOT EXISTS truth_records_message ON truth_records(sender, control_id) WHERE source = 'report';
CREATE INDEX IF NOT EXISTS truth_records_study ON truth_records(study_uid);
CREATE INDEX IF NOT EXISTS truth_records_pending ON truth_records(accession_number) WHERE study_uid IS NULL;
CREATE TABLE IF NOT EXISTS truth (
    study_uid TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    value INTEGER,                          -- 1 present, 0 absent, NULL withdrawn (a cancelled report)
    record_id INTEGER NOT NULL REFERENCES truth_records(id),
    source TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (study_uid, finding_id)
);
CREATE TABLE IF NOT EXISTS truth_history (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    finding_id TEXT NOT NULL,
    change TEXT NOT NULL,                   -- set | replaced | withdrawn
    old_value INTEGER,
    old_record_id INTEGER,
    new_value INTEGER,
    new_record_id INTEGER NOT NULL,
    changed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS truth_history_study ON truth_history(study_uid);
-- What the model saw, for the display: one small 8-bit grayscale PNG per slice of the model tensor (base, mid,
-- apex; its first phase), made by the preparer from the tensor itself. Derived images of the patient: protect like
-- the database.
CREATE TABLE IF NOT EXISTS thumbnails (
    series_uid TEXT NOT NULL,
    position INTEGER NOT NULL,              -- 0 base, 1 mid, 2 apex: the tensor's channel
    label TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    png BLOB NOT NULL,
    made_at REAL NOT NULL,
    PRIMARY KEY (series_uid, position)
);
-- What the DICOM receiver was sent (appliance/store/received.py), one row per SOP instance: written, synced, before
-- its C-STORE is answered Success (reason 0), or after it was refused (reason: the Failure Reason a storage commitment
-- request for it gets). Commitment requests are answered from here long after the files left the spool; rows older
-- than dicom.commitment_keep_days go. Instance UIDs only: no patient attribute.
CREATE TABLE IF NOT EXISTS received_instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    reason INTEGER NOT NULL,                -- 0 stored; else a PS3.3 C.14.1.1 Failure Reason
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS received_time ON received_instances(received_at);
-- Storage commitment results the receiver owes its senders (appliance/store/commitment_reports.py): written, synced,
-- before the N-ACTION is answered Success, sent on the requester's association or a new one, retried, kept
-- dicom.commitment_keep_days once sent or failed.
CREATE TABLE IF NOT EXISTS commitment_reports (
    id INTEGER PRIMARY KEY,
    calling_ae TEXT NOT NULL,               -- the requester: where the report goes
    transaction_uid TEXT NOT NULL,
    result TEXT NOT NULL,                   -- JSON {"committed": [[class, uid]], "failed": [[class, uid, reason]]}
    state TEXT NOT NULL,                    -- pending | sent | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    association TEXT,                       -- same | new, once sent
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (calling_ae, transaction_uid)
);
CREATE INDEX IF NOT EXISTS commitment_reports_due ON commitment_reports(state, next_attempt_at);
-- The PACS destination's storage commitment requests for the SRs it stored (appliance/store/commitment_requests.py):
-- one row per (transaction, SR), written before the N-ACTION goes, marked by the report whichever association it
-- comes on (so a restart loses no pending commitment), deleted once the export's try is settled.
CREATE TABLE IF NOT EXISTS commitment_requests (
    transaction_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,         -- an SR this appliance stored at the destination
    sop_class_uid TEXT NOT NULL,
    destination TEXT NOT NULL,              -- the export destination kind
    state TEXT NOT NULL,                    -- waiting | committed | failed
    failure_reason INTEGER,                 -- the PACS' Failure Reason when failed (NULL: it did not name the SR)
    requested_at REAL NOT NULL,
    deadline REAL NOT NULL,                 -- a try whose report has not come by then has failed
    reported_at REAL,
    association TEXT,                       -- same | new: where the report came
    PRIMARY KEY (transaction_uid, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS commitment_requests_sr ON commitment_requests(destination, sop_instance_uid);
"""
