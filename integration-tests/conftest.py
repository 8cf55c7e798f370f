"""Fixtures and helpers for the ainode black-box integration tests.

Everything here runs real processes on 127.0.0.1: the `ainode` binary under test
(``$AINODE_BIN``), Orthanc as a strict PACS, and dcmtk (``storescp``, ``echoscu``,
``dcmsend``) as modalities and destinations.  Nothing is mocked.

Environment:
  AINODE_BIN     path to the node binary (default: <repo>/target/release/ainode)
  AINODE_SHARED  shared read-only data (default: <repo>/../shared)
"""
from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SHARED = Path(os.environ.get("AINODE_SHARED", str(REPO.parent / "shared")))
SAMPLES = SHARED / "data" / "dicom-samples"

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ----------------------------------------------------------------------------------
# small utilities
# ----------------------------------------------------------------------------------

def ainode_bin() -> Path:
    """The node binary under test; fails the test with a clear message if missing."""
    raw = os.environ.get("AINODE_BIN", "target/release/ainode")
    p = Path(raw)
    if not p.is_absolute():
        p = p if p.exists() else REPO / p
    if not p.is_file() or not os.access(p, os.X_OK):
        pytest.fail(
            f"ainode binary not found or not executable at {p} (AINODE_BIN={raw!r}). "
            "Build it with `cargo build --release` or run ./test.sh.",
            pytrace=False,
        )
    return p.resolve()


def tool(name: str) -> str:
    """Absolute path of an external tool (dcmtk, Orthanc, ...), or fail clearly."""
    found = shutil.which(name)
    if not found:
        for d in ("/usr/sbin", "/usr/bin", "/usr/local/bin"):
            if os.access(os.path.join(d, name), os.X_OK):
                found = os.path.join(d, name)
                break
    if not found:
        pytest.fail(
            f"required tool {name!r} not found; ./test.sh installs dcmtk, dicom3tools "
            "and orthanc with apt-get",
            pytrace=False,
        )
    return found


def run(cmd: list, timeout: float = 60, cwd=None, env=None, check: bool = False):
    """Run a command, capture text output. Never hangs longer than `timeout`."""
    cmd = [str(c) for c in cmd]
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, errors="replace",
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"command timed out after {timeout}s: {' '.join(cmd)}\n"
            f"stdout: {e.stdout}\nstderr: {e.stderr}"
        ) from None
    if check and res.returncode != 0:
        raise AssertionError(
            f"command failed (rc={res.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}"
        )
    return res


_handed_out_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free just now and that we have not handed out."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise RuntimeError("could not find a free port")


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1", proc=None) -> bool:
    """Wait until host:port accepts a TCP connection. Returns False on timeout or if
    `proc` (a Popen) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_port_free(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return True
            except OSError:
                time.sleep(0.1)
    return False


def poll(fn, timeout: float, interval: float = 0.25, message: str | None = None):
    """Call fn() until it returns a truthy value; return it. On timeout raise
    AssertionError with `message` (a str or a callable giving one)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s: {msg or fn}")
        time.sleep(interval)


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _file_tail(path: Path, n: int = 60) -> str:
    try:
        return tail(path.read_text(errors="replace"), n)
    except OSError:
        return "<no log>"


