"""`scanside serve | demo | results | display | status | synth | assess | clients | exports | ledger | validation |
prompts | triton-repo | bench`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from appliance import RESEARCH_NOTICE, __version__
from appliance.bundle import BundleError
from appliance.config import ConfigError, Settings, load_settings
from appliance.inference import BackendError

SCANNER_PACE_S = 0.05  # `scanside synth --pace` alone: 20 images a second


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _setup_logging(level: str) -> None:
    from appliance.logsafe import withhold_warning_texts

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    withhold_warning_texts()


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.service import Appliance

    settings = _settings(args)
    _setup_logging(settings.logging.level)
    logging.getLogger(__name__).info(RESEARCH_NOTICE)
    appliance = Appliance(settings)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(signal.Signals(number).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        appliance.start()
        stop.wait()
    finally:
        appliance.stop(reason=received[0] if received else "")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.dev.demo import run_demo

    settings = _settings(args)
    _setup_logging("WARNING" if not args.verbose else "INFO")
    if args.prospective:
        from appliance.dev.month import run_prospective_demo

        return run_prospective_demo(settings, studies=90 if args.studies is None else args.studies,
                                    seed=args.seed, keep=args.keep)
    return run_demo(settings, studies=4 if args.studies is None else args.studies, seed=args.seed, pace_s=args.pace,
                    keep=args.keep, sr_out=args.sr_out)


def _client(args: argparse.Namespace):
    """An ApplianceClient from the common connection options where given, else what `--config` says ([client],
    derived from [grpc] where it is empty); the token as appliance.config.client.connection finds it."""
    from appliance.config import load_config
    from appliance.config.client import connection, grpc_target
    from appliance.serve.client import ApplianceClient

    c = connection(grpc_target(*load_config(getattr(args, "config", None))), address=args.address,
                   tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key, server_name=args.server_name,
                   token_file=args.token_file)
    try:
        return ApplianceClient(c.address, tls_ca=c.tls_ca, tls_cert=c.tls_cert, tls_key=c.tls_key, token=c.token,
                               server_name=c.server_name)
    except OSError as exc:  # a certificate or key file that cannot be read
        raise ConfigError(f"TLS file for the gRPC client: {exc.strerror or exc}: {exc.filename}") from None


def _connection_options(p: argparse.ArgumentParser, token: str) -> None:
    """What `_client` reads: the configuration, or the appliance's address, TLS, the token."""
    p.add_argument("--config", help="TOML configuration file: the appliance's address, TLS and token from its "
                                    "[client] and [grpc] (the options below override it)")
    p.add_argument("--address", help="host:port of the appliance's gRPC API (default: from --config, else "
                                     "127.0.0.1:50051)")
    p.add_argument("--tls-ca", type=Path, help="verify the appliance's TLS certificate against this CA")
    p.add_argument("--tls-cert", type=Path, help="client certificate, for an appliance that requires one")
    p.add_argument("--tls-key", type=Path, help="the client certificate's key")
    p.add_argument("--server-name", help="the name to check the appliance's certificate for")
    p.add_argument("--token-file", help=f"file holding {token} (or set SCANSIDE_TOKEN, which overrides the "
                                        "configuration's token_file)")


