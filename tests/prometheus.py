"""The real Prometheus and Alertmanager, and a webhook receiver, for the alerting tests.

Plain classes, no fixtures: tests/integration/test_alerting_e2e.py wires them in. Both servers
come from Debian's packages unpacked into the cache (`make promtool`, `make alertmanager`),
listen on 127.0.0.1 only, keep their data in the caller's temporary folder and die with the test
process (PR_SET_PDEATHSIG), so nothing survives a run, a Ctrl-C or a crash.
"""

from __future__ import annotations

import ctypes
import http.server
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from fluxsupport.devcluster import build, cluster, paths

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "fluxsupport"
PROMETHEUS = paths.cache_dir() / "prometheus" / "usr" / "bin" / "prometheus"
ALERTMANAGER = paths.cache_dir() / "alertmanager" / "usr" / "bin" / "prometheus-alertmanager"
#: Debian's Alertmanager loads its default notification templates from here (`make alertmanager`).
DEBIAN_TEMPLATES = pathlib.Path("/usr/share/prometheus/alertmanager/default.tmpl")
#: The rules select this job (metrics.jobName's default); the scrape config uses it as job_name.
JOB = "fluxsupport"

_PR_SET_PDEATHSIG = 1
#: Loaded here, not in the forked child: dlopen after fork in a threaded process (the webhook
#: server runs a thread) can hang.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _binary(path: pathlib.Path, target: str) -> pathlib.Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(f"{path} is missing: run `make {target}` (Debian's package, "
                             "unpacked into the cache without root)")
    return path


def chart_rules(*set_values: str) -> dict[str, Any]:
    """The rule groups of the PrometheusRule that the chart renders, as a Prometheus rule file."""
    helm = build.binary_path("helm")
    if not helm.is_file():
        helm = build.build_all(("helm",))["helm"]
    args = [str(helm), "template", "fluxsupport", str(CHART), "--namespace", "fluxsupport-system",
            "--set", "prometheusRule.enabled=true"]
    for value in set_values:
        args += ["--set", value]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    rules = [doc for doc in yaml.safe_load_all(result.stdout)
             if doc and doc.get("kind") == "PrometheusRule"]
    assert len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"
    return {"groups": rules[0]["spec"]["groups"]}


def _get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class _Server:
    """A child process with its log in its working folder."""

    name = "server"

    def __init__(self) -> None:
        self.workdir = pathlib.Path()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / f"{self.name}.log"

    def _spawn(self, args: Sequence[str]) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            list(args), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl runs in the child
        log.close()
        deadline = time.monotonic() + 60
        while not _ready(f"{self.url}/-/ready"):
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after 60 s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        cluster.stop_child(self.process, grace_s=10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        return cluster.log_tail(self.log_path, lines)

    def version(self) -> str:
        binary = self.binary()
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                                check=False, timeout=30)
        return (result.stdout + result.stderr).splitlines()[0]

    def binary(self) -> pathlib.Path:
        raise NotImplementedError


