#!/usr/bin/env python3
"""Lint of deploy/ and the man page: what can be checked without a container
engine, a Kubernetes cluster or systemd as PID 1.

    python3 tests/deploy/lint.py BUILD/churnwatch

Registered as the ctest test unit.deploy_lint. Nothing under deploy/ can run
on the development machine, so this checks, file by file and across files:

  * every YAML file under deploy/ parses (all documents, no duplicate keys),
    and so does every JSON file;
  * the metric and label names used by the Grafana dashboard and the
    Prometheus rules exist in what app/cw_metrics.c renders (read from the
    C source: string literals, the histogram and counter tables, sample1()
    and render_family() label keys), histogram series included (_bucket
    with le, _sum, _count);
  * deploy/config/churnwatch.json passes `churnwatch check-config`, also
    with the environment overrides compose and Kubernetes set;
  * compose.yaml: Kafka in KRaft mode, the topic-creation job creates the
    config's topics, Redis, churnwatch with 2 replicas in one consumer group,
    Prometheus and Grafana, pinned images, and every mounted path exists;
  * prometheus.yml scrapes the churnwatch service on the http.listen port;
    its rule files exist (`promtool check config/rules` when installed);
  * Grafana's datasource uid is the one the dashboard uses;
  * k8s/: namespace-less objects, the ConfigMap holds exactly
    deploy/config/churnwatch.json, the Deployment has 2 replicas, liveness
    /healthz and readiness /readyz probes on the listener's port, requests
    and limits, a non-root read-only security context matching the image's
    USER, and Service/PDB selectors that select its pods;
  * Dockerfile: >= 2 stages on Debian bookworm slim, tests off in the build,
    a non-root runtime stage without -dev packages that installs the
    Debian package of every shared library the binary needs (readelf+dpkg),
    and a .dockerignore that keeps the sources CMake needs;
  * the systemd unit: hardening and stop settings (`systemd-analyze verify`
    when installed);
  * docs/churnwatch.1: `groff -man -z -wall -wmac` is silent (when groff is
    installed) and every option of every subcommand's --help is documented.

Exit status 0 when everything passes, 1 otherwise (each failure is printed
with its file), 2 on a usage error.
"""

import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
CONFIG = os.path.join(DEPLOY, "config", "churnwatch.json")
COMPOSE = os.path.join(DEPLOY, "compose.yaml")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
UNIT = os.path.join(DEPLOY, "systemd", "churnwatch.service")
MANPAGE = os.path.join(ROOT, "docs", "churnwatch.1")
METRICS_C = os.path.join(ROOT, "app", "cw_metrics.c")

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Services compose.yaml must define (the topic job is found by its command).
COMPOSE_SERVICES = ("kafka", "redis", "churnwatch", "prometheus", "grafana")
# Metrics the Grafana dashboard must show at least.
DASHBOARD_CORE = ("churnwatch_events_in_total", "churnwatch_dead_lettered_total",
                  "churnwatch_alerts_total", "churnwatch_consumer_lag",
                  "churnwatch_batch_duration_seconds_bucket")
# Runtime packages already in debian:bookworm-slim.
BASE_PACKAGES = {"libc6", "libgcc-s1"}
SUBCOMMANDS = ("run", "broker", "explain", "check-config", "config-docs", "gen")


class Lint:
    """Collects failures; every check names the file it is about."""

    def __init__(self):
        self.failures = []
        self.notes = []

    def fail(self, where, msg):
        line = f"{rel(where)}: {msg}"
        if line not in self.failures:
            self.failures.append(line)

    def check(self, cond, where, msg):
        if not cond:
            self.fail(where, msg)
        return bool(cond)

    def note(self, msg):
        self.notes.append(msg)


def rel(path):
    if isinstance(path, str) and path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    return path


def run(cmd, env=None, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


# --------------------------------------------------------------------------
# Parsing: YAML without duplicate keys, JSON without duplicate keys
# --------------------------------------------------------------------------

class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _no_dup_pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=_no_dup_pairs)


def parse_deploy_tree(lint):
    """Parse every YAML and JSON file under deploy/; returns {path: [docs]}."""
    parsed = {}
    n_yaml = n_json = 0
    for dirpath, dirnames, filenames in os.walk(DEPLOY):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                if name.endswith((".yaml", ".yml")):
                    n_yaml += 1
                    with open(path, encoding="utf-8") as f:
                        parsed[path] = [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]
                    lint.check(parsed[path], path, "no YAML document in the file")
                elif name.endswith(".json"):
                    n_json += 1
                    parsed[path] = [load_json(path)]
            except (yaml.YAMLError, ValueError) as e:
                lint.fail(path, f"does not parse: {e}")
    lint.check(n_yaml >= 5, DEPLOY, f"expected the compose, Prometheus, Grafana and k8s YAML files, found {n_yaml}")
    lint.check(n_json >= 2, DEPLOY, f"expected the config and the Grafana dashboard JSON, found {n_json}")
    lint.note(f"parsed {n_yaml} YAML and {n_json} JSON files under deploy/")
    return parsed


def doc(parsed, path, lint):
    docs = parsed.get(path)
    if not docs:
        lint.check(os.path.exists(path), path, "missing")
        return None
    return docs[0]


# --------------------------------------------------------------------------
# The metrics app/cw_metrics.c renders
# --------------------------------------------------------------------------

C_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def strip_c_comments(src):
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src[i] == '"':
            m = C_STRING.match(src, i)
            if m is None:
                out.append(src[i])
                i += 1
            else:
                out.append(m.group(0))
                i = m.end()
        elif src[i] == "'":
            m = re.compile(r"'(?:[^'\\\n]|\\.)*'").match(src, i)
            j = m.end() if m else i + 1
            out.append(src[i:j])
            i = j
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