def _stop_process(proc: subprocess.Popen | None, grace: float = 5.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    return proc.returncode


# ----------------------------------------------------------------------------------
# TOML config writing
# ----------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v)} to TOML: {v!r}")


def _is_table_array(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def to_toml(cfg: dict) -> str:
    """Minimal TOML writer: top-level dicts become [tables], lists of dicts become
    [[arrays of tables]], dicts inside a table become inline tables. Empty top-level
    lists are left out (so `peers = []` never clashes with a later [[peers]])."""
    lines: list[str] = []
    for k, v in cfg.items():
        if isinstance(v, dict) or _is_table_array(v) or (isinstance(v, list) and not v):
            continue
        lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"\n[{_toml_key(k)}]")
            for kk, vv in v.items():
                lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
        elif _is_table_array(v):
            for item in v:
                lines.append(f"\n[[{_toml_key(k)}]]")
                for kk, vv in item.items():
                    lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def peer(name: str, ae_title: str, port: int, host: str = "127.0.0.1") -> dict:
    """A [[peers]] entry."""
    return {"name": name, "ae_title": ae_title, "host": host, "port": int(port)}


def node_behind_orthanc(orthanc, node, rule: dict, pipelines: dict):
    """A strict Orthanc (AE TESTPACS) that knows the node as `ainode`, and a node
    (AE AINODE) that accepts only that Orthanc and sends `rule`'s results to it.
    Returns (orthanc, node)."""
    node_port = free_port()
    pacs = orthanc(aet="TESTPACS", modalities={"ainode": ["AINODE", "127.0.0.1", node_port]})
    n = node(ae="AINODE", config={
        "node": {"port": node_port},
        "peers": [peer("pacs", "TESTPACS", pacs.dicom_port)],
        "accept": [{"calling_ae": "TESTPACS", "host": "127.0.0.1"}],
        "rules": [{**rule, "send_to": ["pacs"]}],
        "pipelines": pipelines,
    })
    return pacs, n


def forward_all_rule(*dest: str, name: str = "route-all") -> dict:
    """A [[rules]] entry that forwards every study to the given peers."""
    return {"name": name, "match": {}, "forward_to": list(dest)}


# ----------------------------------------------------------------------------------
# the node under test
# ----------------------------------------------------------------------------------

class Node:
    """One `ainode serve` process with its own config file, data dir and log."""

    def __init__(self, workdir: Path, config: dict, config_text: str):
        self.dir = workdir
        self.config = config
        self.config_path = workdir / "node.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "node.log"
        self.port: int = int(config["node"]["port"])
        self.ae: str = config["node"]["ae_title"]
        self.data_dir = Path(config["node"]["data_dir"])
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self.bin = ainode_bin()

    # -- process control ---------------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ)
        env.pop("AINODE_CONFIG", None)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"
        return env

    def start(self, timeout: float = 30.0) -> "Node":
        if self.alive():
            raise RuntimeError("node already running")
        if self._logf is None or self._logf.closed:
            self._logf = open(self.log_path, "ab", buffering=0)
        cmd = [str(self.bin), "serve", "--config", str(self.config_path)]
        self._logf.write(f"\n--- harness {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
        self.proc = subprocess.Popen(
            cmd, stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir, env=self.env(), start_new_session=True,
        )
        if not wait_port(self.port, timeout, proc=self.proc):
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
                why = f"did not accept connections on 127.0.0.1:{self.port} within {timeout}s"
            else:
                why = f"exited with status {rc} during startup"
            raise AssertionError(
                f"ainode {why}.\nconfig {self.config_path}:\n{self.config_path.read_text()}\n"
                f"log tail:\n{self.log_tail()}"
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then wait (SIGKILL after `timeout`). Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(
                    f"ainode did not exit within {timeout}s of SIGTERM; log tail:\n{self.log_tail()}"
                )
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self, timeout: float = 30.0) -> "Node":
        """Start again with the same config and data dir (stops it first if running)."""
        if self.alive():
            self.stop()
        return self.start(timeout)

    def teardown(self) -> None:
        try:
            _stop_process(self.proc, grace=5.0)
        finally:
            if self._logf is not None:
                self._logf.close()

    # -- observation -------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return ANSI_RE.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self, n: int = 80) -> str:
        return tail(self.log_text(), n)

    def cli(self, *args, timeout: float = 60, check: bool = True):
        """Run `ainode ARGS... --config FILE` (cwd = the node's work dir)."""
        return run([self.bin, *args, "--config", self.config_path], timeout=timeout,
                   cwd=self.dir, env=self.env(), check=check)

    def jobs(self) -> list[dict]:
        res = self.cli("jobs", "--json", timeout=30, check=False)
        if res.returncode != 0:
            raise AssertionError(
                f"`ainode jobs --json` failed (rc={res.returncode}):\n{res.stderr[-3000:]}"
            )
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"`ainode jobs --json` printed no JSON ({e}):\n{res.stdout[:3000]}")
        assert isinstance(data, list), f"`ainode jobs --json` must print a JSON array, got {data!r:.300}"
        return data

    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def spool_files(self) -> list[Path]:
        d = self.spool_dir()
        return sorted(d.rglob("*.dcm")) if d.is_dir() else []

    def spool_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.spool_dir() / str(study_uid) / str(series_uid) / f"{sop_uid}.dcm"

    def spool_path_for(self, ds: Dataset) -> Path:
        return self.spool_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    def find_in_spool(self, sop_uid: str) -> list[Path]:
        d = self.spool_dir()
        return sorted(d.rglob(f"{sop_uid}.dcm")) if d.is_dir() else []

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until a log line contains `needle`; return that line."""
        def find():
            for line in self.log_text().splitlines():
                if needle in line:
                    return line
            return None
        return poll(find, timeout, 0.1,
                    lambda: f"no log line contains {needle!r}; log tail:\n{self.log_tail()}")

    def echo_ok(self, calling: str = "ECHOTEST") -> None:
        res = run([tool("echoscu"), "-to", "10", "-ta", "10", "-td", "10", "-aec", self.ae,
                   "-aet", calling, "127.0.0.1", self.port], timeout=40)
        assert res.returncode == 0, (
            f"node does not answer C-ECHO (echoscu rc={res.returncode}):\n{res.stderr}\n"
            f"node alive={self.alive()}; log tail:\n{self.log_tail()}"
        )

    def forward_jobs(self, study_uid: str | None = None, destination: str | None = None) -> list[dict]:
        return [
            j for j in self.jobs()
            if j.get("kind") == "forward"
            and (study_uid is None or j.get("study_uid") == study_uid)
            and (destination is None or j.get("destination") == destination)
        ]


def base_node_config(port: int, data_dir: Path, ae: str) -> dict:
    return {
        "node": {
            "ae_title": ae,
            "bind": "127.0.0.1",
            "port": port,
            "data_dir": str(data_dir),
            "max_associations": 32,
            "max_pdu": 262144,
        },
        "assembly": {"quiet_seconds": 1, "force_complete_seconds": 120},
        "export": {"backoff_initial_seconds": 1, "backoff_max_seconds": 2, "max_attempts": 50},
        "http": {"enabled": True, "bind": "127.0.0.1", "port": free_port()},
    }


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request) -> bool:
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture
def node(tmp_path, request):
    """Factory: node(config=dict, extra_toml=str, ae="AINODE", start=True) -> Node.

    `config` is deep-merged over a test default (127.0.0.1, free port, data_dir in
    tmp, quiet period 1 s, short export backoff). Lists (peers, accept, rules) are
    written as [[arrays of tables]]; `extra_toml` is appended verbatim.
    """
    created: list[Node] = []

    def factory(config: dict | None = None, extra_toml: str = "", ae: str = "AINODE",
                start: bool = True, name: str | None = None) -> Node:
        name = name or f"node{len(created)}"
        workdir = tmp_path / name
        workdir.mkdir(parents=True)
        cfg = deep_merge(base_node_config(free_port(), workdir / "var", ae), config or {})
        text = to_toml(cfg) + ("\n" + extra_toml + "\n" if extra_toml else "")
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:  # a harness bug, not a node bug
            raise RuntimeError(f"harness wrote invalid TOML ({e}):\n{text}")
        n = Node(workdir, cfg, text)
        created.append(n)
        if start:
            n.start()
        return n

    yield factory

    failed = _test_failed(request)
    for n in created:
        n.teardown()
        if failed:
            print(f"\n===== {n.dir.name} (port {n.port}) log tail =====\n{n.log_tail(120)}")


# ----------------------------------------------------------------------------------
# Orthanc as a strict PACS
# ----------------------------------------------------------------------------------

class Orthanc:
    def __init__(self, workdir: Path, aet: str, modalities: dict):
        self.dir = workdir
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = workdir / "orthanc.log"
        self.config_path = workdir / "orthanc.json"
        self.config = {
            "Name": "TEST-PACS",
            "StorageDirectory": str(workdir / "db"),
            "IndexDirectory": str(workdir / "db"),
            "Plugins": [],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": modalities,
            "StrictAetComparison": True,
            "SaveJobs": False,
            # Orthanc closes idle keep-alive connections; a reused one made a POST fail with
            # RemoteDisconnected. No keep-alive on either side.
            "KeepAlive": False,
        }
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.http = requests.Session()
        self.http.trust_env = False  # never go through a proxy for loopback
        self.http.headers["Connection"] = "close"
        self.proc: subprocess.Popen | None = None
        self._logf = None

    def start(self, timeout: float = 60.0) -> "Orthanc":
        self._logf = open(self.log_path, "ab", buffering=0)
        self.proc = subprocess.Popen(
            [tool("Orthanc"), str(self.config_path)], cwd=self.dir, stdout=self._logf,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"Orthanc exited with {self.proc.returncode}; log:\n{_file_tail(self.log_path)}"
                )
            try:
                return self.http.get(self.url + "/system", timeout=2).ok
            except requests.RequestException:
                return False

        poll(up, timeout, 0.2, lambda: f"Orthanc did not come up; log:\n{_file_tail(self.log_path)}")
        assert wait_port(self.dicom_port, 20, proc=self.proc), "Orthanc DICOM port not open"
        return self

    def stop(self) -> None:
        try:
            _stop_process(self.proc, grace=10.0)
        finally:
            if self._logf is not None:
                self._logf.close()

    def log_tail(self, n: int = 60) -> str:
        return _file_tail(self.log_path, n)

    # -- REST helpers -------------------------------------------------------------
    def get(self, path: str, **kw):
        r = self.http.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)
        r.raise_for_status()
        return r

    def post_json(self, path: str, body, timeout: float = 120):
        r = self.http.post(self.url + path, json=body, timeout=timeout)
        if not r.ok:
            raise AssertionError(f"Orthanc POST {path} -> {r.status_code}: {r.text[:2000]}\n"
                                 f"Orthanc log:\n{self.log_tail()}")
        return r.json() if r.content else None

    def upload(self, path: Path) -> dict:
        """POST /instances; returns Orthanc's answer (ID, ParentStudy, Status ...)."""
        r = self.http.post(self.url + "/instances", data=Path(path).read_bytes(),
                           headers={"Content-Type": "application/dicom"}, timeout=60)
        if not r.ok:
            raise AssertionError(f"Orthanc rejected upload of {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def upload_files(self, paths: Iterable[Path]) -> list[dict]:
        return [self.upload(p) for p in paths]

    def store_to(self, modality: str, resources: list[str], timeout: float = 180) -> dict:
        """POST /modalities/NAME/store, synchronous."""
        return self.post_json(f"/modalities/{modality}/store",
                              {"Resources": list(resources), "Synchronous": True}, timeout=timeout)

    def echo(self, modality: str) -> bool:
        r = self.http.post(self.url + f"/modalities/{modality}/echo", json={}, timeout=30)
        return r.ok

    def find_instances(self, query: dict | None = None) -> list[str]:
        return self.post_json("/tools/find", {"Level": "Instance", "Query": query or {}})

    def instances(self) -> list[str]:
        return self.get("/instances").json()

    def lookup(self, uid: str) -> list[dict]:
        r = self.http.post(self.url + "/tools/lookup", data=uid, timeout=30)
        r.raise_for_status()
        return r.json()

    def metadata(self, instance_id: str) -> dict:
        return self.get(f"/instances/{instance_id}/metadata?expand").json()

    def tags(self, instance_id: str) -> dict:
        return self.get(f"/instances/{instance_id}/simplified-tags").json()

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file").content

    def dataset(self, instance_id: str) -> Dataset:
        import io
        return pydicom.dcmread(io.BytesIO(self.file(instance_id)))


@pytest.fixture
def orthanc(tmp_path, request):
    """Factory: orthanc(node=None, aet="TESTPACS", modalities=None) -> Orthanc.

    Strict config from CONFORMANCE.md. `node` (a Node) becomes modality "ainode";
    `modalities` adds more entries, NAME -> [AET, HOST, PORT].
    """
    created: list[Orthanc] = []

    def factory(node: Node | None = None, aet: str = "TESTPACS",
                modalities: dict | None = None) -> Orthanc:
        mods = {}
        if node is not None:
            mods["ainode"] = [node.ae, "127.0.0.1", node.port]
        mods.update(modalities or {})
        workdir = tmp_path / f"orthanc{len(created)}"
        workdir.mkdir(parents=True)
        o = Orthanc(workdir, aet, mods)
        created.append(o)
        return o.start()

    yield factory
    failed = _test_failed(request)
    for o in created:
        o.stop()
        if failed:
            print(f"\n===== {o.dir.name} log tail =====\n{o.log_tail(60)}")


# ----------------------------------------------------------------------------------
# dcmtk storescp as a destination
# ----------------------------------------------------------------------------------

class StoreSCP:
    def __init__(self, workdir: Path, ae: str, port: int, accept_all: bool = True):
        self.dir = workdir
        self.ae = ae
        self.port = port
        # False: storescp's default, uncompressed transfer syntaxes only (a peer
        # that makes the node transcode)
        self.accept_all = accept_all
        self.out = workdir / "received"
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "storescp.log"
        self.proc: subprocess.Popen | None = None
        self._logf = None
        self._cache: dict[Path, str] = {}

    def start(self, timeout: float = 20.0) -> "StoreSCP":
        self._logf = open(self.log_path, "ab", buffering=0)
        cmd = [
            tool("storescp"), "-v",
            "+v",    # log association parameters (calling AE, contexts)
            "-aet", self.ae,
            "-od", str(self.out),
            "+uf",   # unique file names: a second delivery of one instance is a second file
            *(["+xa"] if self.accept_all else []),   # accept all supported transfer syntaxes
            "-pm",   # promiscuous: accept unknown (private) storage SOP classes too
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, timeout, proc=self.proc):
            raise AssertionError(f"storescp did not start on {self.port}; log:\n{self.log_tail()}")
        return self

    def stop(self) -> None:
        try:
            _stop_process(self.proc, grace=5.0)
        finally:
            if self._logf is not None:
                self._logf.close()

    def log_tail(self, n: int = 40) -> str:
        return _file_tail(self.log_path, n)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())

    def received(self) -> collections.Counter:
        """Counter SOP Instance UID -> number of files received with it."""
        counts: collections.Counter = collections.Counter()
        for f in self.files():
            uid = self._cache.get(f)
            if uid is None:
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                    uid = str(ds.SOPInstanceUID)
                except Exception:
                    continue  # still being written; counted on a later call
                self._cache[f] = uid
            counts[uid] += 1
        return counts

    def wait_for(self, uids: Iterable[str], timeout: float = 60.0, node: Node | None = None,
                 settle: float = 3.0) -> collections.Counter:
        """Wait until every uid arrived at least once, then `settle` seconds more (to
        catch late duplicates); return the final Counter."""
        want = set(uids)

        def msg():
            got = self.received()
            missing = want - set(got)
            m = (f"storescp {self.ae}:{self.port} has {len(want) - len(missing)}/{len(want)} "
                 f"instances ({len(missing)} missing, e.g. {sorted(missing)[:3]})\n"
                 f"storescp log:\n{self.log_tail()}")
            if node is not None:
                m += f"\nnode log tail:\n{node.log_tail()}"
                try:
                    m += f"\nnode jobs: {json.dumps(node.jobs(), indent=1)[:3000]}"
                except AssertionError as e:
                    m += f"\n(jobs: {e})"
            return m

        poll(lambda: want <= set(self.received()), timeout, 0.5, msg)
        time.sleep(settle)
        return self.received()


def assert_exactly_once(counter: collections.Counter, uids: Iterable[str], what: str = "") -> None:
    want = set(uids)
    missing = sorted(want - set(counter))
    dups = sorted(u for u in want if counter[u] > 1)
    extra = sorted(set(counter) - want)
    assert not missing and not dups, (
        f"{what}: {len(missing)} missing, {len(dups)} delivered more than once "
        f"(e.g. {[(u, counter[u]) for u in dups[:3]]}), missing e.g. {missing[:3]}"
    )
    assert not extra, f"{what}: unexpected instances arrived: {extra[:5]}"


@pytest.fixture
def storescp(tmp_path, request):
    """Factory: storescp(ae="DEST", port=None, start=True, accept_all=True) -> StoreSCP."""
    created: list[StoreSCP] = []

    def factory(ae: str = "DEST", port: int | None = None, start: bool = True, accept_all: bool = True) -> StoreSCP:
        workdir = tmp_path / f"storescp{len(created)}-{ae}"
        s = StoreSCP(workdir, ae, port or free_port(), accept_all)
        created.append(s)
        return s.start() if start else s

    yield factory
    failed = _test_failed(request)
    for s in created:
        s.stop()
        if failed:
            print(f"\n===== storescp {s.ae}:{s.port} log tail =====\n{s.log_tail(30)}")


# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------

def require_shared() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"shared sample data not found at {SAMPLES} (set AINODE_SHARED to the "
                    "shared folder that holds data/dicom-samples)")
    return SAMPLES


