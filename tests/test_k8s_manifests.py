"""deploy/k8s/ against the Kubernetes API's own schemas and against the appliance.

Every manifest, and everything each kustomization renders (kubectl's built-in kustomize, where kubectl is on PATH),
passes the OpenAPI-derived JSON schemas that kubernetes-validate ships, strictly (an unknown or misspelt field is an
error, as with `kubectl apply --validate=strict`), for the oldest Kubernetes the manifests claim and the newest the
package knows: no cluster and no network needed. A broken copy of the StatefulSet fails each way it can break. Then
the manifests must agree with what they run: the configuration they mount, read by the appliance's own loader (ports,
paths, TLS files, the probes' address), the Secrets' keys, the image's user, Triton's flags and health endpoints; and
the probes themselves, run as the kubelet runs them, against a real appliance over TLS.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings, load_settings

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra (kubernetes-validate needs it)")
kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                          reason="kubernetes-validate is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
APPLIANCE = K8S / "appliance"
TRITON = K8S / "triton"
OVERLAY = K8S / "overlays" / "north-general-mr2"
TOML = APPLIANCE / "scanside.toml"
KUBECTL = shutil.which("kubectl")
# The oldest Kubernetes the manifests are written for (docs/fleet.md), and the newest whose schemas are installed.
OLDEST = "1.28"
NEWEST = kubernetes_validate.utils.latest_version()
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not on PATH")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomizations() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomization(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))


def resource_files() -> list[Path]:
    """The manifests the kustomizations list as resources (files, not other kustomizations), and the Secret example
    that none applies."""
    found = {APPLIANCE / "secret.example.yaml"}
    for folder in kustomizations():
        for entry in kustomization(folder).get("resources", []):
            if (folder / entry).is_file():
                found.add((folder / entry).resolve())
    return sorted(found)


def validate(resource: dict[str, Any], version: str) -> None:
    """Raises kubernetes_validate's ValidationError (or SchemaNotFoundError for a kind or apiVersion it does not
    know) where `resource` is not a valid object of Kubernetes `version`."""
    kubernetes_validate.validate(resource, version, strict=True)


def rendered(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run([KUBECTL, "kustomize", str(folder)],  # type: ignore[list-item]
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    return found


def base_resources() -> list[dict[str, Any]]:
    return [d for path in resource_files() for d in docs(path)]


def container(pod_owner: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod_owner["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def settings():
    return load_settings(TOML, env={})


# --- the schemas ---------------------------------------------------------------------------------------------------

def test_every_file_under_deploy_k8s_is_a_resource_a_patch_or_a_generator_input():
    """Nothing there escapes the checks below: each YAML file is listed by a kustomization (as a resource, a patch
    or a ConfigMap's source) or is the Secret example."""
    listed = {APPLIANCE / "secret.example.yaml"}
    for folder in kustomizations():
        k = kustomization(folder)
        listed.add(folder / "kustomization.yaml")
        listed |= {(folder / e).resolve() for e in k.get("resources", []) if (folder / e).is_file()}
        listed |= {(folder / p["path"]).resolve() for p in k.get("patches", [])}
        for generator in k.get("configMapGenerator", []):
            listed |= {(folder / f.split("=")[-1]).resolve() for f in generator.get("files", [])}
    present = {p.resolve() for p in K8S.rglob("*") if p.is_file()}
    assert present <= listed, sorted(str(p.relative_to(K8S)) for p in present - listed)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_manifest_passes_the_kubernetes_schemas_strictly(version):
    resources = base_resources()
    assert {r["kind"] for r in resources} >= {"StatefulSet", "Deployment", "Service", "PersistentVolumeClaim",
                                               "NetworkPolicy", "Secret", "Namespace"}
    for resource in resources:
        validate(resource, version)


@needs_kubectl
@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_kustomization_renders_and_its_output_passes_the_schemas(version):
    for folder in kustomizations():
        out = rendered(folder)
        assert out, folder
        for resource in out:
            validate(resource, version)


BREAKAGES = {
    "a misspelt field": lambda s: container(s, "appliance").__setitem__(
        "readinesProbe", container(s, "appliance").pop("readinessProbe")),
    "a port that is no number": lambda s: container(s, "appliance")["ports"][0].__setitem__("containerPort", "dicom"),
    "no selector": lambda s: s["spec"].pop("selector"),
    "a handler's field on the probe itself": lambda s: container(s, "appliance")[
        "livenessProbe"].__setitem__("command", ["true"]),
    "a kind the API does not have": lambda s: s.__setitem__("kind", "StatefulSets"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_manifest_fails_the_validation(breakage):
    statefulset = one(docs(APPLIANCE / "statefulset.yaml"), "StatefulSet")
    validate(statefulset, NEWEST)  # the original passes...
    broken = copy.deepcopy(statefulset)
    BREAKAGES[breakage](broken)
    with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)):
        validate(broken, NEWEST)  # ...its broken copy does not


# --- the appliance's pod against its configuration ------------------------------------------------------------------

def test_the_mounted_configuration_loads_with_the_appliances_loader_alone_and_with_the_overlays_variables():
    s = settings()
    assert s.grpc.tls_cert is not None and s.dicom.enabled and s.hl7.enabled
    patch = docs(OVERLAY / "appliance-env.yaml")[0]
    overlay_env = {e["name"]: e["value"] for e in container(patch, "appliance")["env"]}
    assert overlay_env and all(name.startswith("SCANSIDE_") for name in overlay_env)
    with_overlay = load_settings(TOML, env=overlay_env)
    assert with_overlay.client.server_name == overlay_env["SCANSIDE_CLIENT_SERVER_NAME"]
    aets = overlay_env["SCANSIDE_DICOM_ALLOWED_CALLING_AETS"]
    assert with_overlay.dicom.allowed_calling_aets == tuple(aets.split(","))


def test_one_replica_one_volume_and_the_data_folder_on_it():
    statefulset = one(base_resources(), "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1  # SQLite: one writer, one appliance per volume
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m for m in container(statefulset, "appliance")["volumeMounts"]}
    data = Path(mounts[claim["metadata"]["name"]]["mountPath"])
    s = settings()
    assert s.paths.data_dir == data
    # the watch folder on the same volume: accepted files move into the spool by a rename
    assert s.paths.incoming.is_relative_to(data) and s.paths.spool.is_relative_to(data)


def test_ports_services_and_probes_match_the_configuration():
    resources = base_resources()
    statefulset = one(resources, "StatefulSet")
    app = container(statefulset, "appliance")
    s = settings()
    ports = {p["name"]: p["containerPort"] for p in app["ports"]}
    assert ports == {"dicom": s.dicom.port, "grpc": s.grpc.port, "mllp": s.hl7.port}
    assert (s.dicom.host, s.grpc.host, s.hl7.host) == ("0.0.0.0",) * 3  # reachable through the Services
    services = [r for r in resources if r["kind"] == "Service" and r["metadata"]["name"].startswith("scanside")]
    selector = statefulset["spec"]["template"]["metadata"]["labels"]
    served = {}
    for service in services:
        assert service["spec"]["selector"].items() <= selector.items(), service["metadata"]["name"]
        for p in service["spec"]["ports"]:
            served[p["targetPort"]] = p["port"]
    assert served == ports  # every listener has a Service on its own port...
    assert s.metrics.host == "127.0.0.1" and s.metrics.port not in served.values()  # ...and the metrics none
    # the probes run `scanside status` with the mounted configuration, which reaches the API on its port
    config_path = next(m["mountPath"] for m in app["volumeMounts"] if m["name"] == "config")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(app[probe]["exec"]["command"])
        assert f"scanside status --config {config_path}" in command, probe
    assert app["args"] == ["serve", "--config", config_path]
    assert s.client.address == f"127.0.0.1:{s.grpc.port}"


def test_tls_and_clients_files_come_from_the_secrets_with_the_keys_the_example_lists():
    statefulset = one(base_resources(), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    example = {d["metadata"]["name"]: set(d["stringData"]) for d in docs(APPLIANCE / "secret.example.yaml")}
    assert set(secrets.values()) == set(example)

    def from_secret(c: dict[str, Any], file: Path) -> None:
        mount = next(m for m in c["volumeMounts"] if file.is_relative_to(m["mountPath"]))
        assert mount["name"] in secrets, f"{file} is not on a Secret's mount"
        assert file.name in example[secrets[mount["name"]]], f"{file.name} is not a key of {secrets[mount['name']]}"

    s = settings()
    for file in (s.grpc.tls_cert, s.grpc.tls_key, s.grpc.clients_file, s.client.tls_ca):
        assert file is not None
        from_secret(container(statefulset, "appliance"), file)
    agent = yaml.safe_load((APPLIANCE / "agent.yml").read_text(encoding="utf-8"))
    for file in agent["remote_write"][0]["tls_config"].values():
        from_secret(container(statefulset, "prometheus-agent"), Path(file))


def test_the_triton_block_points_at_the_shared_server_with_files_from_the_optional_secret(tmp_path):
    """The [triton] table scanside.toml carries commented out: the Service and port of deploy/k8s/triton/, its TLS
    files on the mount of the optional Secret scanside-triton with the example's keys; and, once this build has the
    Triton backend's settings, the configuration with it switched on loads with the appliance's loader."""
    lines = TOML.read_text(encoding="utf-8").splitlines()
    start, end = lines.index("# [triton]"), lines.index("# <<< triton")
    block = [line.removeprefix("# ") for line in lines[start:end]]
    triton = tomllib.loads("\n".join(block))["triton"]
    resources = base_resources()
    service = one(resources, "Service", "triton")
    namespace = kustomization(TRITON)["namespace"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert triton["url"] == f"{service['metadata']['name']}.{namespace}.svc:{grpc_port}"
    statefulset = one(resources, "StatefulSet")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    example = {d["metadata"]["name"]: set(d["stringData"]) for d in docs(APPLIANCE / "secret.example.yaml")}
    for key in ("tls_ca", "tls_cert", "tls_key"):
        file = Path(triton[key])
        mount = next(m for m in container(statefulset, "appliance")["volumeMounts"]
                     if file.is_relative_to(m["mountPath"]))
        secret = volumes[mount["name"]]["secret"]
        assert secret["optional"] is True and file.name in example[secret["secretName"]], key
    if "triton" not in typing.get_type_hints(Settings):
        pytest.skip("this build has no [triton] settings (the Triton backend, docs/triton.md): the switched-on "
                    "configuration is loaded once it has")
    text = "\n".join(lines[:start] + block + lines[end:]).replace('backend = "onnxruntime"', 'backend = "triton"')
    (tmp_path / "scanside.toml").write_text(text, encoding="utf-8")
    switched = load_settings(tmp_path / "scanside.toml", env={})
    assert switched.engine.backend == "triton" and switched.triton.url == triton["url"]  # type: ignore[attr-defined]


def test_the_agent_scrapes_the_appliance_on_loopback_and_reads_the_files_it_is_given():
    statefulset = one(base_resources(), "StatefulSet")
    agent_container = container(statefulset, "prometheus-agent")
    agent = yaml.safe_load((APPLIANCE / "agent.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in agent["scrape_configs"] if j["job_name"] == "scanside"]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{settings().metrics.port}"]  # same pod, loopback
    script = agent_container["args"][0]
    mounts = {m["mountPath"] for m in agent_container["volumeMounts"]}
    flags = dict(re.findall(r"--([\w.-]+)=(\S+)", script))
    assert flags["config.file"] in mounts and flags["storage.agent.path"] in mounts
    assert "--agent" in script.split()
    # the identity variables come from the pod's labels, the ones the overlay sets
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent_container["env"]}
    overlay_labels = kustomization(OVERLAY)["labels"][0]["pairs"]
    assert env == {f"SCANSIDE_{key.split('/')[1].upper()}": f"metadata.labels['{key}']" for key in overlay_labels}
    assert set(agent["global"]["external_labels"]) == {key.split("/")[1] for key in overlay_labels}


def test_the_agents_start_script_refuses_a_pod_without_its_identity_labels(tmp_path):
    """The script of the agent container, run by a real /bin/sh, with Prometheus swapped for echo."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh here")
    script = container(one(base_resources(), "StatefulSet"), "prometheus-agent")["args"][0]
    assert "exec /bin/prometheus " in script
    script = script.replace("exec /bin/prometheus ", "exec echo prometheus ")
    full = {"SCANSIDE_SITE": "north-general", "SCANSIDE_APPLIANCE": "north-general-mr2", "SCANSIDE_ROOM": "mr-suite-2"}
    ok = subprocess.run([sh, "-c", script], env={"PATH": os.environ["PATH"], **full}, capture_output=True,
                        text=True, timeout=10)
    assert ok.returncode == 0 and ok.stdout.startswith("prometheus --agent --config.file="), ok
    for missing in full:
        env = {**full, missing: ""}  # what the downward API gives for a label the pod lacks
        refused = subprocess.run([sh, "-c", script], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                                 text=True, timeout=10)
        assert refused.returncode == 1 and "scanside/site, scanside/appliance" in refused.stderr, (missing, refused)
        assert not refused.stdout


def test_pods_run_unprivileged_read_only_with_resources_and_without_service_links():
    dockerfile = (ROOT / "deploy" / "cpu" / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    for owner in (one(base_resources(), "StatefulSet"), one(base_resources(), "Deployment")):
        pod = owner["spec"]["template"]["spec"]
        name = owner["metadata"]["name"]
        # Service links would put SCANSIDE_<SERVICE>_... variables into the environment: the appliance reads
        # SCANSIDE_<SECTION>_<KEY> as settings and refuses unknown ones.
        assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
            assert c.get("readinessProbe") and c.get("livenessProbe"), c["name"]
        if owner["kind"] == "StatefulSet":
            assert pod["securityContext"]["runAsUser"] == uid  # the image's scanside user owns nothing but its volume


# --- the shared Triton server -----------------------------------------------------------------------------------------

def test_triton_serves_grpc_and_metrics_on_a_gpu_with_its_health_endpoints_and_a_model_repository():
    resources = [d for path in resource_files() if path.is_relative_to(TRITON) for d in docs(path)]
    deployment = one(resources, "Deployment")
    triton = container(deployment, "tritonserver")
    args = dict(a[2:].split("=", 1) for a in triton["args"])
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": int(args["http-port"]), "grpc": int(args["grpc-port"]),
                     "metrics": int(args["metrics-port"])} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    service = one(resources, "Service", "triton")
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 8001, "metrics": 8002}
    for where in ("requests", "limits"):
        assert triton["resources"][where]["nvidia.com/gpu"] == 1
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    models = volumes[mounts[args["model-repository"]]]
    assert models["persistentVolumeClaim"]["claimName"] == one(resources, "PersistentVolumeClaim")["metadata"]["name"]
    assert args["grpc-use-ssl"] == args["grpc-use-ssl-mutual"] == "true"  # patient images cross the network
    tls_mount = next(path for path, name in mounts.items() if "secret" in volumes[name])
    for flag in ("grpc-server-cert", "grpc-server-key", "grpc-root-cert"):
        assert Path(args[flag]).parent == Path(tls_mount), flag


@needs_kubectl
def test_the_overlay_names_the_box_on_its_pod_and_gives_it_its_own_namespace():
    out = rendered(OVERLAY)
    statefulset = one(out, "StatefulSet")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    identity = {k: v for k, v in labels.items() if k.startswith("scanside/")}
    assert identity == kustomization(OVERLAY)["labels"][0]["pairs"]
    namespace = one(out, "Namespace")["metadata"]["name"]
    assert {r["metadata"].get("namespace") for r in out if r["kind"] != "Namespace"} == {namespace}
    assert container(statefulset, "appliance")["image"].startswith("registry.")
    # the generated ConfigMaps (hash-suffixed) are the ones the pod mounts
    maps = {r["metadata"]["name"] for r in out if r["kind"] == "ConfigMap"}
    mounted = {v["configMap"]["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert mounted == maps and all(re.fullmatch(r"scanside-(config|agent)-\w{10}", m) for m in maps)
    for name in ("scanside-dicom", "scanside-api", "scanside-mllp"):
        assert one(out, "Service", name)["spec"]["externalTrafficPolicy"] == "Local"


# --- the probes, run as the kubelet runs them ----------------------------------------------------------------------

@pytest.mark.slow
def test_the_probes_answer_from_a_real_appliance_over_tls_and_fail_once_it_is_gone(appliance, tmp_path):
    from tls_factory import OPENSSL, TestCA

    if OPENSSL is None:
        pytest.skip("openssl is needed to make test certificates")
    cli = Path(sys.executable).parent / "scanside"
    if not cli.exists():
        pytest.skip(f"no scanside console script beside {sys.executable} (pip install -e .)")
    ca = TestCA(tmp_path / "ca")
    key, cert = ca.issue("scanside-mr2")
    app = appliance(grpc={"tls_cert": str(cert), "tls_key": str(key)})
    # The pod's configuration with this host's files and ports in place of the pod's.
    text = TOML.read_text(encoding="utf-8")
    text = text.replace('"/etc/scanside/tls/ca.crt"', f'"{ca.cert}"').replace(
        '"127.0.0.1:50051"', f'"{app.grpc_address}"')
    config = tmp_path / "scanside.toml"
    config.write_text(text, encoding="utf-8")
    assert load_settings(config, env={}).client.tls_ca == ca.cert

    app_container = container(one(base_resources(), "StatefulSet"), "appliance")
    env = {"PATH": f"{cli.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "SCANSIDE_CLIENT_SERVER_NAME": "localhost"}  # the name in the test certificate, as the overlay sets it

    def probe(name: str) -> int:
        command = [part.replace("/etc/scanside/scanside.toml", str(config)) for part in
                   app_container[name]["exec"]["command"]]
        if command[0] == "scanside":
            command[0] = str(cli)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        return done.returncode

    assert [probe(p) for p in ("startupProbe", "readinessProbe", "livenessProbe")] == [0, 0, 0]
    env["SCANSIDE_CLIENT_SERVER_NAME"] = "someone-else.example.org"  # a certificate for another name: refused
    assert probe("readinessProbe") != 0
    env["SCANSIDE_CLIENT_SERVER_NAME"] = "localhost"
    app.stop()
    assert probe("readinessProbe") != 0 and probe("livenessProbe") != 0  # nothing answers: not ready, and dead