def table_block(src, name):
    m = re.search(r"\b" + name + r"\s*\[[^\]]*\]\s*=\s*\{", src)
    if m is None:
        return ""
    depth, i = 1, m.end()
    while i < len(src) and depth:
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
    return src[m.end():i]


def source_metrics(lint):
    """{series name: set of label names} for every series cw_metrics.c renders."""
    with open(METRICS_C, encoding="utf-8") as f:
        src = strip_c_comments(f.read())
    names = set(re.findall(r'"(churnwatch_[A-Za-z0-9_]+)', src))
    hists = set(re.findall(r'"(churnwatch_[A-Za-z0-9_]+)"', table_block(src, "hist_defs")))
    labels = {n: set() for n in names}
    for name, key in re.findall(r'(?:sample1|render_family)\(\s*\w+\s*,\s*"(churnwatch_[A-Za-z0-9_]+)"\s*,\s*"(\w+)"', src):
        labels[name].add(key)
    # Label sets written inline: "name{a=\"%s\",b=\"%s\"}", possibly continued
    # by the next literals until the closing brace.
    current = None
    for lit in C_STRING.findall(src):
        m = re.match(r"(churnwatch_[A-Za-z0-9_]+)\{", lit)
        if m:
            current = m.group(1)
        if current is not None and (m or '=\\"' in lit):
            labels[current].update(re.findall(r'(\w+)=\\"', lit))
            if "}" in lit:
                current = None
    lint.check('_bucket{le=\\"' in src, METRICS_C, "histograms no longer render _bucket{le=...}: update this lint")
    series = {}
    for n in names:
        if n in hists:
            series[n + "_bucket"] = labels[n] | {"le"}
            series[n + "_sum"] = set(labels[n])
            series[n + "_count"] = set(labels[n])
        else:
            series[n] = labels[n]
    # The extractor must still understand the source: a few known facts.
    ok = (len(names) >= 10 and hists and "type" in series.get("churnwatch_events_in_total", ())
          and "partition" in series.get("churnwatch_consumer_lag", ()))
    lint.check(ok, METRICS_C, "cannot read the metric names/labels any more (extractor out of date)")
    lint.note(f"{len(names)} metrics ({len(hists)} histograms) read from app/cw_metrics.c")
    return series, hists


# --------------------------------------------------------------------------
# PromQL names and labels
# --------------------------------------------------------------------------