def ct_totalseg_files() -> list[Path]:
    """The 20-slice CT series (JPEG 2000 lossless)."""
    d = require_shared() / "ct-totalseg"
    files = sorted(p for p in d.iterdir() if p.is_file())
    assert len(files) == 20, f"expected 20 files in {d}, found {len(files)}"
    return files


def pelvis_xray_files() -> list[Path]:
    d = require_shared() / "xray-pelvis-ddh" / "dicom"
    files = sorted(d.glob("*.dcm"))
    assert files, f"no files in {d}"
    return files


def chest_ct_files() -> list[Path]:
    d = require_shared() / "ct-chest-lungmask"
    files = sorted(d.glob("*.dcm"))
    assert files, f"no files in {d}"
    return files


# pydicom / pydicom-data files, one or more per transfer syntax (name, expected TS).
PYDICOM_TS_FILES: list[tuple[str, str]] = [
    ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),          # Implicit VR Little Endian
    ("CT_small.dcm", "1.2.840.10008.1.2.1"),                 # Explicit VR Little Endian
    ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),       # Explicit VR Big Endian
    ("ExplVR_BigEnd.dcm", "1.2.840.10008.1.2.2"),            # US RGB, big endian
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),             # RLE Lossless
    ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5"),               # RGB RLE
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50"),     # JPEG Baseline
    ("JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51"),            # JPEG Extended (12 bit)
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70"),      # JPEG Lossless SV1
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),  # JPEG-LS Lossless
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90"),  # JPEG 2000 Lossless
    ("emri_small_jpeg_2k_lossless.dcm", "1.2.840.10008.1.2.4.90"),  # enhanced MR, multi-frame
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),              # JPEG 2000
    ("RG3_UNCI.dcm", "1.2.840.10008.1.2.1"),                 # CR 1760x1760 MONOCHROME1
    ("OBXXXX1A.dcm", "1.2.840.10008.1.2.1"),                 # US PALETTE COLOR
    ("US1_J2KR.dcm", "1.2.840.10008.1.2.4.90"),              # US YBR_RCT J2K
]