class Webhook:
    """Alertmanager's webhook receiver: every POSTed payload, with the time it arrived."""

    def __init__(self) -> None:
        self.payloads: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with webhook._lock:
                    webhook.payloads.append((received, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if never run
            self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.payloads)

    def alerts(self, alertname: str | None = None, status: str | None = "firing",
               **labels: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, alert) of every alert received so far that matches, oldest first."""
        found = []
        for received, payload in self.received():
            for alert in payload.get("alerts", []):
                alert_labels = alert.get("labels", {})
                if alertname is not None and alert_labels.get("alertname") != alertname:
                    continue
                if status is not None and alert.get("status") != status:
                    continue
                if all(alert_labels.get(k) == v for k, v in labels.items()):
                    found.append((received, alert))
        return found

    def text(self) -> str:
        return json.dumps([payload for _, payload in self.received()])


class Alertmanager(_Server):
    """One Alertmanager, clustering off, routing everything to ``webhook_url``."""

    name = "alertmanager"

    def binary(self) -> pathlib.Path:
        if not DEBIAN_TEMPLATES.is_file():
            raise AssertionError(f"{DEBIAN_TEMPLATES} is missing: run `make alertmanager` "
                                 "(Debian's build reads its default templates there alone)")
        return _binary(ALERTMANAGER, "alertmanager")

    def start(self, workdir: pathlib.Path, webhook_url: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Short timers, so that an alert reaches the webhook about a second after it fires.
        # Grouping by the labels that tell alerts apart keeps one notification per case or
        # bulletin; the repeats show what is delivered after a change (an embargo's lift).
        config = {
            "route": {"receiver": "webhook",
                      "group_by": ["alertname", "namespace", "supportcase", "bulletin"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "5s"},
            "receivers": [{"name": "webhook", "webhook_configs": [
                {"url": webhook_url, "send_resolved": True}]}],
        }
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
        self.port = cluster.free_port()
        self._spawn([str(self.binary()), f"--config.file={workdir / 'alertmanager.yml'}",
                     f"--storage.path={workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--cluster.listen-address=", "--log.level=info"])

    def alerts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _get_json(f"{self.url}/api/v2/alerts")
        return found


class Prometheus(_Server):
    """One Prometheus: scrapes the targets given (job ``fluxsupport``) every second, evaluates
    ``rules`` every second and sends alerts to ``alertmanager_url``."""

    name = "prometheus"

    def binary(self) -> pathlib.Path:
        return _binary(PROMETHEUS, "promtool")

    def start(self, workdir: pathlib.Path, rules: Mapping[str, Any], alertmanager: str,
              targets: Sequence[str]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "rules.yaml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        self.set_targets(targets)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yaml")],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [urllib.parse.urlsplit(alertmanager).netloc]}]}]},
            # A file of targets, so that a restarted operator (on a new port) is scraped again
            # without a reload; Prometheus watches the file.
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "file_sd_configs": [{"files": [str(workdir / "targets.json")],
                                                     "refresh_interval": "1s"}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = cluster.free_port()
        self._spawn([str(self.binary()), f"--config.file={workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     # Resent every second: Alertmanager then sees at once what changed.
                     "--rules.alert.resend-delay=1s", "--log.level=info"])

    def set_targets(self, targets: Sequence[str]) -> None:
        """host:port of each /metrics to scrape; written atomically, picked up in about 1 s."""
        path = self.workdir / "targets.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps([{"targets": list(targets)}]))
        temporary.replace(path)

    def api(self, path: str, **params: str | Sequence[str]) -> Any:
        """GET /api/v1/<path>; fails with Prometheus' error message unless status is success."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}",
                                        timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"/api/v1/{path} {params}: {body.get('errorType')}: "
                                 f"{body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of ``expr`` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: float, step: str = "2s") -> list[dict[str, Any]]:
        now = time.time()
        data = self.api("query_range", query=expr, start=f"{now - seconds:.3f}",
                        end=f"{now:.3f}", step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alert_states(self, alertname: str) -> list[dict[str, Any]]:
        """Prometheus' own view of the alert (pending or firing), from /api/v1/alerts."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname]

    def stored_text(self) -> str:
        """Everything Prometheus holds that an alert or a query could show: every stored
        series with its labels, every value of every label, and its alerts with annotations."""
        series = self.api("series", **{"match[]": '{__name__=~".+"}',
                                       "start": f"{time.time() - 3600:.0f}"})
        values = {name: self.api(f"label/{urllib.parse.quote(name)}/values")
                  for name in self.api("labels")}
        return json.dumps({"series": series, "values": values,
                           "alerts": self.api("alerts")["alerts"]})


def wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """The first truthy result of ``probe``; exceptions count as not yet (the server may be
    between scrapes), the last one is shown on failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (AssertionError, OSError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