PROMQL_NAME = re.compile(r"(?<![\w:$])(churnwatch_[A-Za-z0-9_]+)")
PROMQL_SELECTOR = re.compile(r"(?<![\w:$])(churnwatch_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
PROMQL_AGGREGATION = re.compile(
    r"\b(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*(\(|by\b|without\b)")
PROMQL_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def check_promql(lint, where, expr, series, hists, legend=None):
    """Every churnwatch_ name is a rendered series; every label used exists."""
    used = PROMQL_NAME.findall(expr)
    known = True
    allowed = set(TARGET_LABELS)
    for name in used:
        if name in series:
            allowed |= series[name]
            continue
        known = False
        if name in hists:
            lint.fail(where, f"{name} is a histogram: use {name}_bucket, _sum or _count (in: {expr.strip()})")
        else:
            hint = difflib.get_close_matches(name, list(series), 1)
            lint.fail(where, f"unknown metric {name}" + (f" (did you mean {hint[0]}?)" if hint else "")
                      + f" (in: {expr.strip()})")
    for name, matchers in PROMQL_SELECTOR.findall(expr):
        if name not in series:
            continue
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", re.sub(r'"(?:[^"\\]|\\.)*"', '""', matchers)):
            lint.check(label in series[name] | TARGET_LABELS | {"__name__"}, where,
                       f"{name} has no label {label!r} (it has {sorted(series[name])})")
    # Grouping labels are checked when every metric of the expression is ours.
    others = set(re.findall(r"(?<![\w:$])([a-zA-Z_:][\w:]*)\s*(?:\{|\[)", expr)) - set(used)
    if used and known and not others:
        for _, labels in PROMQL_GROUPING.findall(expr):
            for label in filter(None, (s.strip() for s in labels.split(","))):
                lint.check(label in allowed, where, f"label {label!r} is not on {sorted(set(used))} (in: {expr.strip()})")
        # A legend or annotation shows the result's labels: after an
        # aggregation only its by-labels are left (none without a by).
        result = allowed
        if PROMQL_AGGREGATION.search(expr):
            groupings = PROMQL_GROUPING.findall(expr)
            if not any(kind == "without" for kind, _ in groupings):
                result = {x.strip() for kind, labels in groupings if kind == "by" for x in labels.split(",")}
        for label in legend or ():
            lint.check(label in result, where, f"legend/annotation label {label!r} is not on the result of "
                       f"{expr.strip()} (labels: {sorted(result - {''})})")
    return used


# --------------------------------------------------------------------------
# compose helpers
# --------------------------------------------------------------------------

def interpolate(value):
    """Compose variable interpolation with the defaults: ${X:-d} -> d, $$ -> $."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{[A-Za-z_]\w*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value.replace("$$", "$")


def service_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(interpolate(v)) for k, v in env.items()}


def bind_mounts(svc):
    """[(host path, container path)] of the service's bind mounts."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            src, dst = parts[0], parts[1] if len(parts) > 1 else None
        else:
            src, dst = v.get("source"), v.get("target")
            if v.get("type") not in (None, "bind"):
                continue
        if dst and src and src.startswith((".", "/")):
            out.append((os.path.normpath(os.path.join(DEPLOY, src)), dst))
    return out


def host_path(svc, container_path):
    """The repository path a container path of the service comes from, or None."""
    best = None
    for src, dst in bind_mounts(svc):
        d = dst.rstrip("/")
        if container_path == d or container_path.startswith(d + "/"):
            if best is None or len(d) > len(best[1]):
                best = (src, d)
    if best is None:
        return None
    return os.path.normpath(best[0] + container_path[len(best[1]):])


def command_list(svc):
    cmd = svc.get("command")
    if isinstance(cmd, str):
        return cmd.split()
    return [str(interpolate(c)) for c in cmd or []]


def option(args, name):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def listen_port(listen):
    m = re.search(r":(\d+)$", listen or "")
    return int(m.group(1)) if m else None


def check_config_run(lint, binary, where, env_overrides, label):
    """churnwatch check-config CONFIG with only these CW_* overrides set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    env.update(env_overrides)
    try:
        r = run([binary, "check-config", CONFIG], env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        lint.fail(where, f"cannot run {binary} check-config: {e}")
        return
    shown = " ".join(f"{k}={v}" for k, v in sorted(env_overrides.items()) if "PASSWORD" not in k)
    lint.check(r.returncode == 0, where,
               f"check-config {label}{' with ' + shown if shown else ''} exits {r.returncode}: "
               f"{(r.stderr or r.stdout).strip()}")


def effective_config(config, env):
    """The config keys that matter here, with CW_* overrides applied."""
    def get(key, default=None):
        name = "CW_" + key.upper().replace(".", "_")
        if name in env:
            return env[name]
        node = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node
    return {
        "brokers": get("kafka.brokers", ""),
        "group_id": get("kafka.group_id", "churnwatch"),
        "topics": {get("kafka.input_topic"), get("kafka.alert_topic", "churn-alerts"),
                   get("kafka.score_topic", "account-scores"), get("kafka.dlq_topic", "events-dlq")},
        "input_topic": get("kafka.input_topic"),
        "redis_url": get("redis.url", ""),
        "listen": get("http.listen", ""),
    }


# --------------------------------------------------------------------------
# compose.yaml, Prometheus, Grafana
# --------------------------------------------------------------------------

def lint_compose(lint, parsed, binary, config, series, hists):
    compose = doc(parsed, COMPOSE, lint)
    if not isinstance(compose, dict):
        return
    services = compose.get("services") or {}
    for name in COMPOSE_SERVICES:
        lint.check(name in services, COMPOSE, f"no service {name!r}")
    for name, svc in services.items():
        image = svc.get("image", "")
        lint.check(image and ":" in image.split("/")[-1] and not image.endswith(":latest"), COMPOSE,
                   f"service {name}: image {image!r} is not pinned to a version")
        for src, dst in bind_mounts(svc):
            lint.check(os.path.exists(src), COMPOSE, f"service {name}: mounted {rel(src)} does not exist")
    if not all(n in services for n in COMPOSE_SERVICES):
        return

    # Kafka in KRaft mode.
    kafka = services["kafka"]
    kenv = service_env(kafka)
    lint.check(kafka.get("image", "").startswith("apache/kafka:"), COMPOSE, "kafka: not the apache/kafka image")
    roles = set(kenv.get("KAFKA_PROCESS_ROLES", "").replace(" ", "").split(","))
    lint.check({"broker", "controller"} <= roles, COMPOSE, "kafka: KAFKA_PROCESS_ROLES is not broker,controller (KRaft)")
    lint.check(kenv.get("KAFKA_CONTROLLER_QUORUM_VOTERS"), COMPOSE, "kafka: no KAFKA_CONTROLLER_QUORUM_VOTERS")
    lint.check(not any("zookeeper" in n or "ZOOKEEPER" in "".join(service_env(s)) for n, s in services.items()),
               COMPOSE, "ZooKeeper found: the compose file runs Kafka in KRaft mode")
    kafka_ports = {int(p) for p in re.findall(r"PLAINTEXT://[^:,]*:(\d+)", kenv.get("KAFKA_LISTENERS", ""))}

    # churnwatch: two replicas in one group, the config file, env overrides.
    # Every service that runs the processor counts (replicas of one service,
    # or several services): together 2 processes, all with one group id.
    runners = {n: sv for n, sv in services.items() if command_list(sv)[:1] == ["run"]}
    total = sum(int((sv.get("deploy") or {}).get("replicas", 1)) for sv in runners.values())
    lint.check(total == 2, COMPOSE, f"{total} churnwatch processes ({sorted(runners)}), expected 2 replicas")
    groups = {n: effective_config(config, service_env(sv))["group_id"] for n, sv in runners.items()}
    lint.check(len(set(groups.values())) == 1, COMPOSE, f"the churnwatch processes are not in one consumer group: {groups}")
    cw = services["churnwatch"]
    replicas = (cw.get("deploy") or {}).get("replicas")
    lint.check(replicas == 2, COMPOSE, f"churnwatch: deploy.replicas is {replicas!r}, expected 2")
    lint.check("container_name" not in cw, COMPOSE, "churnwatch: container_name prevents replicas")
    cwenv = service_env(cw)
    args = command_list(cw)
    lint.check("churnwatch" in runners, COMPOSE, f"churnwatch: command is not 'run ...': {args}")
    cfg_path = option(args, "--config")
    src = host_path(cw, cfg_path) if cfg_path else None
    lint.check(src == CONFIG, COMPOSE, f"churnwatch: --config {cfg_path} is not deploy/config/churnwatch.json mounted")
    check_config_run(lint, binary, COMPOSE, {k: v for k, v in cwenv.items() if k.startswith("CW_")}, "(compose environment)")
    eff = effective_config(config, cwenv)
    for hostport in str(eff["brokers"]).split(","):
        host, _, port = hostport.strip().rpartition(":")
        lint.check(host in services, COMPOSE, f"churnwatch: broker host {host!r} is not a compose service")
        lint.check(not kafka_ports or (port.isdigit() and int(port) in kafka_ports), COMPOSE,
                   f"churnwatch: broker port {port} is not a PLAINTEXT listener port of kafka {sorted(kafka_ports)}")
    m = re.match(r"tcp://([^:/]+):(\d+)", str(eff["redis_url"]))
    lint.check(m and m.group(1) in services, COMPOSE, f"churnwatch: redis.url {eff['redis_url']!r} is not a compose service")
    port = listen_port(eff["listen"])
    lint.check(port is not None, COMPOSE, "churnwatch: no http.listen port (Prometheus needs /metrics)")
    hc = " ".join(map(str, (cw.get("healthcheck") or {}).get("test") or []))
    lint.check(f"/{port}" in hc and "/healthz" in hc, COMPOSE, f"churnwatch: healthcheck does not probe /healthz on port {port}")
    deps = cw.get("depends_on") or {}
    lint.check("redis" in deps, COMPOSE, "churnwatch: does not depend on redis")

    # The one-shot topic job: creates every topic of the config.
    init = [n for n, s in services.items() if "kafka-topics" in " ".join(command_list(s)) + str(s.get("entrypoint", ""))]
    if lint.check(init, COMPOSE, "no topic-creation service (kafka-topics.sh --create)"):
        name = init[0]
        svc = services[name]
        lint.check(svc.get("restart", "no") in ("no", False), COMPOSE, f"{name}: a one-shot job must not restart")
        cond = (deps.get(name) or {}).get("condition") if isinstance(deps, dict) else None
        lint.check(cond == "service_completed_successfully", COMPOSE,
                   f"churnwatch: must depend on {name} with condition service_completed_successfully")
        cmd = svc.get("command")
        script = "\n".join(str(interpolate(c)) for c in cmd) if isinstance(cmd, list) else str(interpolate(cmd))
        created = {}
        for line in script.splitlines():
            t = re.search(r"--topic\s+(\S+)", line)
            if t and "--list" not in line:
                p = re.search(r"--partitions\s+(\d+)", line)
                created[t.group(1)] = int(p.group(1)) if p else None
        missing = sorted(t for t in eff["topics"] if t not in created)
        lint.check(not missing, COMPOSE, f"{name}: does not create the config's topics {missing}")
        parts = created.get(eff["input_topic"])
        lint.check(parts is None or parts >= total, COMPOSE,
                   f"{name}: input topic has {parts} partitions, fewer than the {total} replicas")

    # Prometheus: its config file, the scrape job, the rule files.
    prom = services["prometheus"]
    prom_cfg = option(command_list(prom), "--config.file") or "/etc/prometheus/prometheus.yml"
    prom_path = host_path(prom, prom_cfg)
    if lint.check(prom_path and prom_path in parsed, COMPOSE, f"prometheus: {prom_cfg} is not a mounted file of deploy/"):
        lint_prometheus(lint, parsed, prom_path, prom, port, series, hists)

    # Grafana: provisioning and the dashboards directory.
    graf = services["grafana"]
    prov = host_path(graf, "/etc/grafana/provisioning")
    if lint.check(prov and os.path.isdir(prov), COMPOSE, "grafana: /etc/grafana/provisioning is not mounted from deploy/"):
        lint_grafana(lint, parsed, prov, graf, series, hists)


def lint_prometheus(lint, parsed, path, prom_svc, port, series, hists):
    cfg = doc(parsed, path, lint)
    if not isinstance(cfg, dict):
        return
    jobs = [j for j in cfg.get("scrape_configs") or [] if "churnwatch" in json.dumps(j)]
    if lint.check(jobs, path, "no scrape job for churnwatch"):
        job = jobs[0]
        lint.check(job.get("metrics_path", "/metrics") == "/metrics", path, "churnwatch job: metrics_path is not /metrics")
        targets = []
        for sd in job.get("dns_sd_configs") or []:
            targets += [f"{n}:{sd.get('port')}" for n in sd.get("names") or []]
        for sc in job.get("static_configs") or []:
            targets += sc.get("targets") or []
        lint.check(f"churnwatch:{port}" in targets, path,
                   f"churnwatch job does not scrape churnwatch:{port} (http.listen), targets {targets}")
    rule_paths = []
    for rf in cfg.get("rule_files") or []:
        hp = host_path(prom_svc, rf) if rf.startswith("/") else os.path.join(os.path.dirname(path), rf)
        if lint.check(hp and hp in parsed, path, f"rule file {rf} is not a parsed file of deploy/"):
            rule_paths.append((rf, hp))
            lint_rules(lint, parsed, hp, series, hists)
    promtool = shutil.which("promtool")
    if promtool is None:
        lint.note("promtool not installed: Prometheus files checked by this lint only")
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = dict(cfg)
        copy["rule_files"] = [hp for _, hp in rule_paths]
        tmp_cfg = os.path.join(tmp, "prometheus.yml")
        with open(tmp_cfg, "w", encoding="utf-8") as f:
            yaml.safe_dump(copy, f)
        r = run([promtool, "check", "config", "--syntax-only", tmp_cfg])
        if r.returncode != 0 and "syntax-only" in (r.stderr + r.stdout):
            r = run([promtool, "check", "config", tmp_cfg])
        if lint.check(r.returncode == 0, path, f"promtool check config: {(r.stdout + r.stderr).strip()}"):
            lint.note("promtool check config and check rules passed")


def lint_rules(lint, parsed, path, series, hists):
    rules = doc(parsed, path, lint)
    n = 0
    for group in (rules or {}).get("groups") or []:
        for rule in group.get("rules") or []:
            n += 1
            expr = str(rule.get("expr", ""))
            name = rule.get("alert") or rule.get("record")
            lint.check(name and expr, path, f"rule without a name or an expr: {rule}")
            texts = " ".join(str(v) for v in (rule.get("annotations") or {}).values())
            check_promql(lint, f"{rel(path)} ({name})", expr, series, hists,
                         legend=re.findall(r"\$labels\.(\w+)", texts))
    lint.check(n > 0, path, "no rules")
    promtool = shutil.which("promtool")
    if promtool:
        r = run([promtool, "check", "rules", path])
        lint.check(r.returncode == 0, path, f"promtool check rules: {(r.stdout + r.stderr).strip()}")


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def lint_grafana(lint, parsed, prov, graf_svc, series, hists):
    uids = set()
    providers = []
    for path, docs in parsed.items():
        if not path.startswith(prov + os.sep):
            continue
        for d in docs:
            for ds in (d or {}).get("datasources") or []:
                lint.check(ds.get("type") == "prometheus" and ds.get("uid"), path, f"datasource {ds.get('name')}: no uid or not prometheus")
                lint.check(re.match(r"https?://prometheus:9090/?$", str(ds.get("url", ""))), path,
                           f"datasource {ds.get('name')}: url {ds.get('url')} is not the prometheus service")
                uids.add(ds.get("uid"))
            providers += (d or {}).get("providers") or []
    lint.check(uids, prov, "no provisioned datasource")
    if not lint.check(providers, prov, "no dashboard provider"):
        return
    dashboards = []
    for prv in providers:
        cpath = (prv.get("options") or {}).get("path", "")
        hp = host_path(graf_svc, cpath)
        if lint.check(hp and os.path.isdir(hp), prov, f"provider path {cpath} is not a mounted directory of deploy/"):
            dashboards += sorted(os.path.join(hp, f) for f in os.listdir(hp) if f.endswith(".json"))
    if not lint.check(dashboards, prov, "no dashboard JSON in the provider's directory"):
        return
    for path in dashboards:
        dash = doc(parsed, path, lint)
        if not isinstance(dash, dict):
            continue
        lint.check(dash.get("uid") and dash.get("title") and dash.get("panels"), path, "dashboard without uid, title or panels")
        used, ids = set(), []
        for p in walk_panels(dash.get("panels")):
            ids.append(p.get("id"))
            where = f"{rel(path)} (panel {p.get('title')!r})"
            lint.check(isinstance(p.get("gridPos"), dict), where, "no gridPos")
            for obj in [p] + list(p.get("targets") or []):
                ds = obj.get("datasource")
                if isinstance(ds, dict) and ds.get("type") != "grafana" and not str(ds.get("uid", "")).startswith("$"):
                    lint.check(ds.get("uid") in uids, where, f"datasource uid {ds.get('uid')!r} is not provisioned {sorted(uids)}")
            if p.get("type") != "row":
                lint.check(p.get("targets"), where, "panel without queries")
            for t in p.get("targets") or []:
                legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", str(t.get("legendFormat", "")))
                used |= set(check_promql(lint, where, str(t.get("expr", "")), series, hists, legend=legend))
        dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        lint.check(not dup, path, f"duplicate panel ids {dup}")
        for var in (dash.get("templating") or {}).get("list") or []:
            q = var.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q or "")
            where = f"{rel(path)} (variable {var.get('name')})"
            for metric, label in re.findall(r"label_values\(\s*([^,()]+?)\s*,\s*(\w+)\s*\)", q):
                used |= set(check_promql(lint, where, metric, series, hists, legend=[label]))
            ds = var.get("datasource")
            if isinstance(ds, dict):
                lint.check(ds.get("uid") in uids, where, f"datasource uid {ds.get('uid')!r} is not provisioned")
        missing = [m for m in DASHBOARD_CORE if m not in used]
        lint.check(not missing, path, f"the dashboard does not show {missing}")
        lint.note(f"dashboard {rel(path)}: {len(ids)} panels, {len(used)} distinct churnwatch series")


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------

def quantity(q):
    """Kubernetes quantity -> float (cores or bytes)."""
    m = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(q))
    if not m:
        return None
    mult = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}[m.group(2)]
    return float(m.group(1)) * mult


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def lint_k8s(lint, parsed, binary, config, image_uid):
    kdir = os.path.join(DEPLOY, "k8s")
    objs = []
    for path, docs in sorted(parsed.items()):
        if path.startswith(kdir + os.sep):
            for d in docs:
                objs.append((path, d))
    by_kind = {}
    for path, o in objs:
        ok = isinstance(o, dict) and o.get("apiVersion") and o.get("kind") and (o.get("metadata") or {}).get("name")
        if lint.check(ok, path, "object without apiVersion, kind or metadata.name"):
            lint.check("namespace" not in o["metadata"], path,
                       f"{o['kind']} {o['metadata']['name']}: has a namespace (apply with kubectl -n instead)")
            by_kind.setdefault(o["kind"], []).append((path, o))
    for kind in ("ConfigMap", "Deployment", "Service"):
        lint.check(kind in by_kind, kdir, f"no {kind}")
    if "Deployment" not in by_kind:
        return
    path, dep = by_kind["Deployment"][0]
    spec = dep.get("spec") or {}
    lint.check(spec.get("replicas") == 2, path, f"replicas is {spec.get('replicas')!r}, expected 2")
    tmpl = spec.get("template") or {}
    pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    lint.check(selects((spec.get("selector") or {}).get("matchLabels"), pod_labels), path,
               "spec.selector does not select the pod template's labels")
    pod = tmpl.get("spec") or {}
    containers = pod.get("containers") or []
    if not lint.check(containers, path, "no container"):
        return
    c = next((x for x in containers if x.get("name") == "churnwatch"), containers[0])
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}

    def probe_port(probe):
        p = ((probe or {}).get("httpGet") or {}).get("port")
        return ports.get(p) if isinstance(p, str) else p

    live, ready = c.get("livenessProbe"), c.get("readinessProbe")
    lint.check(((live or {}).get("httpGet") or {}).get("path") == "/healthz", path, "no livenessProbe httpGet /healthz")
    lint.check(((ready or {}).get("httpGet") or {}).get("path") == "/readyz", path, "no readinessProbe httpGet /readyz")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            lint.check(quantity((res.get(kind) or {}).get(r)) is not None, path, f"resources.{kind}.{r} missing or invalid")
    for r in ("cpu", "memory"):
        lo, hi = quantity((res.get("requests") or {}).get(r)), quantity((res.get("limits") or {}).get(r))
        if lo is not None and hi is not None:
            lint.check(lo <= hi, path, f"resources: {r} request above its limit")
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    lint.check(psc.get("runAsNonRoot") or csc.get("runAsNonRoot"), path, "runAsNonRoot is not set")
    lint.check(csc.get("readOnlyRootFilesystem") is True, path, "readOnlyRootFilesystem is not true")
    lint.check(csc.get("allowPrivilegeEscalation") is False, path, "allowPrivilegeEscalation is not false")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    lint.check(uid not in (None, 0), path, "runAsUser must be a non-zero uid")
    if image_uid is not None and uid is not None:
        lint.check(uid == image_uid, path, f"runAsUser {uid} differs from the image's USER {image_uid} (deploy/Dockerfile)")
    lint.check((pod.get("terminationGracePeriodSeconds") or 30) >= 15, path, "terminationGracePeriodSeconds below 15 s")

    # The config: --config path -> a configMap volume -> the ConfigMap's key.
    args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
    cfg_path = option(args, "--config")
    lint.check("run" in args and cfg_path, path, f"container does not run 'run --config FILE': {args}")
    cm_name = key = None
    for m in c.get("volumeMounts") or []:
        if cfg_path and cfg_path.startswith(m.get("mountPath", "").rstrip("/") + "/"):
            vol = next((v for v in pod.get("volumes") or [] if v.get("name") == m.get("name")), {})
            cm_name = (vol.get("configMap") or {}).get("name")
            key = cfg_path[len(m["mountPath"].rstrip("/")) + 1:]
    lint.check(cm_name, path, f"--config {cfg_path} is not on a mounted ConfigMap")
    cms = {o["metadata"]["name"]: (p, o) for p, o in by_kind.get("ConfigMap", [])}
    if lint.check(cm_name in cms, path, f"ConfigMap {cm_name!r} is not in deploy/k8s/"):
        cpath, cm = cms[cm_name]
        text = (cm.get("data") or {}).get(key)
        if lint.check(text is not None, cpath, f"no data key {key!r}"):
            try:
                lint.check(json.loads(text, object_pairs_hook=_no_dup_pairs) == config, cpath,
                           f"data {key!r} differs from deploy/config/churnwatch.json")
            except ValueError as e:
                lint.fail(cpath, f"data {key!r} is not JSON: {e}")
    env = {e["name"]: str(e["value"]) for e in c.get("env") or [] if "value" in e}
    check_config_run(lint, binary, path, {k: v for k, v in env.items() if k.startswith("CW_")}, "(Deployment environment)")
    port = listen_port(effective_config(config, env)["listen"])
    lint.check(port in ports.values(), path, f"no containerPort {port} (http.listen)")
    lint.check(probe_port(live) == port and probe_port(ready) == port, path, f"probes do not use port {port} (http.listen)")
    ann = (tmpl.get("metadata") or {}).get("annotations") or {}
    if "prometheus.io/port" in ann:
        lint.check(str(ann["prometheus.io/port"]) == str(port), path, "prometheus.io/port is not the http.listen port")

    for spath, svc in by_kind.get("Service", []):
        sspec = svc.get("spec") or {}
        lint.check(selects(sspec.get("selector"), pod_labels), spath, "selector does not select the Deployment's pods")
        for p in sspec.get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            lint.check(tp in ports or tp in ports.values(), spath, f"targetPort {tp!r} is not a container port")
    for ppath, pdb in by_kind.get("PodDisruptionBudget", []):
        lint.check(selects(((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels"), pod_labels), ppath,
                   "selector does not select the Deployment's pods")


# --------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------

def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with continuations joined and comments dropped."""
    out, buf = [], ""
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.rstrip("\n")
            if not buf and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if buf and s.lstrip().startswith("#"):
                continue
            if s.rstrip().endswith("\\"):
                buf += s.rstrip()[:-1] + " "
                continue
            buf += s
            parts = buf.strip().split(None, 1)
            out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
            buf = ""
    return out


def apt_packages(run_args):
    pkgs = []
    for m in re.finditer(r"apt-get\s+install\s+([^&;|]*)", run_args):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-") and "=" not in w]
    return pkgs


def needed_packages(lint, binary):
    """Debian packages providing the shared libraries the binary links, or None."""
    if not (shutil.which("readelf") and shutil.which("dpkg") and shutil.which("ldconfig")):
        lint.note("readelf/dpkg/ldconfig missing: runtime packages not checked against the binary")
        return None
    r = run(["readelf", "-d", binary])
    sonames = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    cache = run(["ldconfig", "-p"]).stdout
    pkgs = {}
    for so in sonames:
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.", so):
            continue  # sanitizer builds only; the image builds without them
        m = re.search(r"^\s*" + re.escape(so) + r" \([^)]*\) => (\S+)", cache, re.M)
        pkg = None
        if m:
            p = m.group(1)
            cands = {p, os.path.realpath(p)}
            cands |= {c[4:] if c.startswith("/usr/") else "/usr" + c for c in list(cands)}
            for cand in cands:
                d = run(["dpkg", "-S", cand])
                if d.returncode == 0:
                    pkg = d.stdout.split(":", 1)[0].strip()
                    break
        if lint.check(pkg, binary, f"cannot tell which Debian package provides {so}"):
            pkgs[so] = pkg
    return pkgs


def dockerignore_patterns():
    pats = []
    if os.path.exists(DOCKERIGNORE):
        with open(DOCKERIGNORE, encoding="utf-8") as f:
            for line in f:
                s = line.strip()
                if s and not s.startswith("#"):
                    pats.append(s)
    return pats


def ignored(relpath, patterns):
    """Docker's rule: the last matching pattern wins; '!' re-includes. A
    pattern matches the path itself or a parent directory of it."""
    result = False
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatch(x.split("/")[-1], p[3:]) or fnmatch.fnmatch(x, p[3:]) for x in prefixes)
        else:
            hit = any(fnmatch.fnmatch(x, p) for x in prefixes)
        if hit:
            result = not neg
    return result


def lint_dockerfile(lint, binary):
    if not lint.check(os.path.exists(DOCKERFILE), DOCKERFILE, "missing"):
        return None
    ins = dockerfile_instructions(DOCKERFILE)
    args = {}
    stages = []  # [{"image", "name", "ins": [...]}]
    for op, a in ins:
        if op == "ARG" and not stages:
            k, _, v = a.partition("=")
            args[k.strip()] = v.strip().strip('"')
        elif op == "FROM":
            words = a.split()
            words = [w for w in words if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append((op, a))
    if not lint.check(len(stages) >= 2, DOCKERFILE, f"{len(stages)} FROM stage(s): expected a multi-stage build"):
        return None
    for s in stages:
        lint.check(s["image"].startswith("debian:bookworm") and "slim" in s["image"], DOCKERFILE,
                   f"stage {s['name']}: base {s['image']!r} is not debian:bookworm-slim")
    build, final = stages[0], stages[-1]
    build_runs = " ".join(a for op, a in build["ins"] if op == "RUN")
    lint.check(re.search(r"cmake\s+-S\s+\.\s+-B\s+build\b.*-DCW_TESTS=OFF", build_runs), DOCKERFILE,
               "build stage does not run cmake -S . -B build -DCW_TESTS=OFF")
    lint.check("cmake --build build" in build_runs, DOCKERFILE, "build stage does not run cmake --build build")
    for dev in ("librdkafka-dev", "libhiredis-dev", "libyajl-dev", "libmicrohttpd-dev"):
        lint.check(dev in apt_packages(build_runs), DOCKERFILE, f"build stage does not install {dev}")
    final_runs = " ".join(a for op, a in final["ins"] if op == "RUN")
    runtime_pkgs = set(apt_packages(final_runs))
    bad = sorted(p for p in runtime_pkgs if p.endswith("-dev") or p in ("build-essential", "cmake", "gcc", "pkg-config"))
    lint.check(not bad, DOCKERFILE, f"runtime stage installs build packages {bad}")
    needed = needed_packages(lint, binary)
    if needed is not None:
        missing = sorted({p for p in needed.values() if p not in BASE_PACKAGES} - runtime_pkgs)
        lint.check(not missing, DOCKERFILE, f"runtime stage lacks {missing}, needed by the binary ({needed})")
        lint.note("runtime packages cover the binary's libraries: " + ", ".join(sorted(set(needed.values()) - BASE_PACKAGES)))
    users = [a for op, a in final["ins"] if op == "USER"]
    uid = None
    if lint.check(users, DOCKERFILE, "runtime stage has no USER (runs as root)"):
        user = users[-1].split(":")[0]
        lint.check(user not in ("root", "0"), DOCKERFILE, "runtime stage runs as root")
        uid = int(user) if user.isdigit() else None
    entry = [a for op, a in final["ins"] if op == "ENTRYPOINT"]
    lint.check(entry and "churnwatch" in entry[-1], DOCKERFILE, "ENTRYPOINT is not churnwatch")
    copies_from = [a for op, a in final["ins"] if op == "COPY" and "--from=" in a]
    names = {s["name"] for s in stages[:-1]} | {str(i) for i in range(len(stages) - 1)}
    lint.check(copies_from and all(re.search(r"--from=(\S+)", a).group(1) in names for a in copies_from),
               DOCKERFILE, "runtime stage does not COPY --from an earlier stage")

    # The build context: what COPY needs must not be ignored.
    pats = dockerignore_patterns()
    for s in stages:
        for op, a in s["ins"]:
            if op in ("COPY", "ADD") and "--from=" not in a:
                words = [w for w in a.split() if not w.startswith("--")]
                for srcp in words[:-1]:
                    if srcp in (".", "./"):
                        continue
                    lint.check(os.path.exists(os.path.join(ROOT, srcp)), DOCKERFILE, f"COPY source {srcp} does not exist")
                    lint.check(not ignored(srcp.strip("./"), pats), DOCKERIGNORE, f"excludes {srcp}, which the Dockerfile copies")
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = f.read()
    cmake = re.sub(r"if\(CW_TESTS\).*?endif\(\)", "", cmake, flags=re.S)  # tests are off in the image
    needed_dirs = []
    for entry_ in sorted(os.listdir(ROOT)):
        if os.path.isdir(os.path.join(ROOT, entry_)) and not entry_.startswith("."):
            if re.search(r"(?<![\w.-])" + re.escape(entry_) + r"/", cmake):
                needed_dirs.append(entry_)
    for d in needed_dirs + ["CMakeLists.txt"]:
        lint.check(not ignored(d, pats), DOCKERIGNORE, f"excludes {d}, which the CMake build needs")
    return uid


# --------------------------------------------------------------------------
# systemd unit
# --------------------------------------------------------------------------

def lint_unit(lint, binary):
    if not lint.check(os.path.exists(UNIT), UNIT, "missing"):
        return
    sections, cur = {}, None
    with open(UNIT, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("[") and s.endswith("]"):
                cur = sections.setdefault(s[1:-1], {})
            elif cur is not None and "=" in s:
                k, v = s.split("=", 1)
                cur.setdefault(k.strip(), []).append(v.strip())
    svc = sections.get("Service", {})

    def last(k):
        return (svc.get(k) or [None])[-1]

    lint.check(last("ExecStart") and re.search(r"churnwatch run --config \S+", last("ExecStart")), UNIT,
               "ExecStart is not 'churnwatch run --config FILE'")
    expected = {"Restart": "on-failure", "KillSignal": "SIGTERM", "ProtectSystem": "strict", "NoNewPrivileges": "yes"}
    for k, v in expected.items():
        lint.check(last(k) == v, UNIT, f"{k}={last(k)}, expected {v}")
    t = last("TimeoutStopSec")
    lint.check(t and re.fullmatch(r"\d+s?", t) and int(t.rstrip("s")) >= 15, UNIT, f"TimeoutStopSec={t}, expected >= 15")
    lint.check(last("DynamicUser") == "yes" or (last("User") not in (None, "root", "0")), UNIT,
               "neither DynamicUser=yes nor a non-root User=")
    lint.check(sections.get("Install", {}).get("WantedBy"), UNIT, "no [Install] WantedBy=")
    sa = shutil.which("systemd-analyze")
    if sa is None:
        lint.note("systemd-analyze not installed: unit checked by this lint only")
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, os.path.basename(UNIT))
        with open(UNIT, encoding="utf-8") as f:
            text = f.read().replace("/usr/local/bin/churnwatch", os.path.abspath(binary))
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text)
        r = run([sa, "verify", "--man=no", copy], timeout=60)
        # Parse problems come as "FILE:LINE: ..."; other lines may be about
        # the machine (no systemd as PID 1), so only these few count.
        bad = [ln for ln in (r.stdout + r.stderr).splitlines()
               if ln.startswith(copy + ":") or re.search(r"is not executable|fatal error|bad-setting", ln)]
        lint.check(not bad, UNIT, "systemd-analyze verify: " + "; ".join(bad))
    lint.note("systemd-analyze verify passed")


# --------------------------------------------------------------------------
# man page and install rules
# --------------------------------------------------------------------------

def lint_manpage(lint, binary):
    if not lint.check(os.path.exists(MANPAGE), MANPAGE, "missing"):
        return
    with open(MANPAGE, encoding="utf-8") as f:
        roff = f.read()
    text = roff.replace("\\-", "-").replace("\\&", "")
    for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "CONFIGURATION", "ENVIRONMENT",
                "SIGNALS", "EXIT STATUS", "FILES", "SEE ALSO"):
        lint.check(re.search(r'^\.SH "?' + sec + r'"?\s*$', roff, re.M), MANPAGE, f"no section {sec}")
    lint.check("docs/configuration.md" in text, MANPAGE, "CONFIGURATION does not point at docs/configuration.md")
    for cmd in SUBCOMMANDS:
        lint.check(re.search(r"^\.SS " + re.escape(cmd.replace("-", "\\-")) + r"\s*$", roff, re.M), MANPAGE,
                   f"no COMMANDS subsection for {cmd}")
        r = run([binary, cmd, "--help"], timeout=30)
        if cmd == "config-docs":
            continue
        if lint.check(r.returncode == 0, binary, f"{cmd} --help exits {r.returncode}"):
            for opt in sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", r.stdout))):
                lint.check(re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", text), MANPAGE,
                           f"{cmd} --help has {opt}, the man page does not")
    groff = shutil.which("groff")
    if groff is None:
        lint.note("groff not installed: man page markup not checked")
        return
    # -wall leaves out undefined macros (mac): ask for those too.
    r = run([groff, "-man", "-z", "-wall", "-wmac", MANPAGE])
    lint.check(r.returncode == 0 and not r.stderr.strip(), MANPAGE, f"groff -man -z -wall -wmac: {r.stderr.strip()}")
    lint.note("groff -man -z -wall -wmac: no warnings")


def lint_install(lint):
    path = os.path.join(ROOT, "CMakeLists.txt")
    with open(path, encoding="utf-8") as f:
        cmake = f.read()
    lint.check(re.search(r"install\(\s*TARGETS\s+churnwatch\b", cmake), path, "no install(TARGETS churnwatch ...)")
    lint.check(re.search(r"install\(\s*FILES\s+docs/churnwatch\.1\b[^)]*man1", cmake), path, "the man page is not installed")


# --------------------------------------------------------------------------

def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write("usage: lint.py PATH/TO/churnwatch\n")
        return 2
    binary = os.path.abspath(argv[1])
    if not os.access(binary, os.X_OK):
        sys.stderr.write(f"lint.py: {binary} is not an executable\n")
        return 2
    lint = Lint()
    parsed = parse_deploy_tree(lint)
    config = doc(parsed, CONFIG, lint)
    check_config_run(lint, binary, CONFIG, {}, "(file alone)")
    series, hists = source_metrics(lint)
    if isinstance(config, dict):
        lint_compose(lint, parsed, binary, config, series, hists)
    image_uid = lint_dockerfile(lint, binary)
    if isinstance(config, dict):
        lint_k8s(lint, parsed, binary, config, image_uid)
    lint_unit(lint, binary)
    lint_manpage(lint, binary)
    lint_install(lint)
    for n in lint.notes:
        print(f"note: {n}")
    for f in lint.failures:
        print(f"FAIL {f}")
    print(f"deploy lint: {len(lint.failures)} failure(s)")
    return 1 if lint.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