def pydicom_ts_files(dest_dir: Path, min_distinct_ts: int = 6) -> list[Path]:
    """Copies of pydicom / pydicom-data test files covering many transfer syntaxes.

    Several of these files share a SOP Instance UID (the MR_small family, the
    SC_rgb family), so each copy gets a fresh SOP Instance UID (dataset and file
    meta); everything else, pixel data included, is left as pydicom read it and
    written back in the file's own transfer syntax.
    """
    from pydicom.data import get_testdata_file

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    seen_ts: set[str] = set()
    for name, want_ts in PYDICOM_TS_FILES:
        src = get_testdata_file(name)
        if not src:
            continue
        ds = pydicom.dcmread(src)
        ts = str(ds.file_meta.TransferSyntaxUID)
        assert ts == want_ts, f"{name}: transfer syntax is {ts}, expected {want_ts}"
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        p = dest_dir / f"{Path(name).stem}.dcm"
        ds.save_as(p)
        check = pydicom.dcmread(p, stop_before_pixels=True)
        assert str(check.file_meta.TransferSyntaxUID) == ts and check.SOPInstanceUID == uid
        out.append(p)
        seen_ts.add(ts)
    if len(seen_ts) < min_distinct_ts:
        pytest.fail(f"pydicom/pydicom-data give only {len(seen_ts)} transfer syntaxes "
                    f"({sorted(seen_ts)}); need {min_distinct_ts}. Is pydicom-data installed?",
                    pytrace=False)
    return out