def cmd_results(args: argparse.Namespace) -> int:
    import grpc

    from appliance.api import pb
    from appliance.cli.table import IdentityLookup, ResultsTable

    with _client(args) as client:
        table = ResultsTable(sys.stdout, width=args.width, identity=IdentityLookup(client))
        try:
            table.header(client.model_info())
            if not args.follow:
                for result in client.list_all():
                    table.add(pb.ResultEvent(kind=pb.ResultEvent.SCORED, result=result))
                return 0
            for event in client.stream(after_event_id=args.after, include_sr_updates=True):
                table.add(event)
        except grpc.RpcError as exc:
            print(f"scanside results: {client.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from appliance.cli import status
    from appliance.config.client import metrics_url

    url = args.metrics or metrics_url(_settings(args))
    with _client(args) as client:
        try:
            found = status.gather(client, url)
        except status.Unreachable as exc:
            print(f"scanside status: {exc}", file=sys.stderr)
            return 2
    status.show(found, sys.stdout, width=args.width)
    return 0 if found.serving else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from appliance.dev.synth import feed

    if args.out is None and args.send is None:
        print("scanside synth: say where the studies go: --out DIR, --send HOST:PORT, or both", file=sys.stderr)
        return 2
    try:
        if args.pace < 0:
            raise feed.FeedError("--pace must be a number of seconds, at least 0")
        peer = None
        if args.send is not None:
            host, port = feed.parse_address(args.send)
            peer = feed.Peer(host, port, called_ae=args.called_ae, calling_ae=args.calling_ae,
                             timeout_s=args.timeout)
        if args.out is not None:
            feed.check_folder(args.out)  # before anything is rendered
        studies = feed.plans(args.vendor, args.studies, args.seed)
        n = len(studies)
        print(f"{n} synthetic vendor-{args.vendor} stud{'y' if n == 1 else 'ies'} (seed {args.seed}); SYNTHETIC "
              f"DATA, NOT FOR CLINICAL USE" + (f"; an instance every {args.pace:g} s" if args.pace else ""),
              flush=True)
        where = " and ".join(x for x in (f"written to {args.out}" if args.out is not None else "",
                                         f"sent to {peer.where}" if peer is not None else "") if x)

        def said(fed: feed.Fed) -> None:
            refused = ", ".join(f"{k} with status 0x{code:04X}" for code, k in sorted(fed.refused.items()))
            print(f"study {fed.study.path_key} ({fed.study.condition}): {fed.instances} instances {where}"
                  + (f"; refused: {refused}" if refused else ""), flush=True)

        done = feed.feed(studies, args.out, peer, args.pace, on_study=said)
    except feed.FeedError as exc:
        print(f"scanside synth: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    refused = sum(sum(fed.refused.values()) for fed in done)
    if refused and peer is not None:
        print(f"scanside synth: {refused} of {sum(fed.instances for fed in done)} instances refused by {peer.where}",
              file=sys.stderr)
        return 1
    return 0


def _verdict(text: str) -> tuple[str, str | bool]:
    """FINDING=accept|reject|present|absent, as `scanside assess` takes it."""
    finding, eq, verdict = text.partition("=")
    choices: dict[str, str | bool] = {"accept": "accept", "reject": "reject", "present": True, "absent": False}
    if not eq or not finding or verdict not in choices:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FINDING=accept|reject|present|absent")
    return finding, choices[verdict]


def cmd_assess(args: argparse.Namespace) -> int:
    import grpc

    verdicts = dict(args.finding)
    if len(verdicts) != len(args.finding):
        print("scanside assess: a finding is named twice", file=sys.stderr)
        return 2
    with _client(args) as client:
        try:
            reply = client.assess(args.series_uid, verdicts, args.assessor, args.comment or "")
        except grpc.RpcError as exc:
            print(f"scanside assess: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    print(f"assessment {reply.assessment_id} stored: {len(verdicts)} finding(s), {reply.findings_changed} changed "
          "the current truth")
    return 0


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from appliance.bundle import load_bundle
    from appliance.inference.triton_repo import RepoError, RepoSpec, check_repository, file_for, write_repository

    settings = _settings(args)
    bundle = load_bundle(args.bundle or settings.engine.bundle)
    try:
        preferred = tuple(int(b) for b in args.preferred.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--preferred {args.preferred!r} must be batch sizes separated by commas, e.g. 4,8") from None
    spec = RepoSpec(kind=args.backend, model_name=args.model_name or settings.triton.model_name,
                    version=args.model_version, max_batch=args.max_batch, preferred_batch_sizes=preferred,
                    max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                    instance_kind={"cpu": "KIND_CPU", "gpu": "KIND_GPU"}.get(args.instance_kind, ""),
                    intra_op_threads=args.intra_op_threads)
    try:
        model_dir = write_repository(bundle, Path(args.out), spec, force=args.force)
        checked = check_repository(model_dir, bundle)
    except RepoError as exc:
        print(f"scanside triton-repo: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {model_dir} for bundle {bundle.name} {bundle.version} ({spec.kind} backend, version {spec.version})")
    for line in checked:
        print(f"  {line}")
    if spec.kind == "tensorrt":
        print(f"  {model_dir / str(spec.version) / file_for('tensorrt')} is not written: build it on the serving GPU "
              "from the bundle's encoder.onnx (docs/triton.md)")
    print(f"serve with: tritonserver --model-repository={Path(args.out).resolve()}; then [triton] url = host:8001, "
          f'model_name = "{spec.model_name}"')
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from appliance.dev.bench import run_bench

    _setup_logging("WARNING")
    return run_bench(args)


def cmd_prompts(args: argparse.Namespace) -> int:
    from appliance import prompts

    settings = _settings(args)
    bundle = Path(args.bundle) if args.bundle else settings.engine.bundle
    try:
        site = prompts.Site.open(bundle, settings.paths.data_dir)
        if args.action == "list":
            print(prompts.describe(site))
            return 0
        if args.action == "history":
            print(prompts.format_history(site))
            return 0
        if args.action == "add":
            edit = prompts.add_prompt(site, args.finding, args.prompt, by=args.by, name=args.name,
                                      prevalence=args.prevalence, rare=True if args.rare else None)
        elif args.action == "remove":
            edit = prompts.remove(site, args.finding, args.prompt, by=args.by)
        else:
            edit = prompts.revert(site, args.version, by=args.by)
    except ValueError as exc:  # PromptRefused, OverlayError: nothing was changed
        print(f"scanside prompts: refused, nothing changed: {exc}", file=sys.stderr)
        return 2
    print(edit.message)
    nearest = prompts.format_nearest(edit)
    if nearest:
        print(nearest)
    print(f"label bank {edit.record.previous} -> {edit.record.version} (edit {edit.record.seq} by {edit.record.by}; "
          f"undo with `scanside prompts revert {edit.record.previous}`)")
    print("a running appliance scores the next series with it; the shipped bundle is unchanged")
    return 0


def cmd_clients(args: argparse.Namespace) -> int:
    from appliance.serve.access import AccessError, Client, hash_token, load_clients, new_token, save_clients

    path = Path(args.file) if args.file else _settings(args).grpc.clients_file
    if path is None:
        print("scanside clients: no clients file: set grpc.clients_file in the configuration, or give --file",
              file=sys.stderr)
        return 2
    try:
        clients = list(load_clients(path)) if path.exists() else []
    except AccessError as exc:
        print(f"scanside clients: {exc}", file=sys.stderr)
        return 2
    if args.action == "list":
        for c in clients:
            how = ", ".join(x for x in ("token" if c.token_sha256 else "",
                                        f"certificate CN={c.certificate_cn}" if c.certificate_cn else "") if x)
            print(f"{c.name:<24} {','.join(sorted(c.roles)):<20} {how}")
        print(f"{len(clients)} client(s) in {path}")
        return 0
    if args.action == "remove":
        kept = [c for c in clients if c.name != args.name]
        if len(kept) == len(clients):
            print(f"scanside clients: no client named {args.name!r}", file=sys.stderr)
            return 2
        save_clients(path, kept)
        print(f"removed {args.name}; restart the appliance to apply it")
        return 0
    if any(c.name == args.name for c in clients):
        print(f"scanside clients: a client named {args.name!r} exists; remove it first", file=sys.stderr)
        return 2
    token = "" if args.no_token else new_token()
    if not token and not args.certificate_cn:
        print("scanside clients: --no-token needs --certificate-cn", file=sys.stderr)
        return 2
    try:
        client = Client(args.name, frozenset(args.role), hash_token(token) if token else "",
                        args.certificate_cn or "")
        save_clients(path, [*clients, client])
    except AccessError as exc:
        print(f"scanside clients: {exc}", file=sys.stderr)
        return 2
    print(f"added {args.name} ({', '.join(sorted(client.roles))}) to {path}; restart the appliance to apply it")
    if token:
        print("its token, shown only now (the appliance keeps its SHA-256); give it to the client as "
              "--token-file or SCANSIDE_TOKEN:")
        print(token)
    return 0


def cmd_exports(args: argparse.Namespace) -> int:
    import time

    from appliance.handovers import ExportState
    from appliance.store import Store

    database = _settings(args).paths.database
    if not database.exists():
        print(f"scanside exports: no appliance database at {database} (see paths.data_dir)", file=sys.stderr)
        return 2
    store = Store(database)
    try:
        if args.action == "retry":
            if not args.ids and not args.all_failed:
                print("scanside exports retry: name export ids, or --all-failed", file=sys.stderr)
                return 2
            count = store.exports.retry(tuple(args.ids))
            print(f"{count} failed export(s) queued again; a running appliance takes them within seconds")
            return 0
        state = ExportState(args.state) if args.state else None
        items = store.exports.items(state=state, limit=args.limit)
        print(f"{'id':>6}  {'series':<14} {'to':<7}{'state':<10}{'tries':>5}  {'last change':<19}  last error")
        for e in items:
            changed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.updated_at))
            print(f"{e.id:>6}  {e.key:<14} {e.destination:<7}{e.state.value:<10}{e.attempts:>5}  {changed}  "
                  f"{e.last_error or ''}")
        counts = store.exports.counts()
        print("total: " + (", ".join(f"{d} {s.value} {n}" for (d, s), n in sorted(counts.items())) or "none"))
        return 0
    finally:
        store.close()


def _since(text: str | None, flag: str = "--since") -> float | None:
    """An ISO 8601 date or time; without an offset it is UTC."""
    from datetime import datetime, timezone

    if not text:
        return None
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not an ISO 8601 date or time (e.g. 2026-03-01 or "
                          "2026-03-01T08:00:00+01:00)") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def cmd_ledger(args: argparse.Namespace) -> int:
    from appliance.fileio import PRIVATE_FILE_MODE, write_bytes_atomic
    from appliance.store import Store
    from appliance.store.ledger import export_bytes, pseudonym_key, pseudonymised

    paths = _settings(args).paths
    database = paths.database
    if not database.exists():
        print(f"scanside ledger: no appliance database at {database} (see paths.data_dir)", file=sys.stderr)
        return 2
    since = _since(getattr(args, "since", None))
    store = Store(database)
    try:
        if args.action == "head":
            seq, digest = store.ledger.head()
            print(f"{seq} {digest}")
            return 0
        if args.action == "export":
            entries = list(store.ledger.entries(since))
            if args.pseudonymise:
                try:
                    entries = pseudonymised(entries, pseudonym_key(paths.data_dir))
                except ValueError as exc:
                    print(f"scanside ledger export: {exc}", file=sys.stderr)
                    return 2
            # Results, and UIDs unless pseudonymised: as private as the database either way.
            write_bytes_atomic(Path(args.out), export_bytes(entries, args.format), mode=PRIVATE_FILE_MODE)
            print(f"{len(entries)} ledger entries written to {args.out} ({args.format}"
                  f"{', UIDs pseudonymised' if args.pseudonymise else ''})")
            if not args.pseudonymise:
                print("note: the file holds Study and Series Instance UIDs; for a copy that leaves the hospital use "
                      "--pseudonymise", file=sys.stderr)
            return 0
        verdict = store.ledger.verify()
    finally:
        store.close()
    if not verdict.ok:
        print(f"scanside ledger verify: FAILED: {verdict.problem}", file=sys.stderr)
        print(f"  first bad seq: {verdict.bad_seq}; the chain verifies up to seq {verdict.head_seq}", file=sys.stderr)
        return 1
    print(f"ledger verified: {verdict.entries} entries, seq 1..{verdict.head_seq} with no gap, every hash and link "
          f"recomputed, times never decreasing; every stored result and failed series sealed exactly once")
    print(f"head: {verdict.head_seq} {verdict.head_hash}")
    return 0


def cmd_validation(args: argparse.Namespace) -> int:
    from appliance.bundle import load_bundle
    from appliance.store import Store
    from appliance.validation import Period, write_report
    from appliance.validation.figures import MissingExtra, require_matplotlib

    since, until = _since(args.since), _since(args.until, "--until")
    assert since is not None  # --since is required
    if until is not None and until <= since:
        raise ConfigError(f"--until {args.until!r} is not after --since {args.since!r}")
    try:
        require_matplotlib()
    except MissingExtra as exc:
        print(f"scanside validation report: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    database = settings.paths.database
    if not database.exists():
        print(f"scanside validation report: no appliance database at {database} (see paths.data_dir)",
              file=sys.stderr)
        return 2
    bank = load_bundle(args.bundle or settings.engine.bundle).label_bank
    store = Store(database)
    try:
        data = write_report(store, bank, settings.evidence, Period(since, until), Path(args.out))
    finally:
        store.close()
    c, v = data.counts, data.verdict
    print(f"validation report written to {args.out}: {c.scored} series scored, {c.with_truth} with truth; ledger "
          + ("verified" if v.ok else f"FAILED verification at seq {v.bad_seq}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanside", description=f"ScanSide {__version__}. {RESEARCH_NOTICE}")
    parser.add_argument("--version", action="version", version=f"scanside {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the appliance")
    p.add_argument("--config", help="TOML configuration file (environment SCANSIDE_<SECTION>_<KEY> overrides it)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the appliance on a temporary folder fed by synthetic scanners")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--studies", type=int, help="synthetic studies to write (default 4; with --prospective 90)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--pace", type=float, default=0.01, help="seconds between files of one scanner (default 0.01)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    p.add_argument("--sr-out", type=Path, metavar="DIR",
                   help="also write each result as a DICOM SR into DIR (what a PACS would receive)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the appliance's log")
    p.add_argument("--prospective", action="store_true",
                   help="a simulated site instead: three stations, final reports over MLLP (some corrected, some "
                        "never), a vendor change; prints live performance per manufacturer, the drift onset and the "
                        "ledger's verification")
    p.set_defaults(func=cmd_demo)

    width_help = "columns to fit (default: the terminal's width, or $COLUMNS)"
    p = sub.add_parser("results", help="the live results table, over gRPC")
    _connection_options(p, "a client token")
    p.add_argument("--follow", "-f", action="store_true", help="keep streaming new results")
    p.add_argument("--after", type=int, default=0, help="with --follow: resume after this event id")
    p.add_argument("--width", type=int, help=width_help)
    p.set_defaults(func=cmd_results)

    from appliance.display.cli import register as register_display

    register_display(sub)

    p = sub.add_parser("status", help="is the appliance ready: model, backend, mode, queue, quarantine, SR backlog "
                                      "(exit 0 ready, 1 not ready, 2 unreachable)")
    _connection_options(p, "a client token (the ops role)")
    p.add_argument("--metrics", metavar="URL", help="the appliance's Prometheus endpoint (default: from --config's "
                                                    "[metrics], else http://127.0.0.1:9108/metrics)")
    p.add_argument("--width", type=int, help=width_help)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("synth", help="write synthetic studies of one vendor into a folder, or send them over "
                                     "C-STORE, optionally at a scanner's pace (SYNTHETIC DATA)")
    p.add_argument("--vendor", choices=["A", "B", "C"], default="A",
                   help="A: nested folders, atomic files; B: flat, files grow in place, implicit VR; C: DICOMDIR-"
                        "style folders (default A)")
    p.add_argument("--studies", type=int, default=1, help="how many studies (default 1)")
    p.add_argument("--seed", type=int, default=7, help="the same seed gives the same studies (default 7)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write the files into DIR (e.g. the watch folder)")
    p.add_argument("--send", metavar="HOST:PORT", help="send each instance over DICOM C-STORE")
    p.add_argument("--calling-ae", default="SYNTHMR", help="with --send: our AE title (default SYNTHMR)")
    p.add_argument("--called-ae", default="SCANSIDE", help="with --send: the receiver's AE title (default SCANSIDE)")
    p.add_argument("--timeout", type=float, default=10.0, help="with --send: seconds to wait for the peer")
    p.add_argument("--pace", type=float, nargs="?", const=SCANNER_PACE_S, default=0.0, metavar="SECONDS",
                   help=f"seconds between instances; --pace alone: {SCANNER_PACE_S:g} s, a scanner exporting a "
                        "finished cine stack (default: as fast as it renders)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("assess", help="record a radiologist's assessment of one result as ground truth (admin token)")
    p.add_argument("series_uid", help="the Series Instance UID of the result")
    p.add_argument("finding", nargs="+", type=_verdict, metavar="FINDING=VERDICT",
                   help="accept (the call was right), reject (it was wrong), present or absent (corrected)")
    p.add_argument("--assessor", required=True, help="who assessed it (stored with the assessment)")
    p.add_argument("--comment", help="optional note, stored with the assessment (at most 1024 characters)")
    _connection_options(p, "an admin client token")
    p.set_defaults(func=cmd_assess)

    p = sub.add_parser("clients", help="who may call the gRPC API: list, add (prints a new token) or remove")
    p.add_argument("--config", help="TOML configuration file (its grpc.clients_file is edited)")
    p.add_argument("--file", help="clients file to edit instead of the configured one")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="names, roles and how each is recognised (never a token)")
    a = actions.add_parser("add", help="add a client; prints its token once")
    a.add_argument("name", help="a name for the logs, e.g. console-mr1")
    a.add_argument("--role", action="append", required=True, choices=["display", "ops", "admin"],
                   help="repeat for several roles")
    a.add_argument("--certificate-cn", help="also (or only, with --no-token) recognise a TLS client certificate "
                   "with this common name")
    a.add_argument("--no-token", action="store_true", help="no token: the client is known by its certificate")
    a = actions.add_parser("remove", help="remove a client (its token stops working at the next start)")
    a.add_argument("name")
    p.set_defaults(func=cmd_clients)

    p = sub.add_parser("exports", help="the queue of SRs going back to PACS: list it, or queue failed ones again")
    p.add_argument("--config", help="TOML configuration file (its paths.data_dir holds the database)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="newest first")
    a.add_argument("--state", choices=["pending", "delivered", "failed"])
    a.add_argument("--limit", type=int, default=50)
    a = actions.add_parser("retry", help="queue failed exports again with a fresh count of tries")
    a.add_argument("ids", nargs="*", type=int, help="export ids (from `scanside exports list`)")
    a.add_argument("--all-failed", action="store_true", help="every failed export")
    p.set_defaults(func=cmd_exports)

    p = sub.add_parser("ledger", help="the sealed prediction ledger: verify its chain, print its head, export it")
    config_help = "TOML configuration file (its paths.data_dir holds the database)"
    p.add_argument("--config", help=config_help)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("verify", help="recompute the hash chain; exit 1 naming the first bad seq")
    a.add_argument("--config", help=config_help, default=argparse.SUPPRESS)
    a = actions.add_parser("head", help="print the newest entry's seq and hash (to anchor it somewhere else)")
    a.add_argument("--config", help=config_help, default=argparse.SUPPRESS)
    a = actions.add_parser("export", help="write the entries for a statistician (JSON lines or CSV)")
    a.add_argument("--config", help=config_help, default=argparse.SUPPRESS)
    a.add_argument("--out", required=True, help="the file to write (0640: it holds UIDs and results)")
    a.add_argument("--since", help="only entries recorded at or after this ISO 8601 date or time (UTC without an "
                                   "offset)")
    a.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    a.add_argument("--pseudonymise", action="store_true",
                   help="replace Study and Series Instance UIDs with keyed pseudonyms (the same in every export from "
                        "this appliance; the key stays in the data folder): for a copy that leaves the hospital")
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("validation", help="the validation report: performance per finding and manufacturer, "
                                          "calibration, agreement, rare findings, drift, the ledger's verification")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("report", help="write one self-contained HTML file (needs the 'report' extra)")
    a.add_argument("--since", required=True, help="from this ISO 8601 date or time (UTC without an offset)")
    a.add_argument("--until", help="up to (not including) this ISO 8601 date or time; default: now")
    a.add_argument("--out", required=True, help="the HTML file to write (it holds counts and rates, no identifier)")
    a.add_argument("--config", help="TOML configuration file (its paths.data_dir holds the database, [evidence] "
                                    "the manufacturer and station labels)")
    a.add_argument("--bundle", help="the engine bundle for finding names and the OOD threshold, instead of the "
                                    "configured one")
    p.set_defaults(func=cmd_validation)

    p = sub.add_parser("prompts", help="list, add, remove or revert zero-shot prompts and findings (site edits, "
                                       "kept in the data folder, versioned)")
    p.add_argument("--config", help="TOML configuration file (its paths.data_dir holds the edits, its engine.bundle "
                                    "the shipped bank)")
    p.add_argument("--bundle", help="the bundle whose shipped bank the edits build on, instead of the configured one")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="findings, prompts and thresholds in force, and the bank version")
    actions.add_parser("history", help="every edit: who, when, what, and the bank versions before and after")
    by_help = "who makes the edit, for the history (default: the OS user)"
    a = actions.add_parser("add", help="add a prompt to a finding, or a new finding with its first prompt")
    a.add_argument("finding", help="finding id, e.g. lv_dilation or a new one such as lv_thrombus")
    a.add_argument("prompt", help='the prompt text, e.g. "there is a left ventricular thrombus"')
    a.add_argument("--name", help="display name of a new finding")
    a.add_argument("--prevalence", type=float,
                   help="share of studies expected to have the finding (required for a new finding)")
    a.add_argument("--rare", action="store_true", help="positive results always need review")
    a.add_argument("--by", help=by_help)
    r = actions.add_parser("remove", help="remove one prompt, or a whole finding")
    r.add_argument("finding")
    r.add_argument("prompt", nargs="?")
    r.add_argument("--by", help=by_help)
    v = actions.add_parser("revert", help="return to an earlier bank version (recorded as an edit)")
    v.add_argument("version", help="a version from `scanside prompts history`, its edit number, or 0 for the "
                                   "shipped bank")
    v.add_argument("--by", help=by_help)
    p.set_defaults(func=cmd_prompts)

    p = sub.add_parser("triton-repo", help="write a Triton Inference Server model repository for the bundle "
                                           "(config.pbtxt and the encoder; docs/triton.md)")
    p.add_argument("--out", required=True, help="the model repository folder (the model goes in <out>/<model name>)")
    p.add_argument("--config", help="TOML configuration file: engine.bundle and triton.model_name from it")
    p.add_argument("--bundle", help="the engine bundle folder (default: engine.bundle)")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "python"], default="onnxruntime",
                   help="Triton backend: onnxruntime (the ONNX as is), tensorrt (config only: the FP16 plan is built "
                        "on the serving GPU), python (model.py running ONNX Runtime: a Triton without its ONNX "
                        "Runtime backend); default onnxruntime")
    p.add_argument("--model-name", help="default: triton.model_name (scanside_encoder)")
    p.add_argument("--model-version", type=int, default=1, help="the version folder (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size: the largest batch Triton forms (8)")
    p.add_argument("--preferred", default="4,8", help="dynamic batching: preferred batch sizes (default 4,8)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="dynamic batching: how long a request may wait for a preferred batch (default 2000 us)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--instance-kind", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where instances run (auto: gpu for tensorrt, cpu for python, Triton's choice otherwise)")
    p.add_argument("--intra-op-threads", type=int, default=0, help="python backend: ONNX Runtime threads (0: all)")
    p.add_argument("--force", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=cmd_triton_repo)

    p = sub.add_parser("bench", help="measure scan-to-score, ingest rate and memory; print the numbers")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    p.add_argument("--out", help="also write the results as Markdown to this file")
    p.add_argument("--only", choices=["oru", "decode", "triton", "burst"],
                   help="run one case only: oru (scan-to-score with and without 1,000 ORU messages arriving over "
                        "MLLP), decode (reading one image per compressed transfer syntax), triton (per-study "
                        "latency and throughput on a Triton server against local ONNX Runtime, batch 1 and 4), "
                        "burst (1 to 16 scanners delivering 16 series at once, against one study's lower bound)")
    p.add_argument("--triton-url", help="--only triton: a running server (host:port) serving the bundle as "
                                        "--triton-model; default: start the local tritonserver (nvidia-pytriton)")
    p.add_argument("--triton-model", default="scanside_encoder", help="--only triton: the model name on that server")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `scanside results | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
    except ConfigError as exc:
        print(f"scanside: configuration error: {exc}", file=sys.stderr)
        return 2
    except BundleError as exc:
        print(f"scanside: engine bundle refused: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"scanside: inference backend refused: {exc}", file=sys.stderr)
        return 2