def make_ct_dataset(index: int, study_uid: str, series_uid: str, frame_uid: str,
                    rows: int = 64, cols: int = 64, patient_id: str = "AINODE-TEST",
                    sop_uid: str | None = None) -> Dataset:
    """One small synthetic CT Image Storage instance (explicit VR LE, with file meta)."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1137.99.1"
    meta.ImplementationVersionName = "AINODE_TESTS"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240101"
    ds.SeriesDate = "20240101"
    ds.ContentDate = "20240101"
    ds.StudyTime = "120000"
    ds.SeriesTime = "120000"
    ds.ContentTime = f"1200{index % 60:02d}"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "ainode-tests"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC CT"
    ds.SeriesDescription = "SYNTHETIC AXIAL"
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "2.0"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-32.0, -32.0, float(-2.0 * index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = float(-2.0 * index)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [1.0, 1.0]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    yy, xx = np.mgrid[0:rows, 0:cols]
    img = ((xx * 7 + yy * 13 + index * 31) % 4096).astype(np.uint16)
    ds.PixelData = img.tobytes()
    return ds


def make_ct_series(directory: Path, n: int, study_uid: str | None = None,
                   series_uid: str | None = None, patient_id: str = "AINODE-TEST") -> list[Path]:
    """Write n synthetic CT instances (64x64 uint16, explicit VR LE, fresh UIDs) as
    Part 10 files into `directory`; returns their paths in instance order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for i in range(n):
        ds = make_ct_dataset(i, study_uid, series_uid, frame_uid, patient_id=patient_id)
        p = directory / f"ct_{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def sop_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


# ----------------------------------------------------------------------------------
# dataset comparison
# ----------------------------------------------------------------------------------

def _vr_of(elem) -> str | None:
    vr = getattr(elem, "VR", None)
    if vr is None and isinstance(elem, RawDataElement):
        try:
            vr = pydicom.datadict.dictionary_VR(elem.tag)
        except KeyError:
            vr = None
    return vr


def _is_little(ds: Dataset, default: bool = True) -> bool:
    enc = getattr(ds, "original_encoding", None)
    if enc and enc[1] is not None:
        return bool(enc[1])
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return str(meta.TransferSyntaxUID) != "1.2.840.10008.1.2.2"
    return default


# binary VRs whose raw bytes pydicom keeps in file byte order, by word size
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _canonical(value, vr: str | None, little: bool):
    """Raw binary values of a big endian data set turned into little endian."""
    if little or not isinstance(value, (bytes, bytearray)) or vr not in _WORD:
        return value
    w = _WORD[vr]
    if len(value) % w:
        return value
    return np.frombuffer(value, dtype=f">u{w}").astype(f"<u{w}").tobytes()


def dataset_diff(a: Dataset, b: Dataset, ignore_group_length: bool = True,
                 by_value: bool | None = None, limit: int = 50,
                 ignore_tags: Iterable[int] = (), ignore_vr_tags: Iterable[int] = (), _path: str = "", _out: list | None = None,
                 _little: tuple[bool, bool] | None = None) -> list[str]:
    """Element-by-element differences between two datasets; [] means equal.

    Ignores the file meta group (0002,xxxx) and, by default, group length elements
    (gggg,0000), and any tag in `ignore_tags`; `ignore_vr_tags` are compared by value
    bytes only, not VR. Sequences are compared item by item.

    by_value=False compares the raw value bytes (and the VR where both are explicit):
    right when both data sets come in the same transfer syntax. by_value=True is for
    the same data in two different uncompressed transfer syntaxes (a sender that
    converted implicit -> explicit VR or big -> little endian): values are compared
    after decoding, binary words (OW, OF, ...) in one byte order. The default picks
    by_value when the two file meta transfer syntaxes differ.
    """
    out: list[str] = [] if _out is None else _out
    if _little is None:
        _little = (_is_little(a), _is_little(b))
    if by_value is None:
        ta_ = str(getattr(getattr(a, "file_meta", None), "TransferSyntaxUID", ""))
        tb_ = str(getattr(getattr(b, "file_meta", None), "TransferSyntaxUID", ""))
        by_value = ta_ != tb_
    la, lb = _little

    ignore = {int(t) for t in ignore_tags}
    ignore_vr = {int(t) for t in ignore_vr_tags}

    def keep(tag) -> bool:
        return (tag.group != 0x0002 and int(tag) not in ignore
                and not (ignore_group_length and tag.element == 0x0000))

    ta = {t for t in a.keys() if keep(t)}
    tb = {t for t in b.keys() if keep(t)}
    for t in sorted(ta - tb):
        out.append(f"{_path}{t} only in first")
    for t in sorted(tb - ta):
        out.append(f"{_path}{t} only in second")
    for t in sorted(ta & tb):
        if len(out) >= limit:
            out.append("... (more differences left out)")
            break
        ea, eb = a.get_item(t), b.get_item(t)
        if _vr_of(ea) == "SQ" or _vr_of(eb) == "SQ":
            sa, sb = a[t].value, b[t].value
            if len(sa) != len(sb):
                out.append(f"{_path}{t} sequence length {len(sa)} != {len(sb)}")
                continue
            for i, (ia, ib) in enumerate(zip(sa, sb)):
                dataset_diff(ia, ib, ignore_group_length, by_value, limit, ignore,
                             ignore_vr, f"{_path}{t}[{i}].", out, _little)
            continue
        raw_pair = isinstance(ea, RawDataElement) and isinstance(eb, RawDataElement)
        if raw_pair and (not by_value or la == lb):
            # same byte order: the value bytes must be identical (implicit and
            # explicit VR LE share their value encoding)
            if (not by_value and ea.VR is not None and eb.VR is not None and ea.VR != eb.VR
                    and int(t) not in ignore_vr):
                out.append(f"{_path}{t} VR {ea.VR} != {eb.VR}")
            va, vb = ea.value, eb.value
        else:
            da, db = a[t], b[t]
            if t == 0x7FE00010 and by_value and la != lb and _path == "":
                try:
                    same = np.array_equal(a.pixel_array, b.pixel_array)
                except Exception as e:  # undecodable: fall back to words
                    same = None
                    out.append(f"{_path}{t} pixel data not decodable for comparison: {e}")
                if same is False:
                    out.append(f"{_path}{t} pixel data differs")
                continue
            va = _canonical(da.value, da.VR, la)
            vb = _canonical(db.value, db.VR, lb)
        if va != vb:
            ra, rb = repr(va), repr(vb)
            extra = ""
            if isinstance(va, (bytes, bytearray)) and isinstance(vb, (bytes, bytearray)):
                extra = f" (lengths {len(va)} / {len(vb)})"
            out.append(f"{_path}{t} value differs: {ra[:80]} != {rb[:80]}{extra}")
    return out


def dataset_equal(a: Dataset, b: Dataset, ignore_group_length: bool = True) -> bool:
    return not dataset_diff(a, b, ignore_group_length)


# What dcmtk (dcmsend, storescp) changes in a data set it sends or writes, checked
# with a bit-preserving storescp: it drops Data Set Trailing Padding and writes
# encapsulated Pixel Data as OB where the file says OW. Comparisons with what dcmtk
# sent ignore exactly these (dataset_diff(..., **DCMTK_NORMALISES)).
DCMTK_DROPS = (0xFFFCFFFC,)
DCMTK_VR_FIXES = (0x7FE00010,)
DCMTK_NORMALISES = {"ignore_tags": DCMTK_DROPS, "ignore_vr_tags": DCMTK_VR_FIXES}


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the file meta group."""
    from pynetdicom.dsutils import split_dataset
    _, offset = split_dataset(Path(path))
    return Path(path).read_bytes()[offset:]


def transfer_syntax_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


ENCAPSULATED_TS_PREFIXES = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")
UNCOMPRESSED_TS = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


# ----------------------------------------------------------------------------------
# pynetdicom helpers
# ----------------------------------------------------------------------------------

def pynetdicom_ae(calling: str, contexts: list[tuple[str, list[str]]] | None = None):
    """A pynetdicom AE with short timeouts; contexts default to CT Image Storage in
    explicit + implicit VR LE, plus Verification."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.acse_timeout = 15
    ae.dimse_timeout = 30
    ae.network_timeout = 30
    ae.connection_timeout = 10
    for abstract, ts in contexts or [(CTImageStorage, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])]:
        ae.add_requested_context(abstract, ts)
    ae.add_requested_context(Verification)
    return ae


def pynetdicom_send_files(port: int, called: str, calling: str, paths: list[Path],
                          host: str = "127.0.0.1") -> dict[Path, int | None]:
    """Send Part 10 files on one association, each in its own transfer syntax: one
    presentation context per (SOP class, transfer syntax) with exactly that one
    transfer syntax, so the receiver cannot pick another. The data set bytes go on
    the wire exactly as they are in the file (pynetdicom's chunked mode, no
    re-encoding). Returns {path: C-STORE status, None when there was no answer}."""
    from pynetdicom import AE, _config
    from pynetdicom.dsutils import split_dataset

    pairs = []
    for p in paths:
        meta, _ = split_dataset(Path(p))
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    assert len(pairs) <= 128, "too many presentation contexts for one association"
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop, ts in pairs:
        ae.add_requested_context(sop, [ts])
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate(host, port, ae_title=called)
        assert assoc.is_established, f"association to {called}@{host}:{port} not established"
        rejected = [(cx.abstract_syntax, cx.transfer_syntax) for cx in assoc.rejected_contexts]
        statuses: dict[Path, int | None] = {}
        try:
            for p in paths:
                st = assoc.send_c_store(Path(p))
                statuses[Path(p)] = int(st.Status) if st is not None and "Status" in st else None
        finally:
            if assoc.is_established:
                assoc.release()
        if rejected:
            raise AssertionError(f"receiver rejected presentation contexts: {rejected}")
        return statuses
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        ae.shutdown()
