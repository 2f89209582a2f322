"""etcd v3, the cluster's store, through its JSON gateway (etcd3gw).

etcd3gw rather than a gRPC client: the gRPC ones (etcd3, etcd3-py) pin protobuf versions
or are unmaintained, while the gateway needs only `requests`, which we have, and is served
by every etcd 3.4+. Requests go to the endpoints in turn: one that cannot be reached is
skipped, so losing a member of a three-member cluster goes unnoticed. Every error becomes
`StoreUnavailable`, whose message says which endpoints were tried.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors
from prometheus_client import Histogram

from common.blocking import run_blocking

REQUEST_TIMEOUT = 1.0  # seconds, per endpoint: a leader must notice a dead store quickly
STORE_SECONDS = Histogram("sdn_store_request_seconds", "etcd request latency, by operation",
                          ["op"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25, 0.5, 1.0, 2.5))


class StoreUnavailable(RuntimeError):
    """No etcd endpoint answered (or the cluster has no quorum)."""


@dataclass(frozen=True)
class EtcdTls:
    """TLS to etcd: the CA that signed the members' certificates, and this client's own
    certificate and key when the members ask for one (`--client-cert-auth`)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def _session(tls: EtcdTls | None) -> requests.Session:
    """A session that ignores the environment: $REQUESTS_CA_BUNDLE would replace the CA
    we were given (a known requests quirk), and $HTTP_PROXY has no business with etcd."""
    session = requests.Session()
    session.trust_env = False
    if tls is not None:
        session.verify = str(tls.ca)
        if tls.cert and tls.key:
            session.cert = (str(tls.cert), str(tls.key))
    return session


@dataclass(frozen=True)
class Entry:
    """A key's value and the store revisions that created and last changed it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0

    def json(self) -> Any:
        return json.loads(self.value)


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """``etcd://host:port[,host:port...]`` -> [(host, port), ...]."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc:
        raise ValueError(f"{url!r}: expected etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = []
    for item in parts.netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: {item!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _entry(item: dict[str, Any]) -> Entry:
    return Entry(base64.b64decode(item["key"]).decode(),
                 base64.b64decode(item.get("value", "")),
                 int(item.get("create_revision", 0)), int(item.get("mod_revision", 0)),
                 int(item.get("lease", 0)))


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with `prefix`."""
    data = bytearray(prefix.encode())
    data[-1] += 1
    return data.decode()


# Transaction building blocks, in the gateway's JSON form.
def created_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: `key` exists with this create revision (0: `key` does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": revision}


def modified_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: `key` was last changed at this revision (0: it does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": revision}


def put(key: str, value: Any, lease: int = 0) -> dict[str, Any]:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(body)}
    if lease:
        request["lease"] = lease
    return {"request_put": request}


def delete(key: str, prefix: bool = False) -> dict[str, Any]:
    """Delete `key`, or with `prefix` every key that starts with it."""
    request = {"key": _b64(key)}
    if prefix:
        request["range_end"] = _b64(prefix_end(key))
    return {"request_delete_range": request}


class Etcd:
    """A few etcd operations, tried on each endpoint until one answers."""

    def __init__(self, endpoints: Sequence[tuple[str, int]],
                 timeout: float = REQUEST_TIMEOUT, tls: EtcdTls | None = None) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = list(endpoints)
        self._tls = tls
        self._clients = [self._client(host, port, timeout) for host, port in self.endpoints]
        self._preferred = 0

    def _client(self, host: str, port: int, timeout: float) -> etcd3gw.Etcd3Client:
        return etcd3gw.Etcd3Client(host=host, port=port, timeout=timeout, api_path="/v3/",
                                   protocol="https" if self._tls else "http",
                                   session=_session(self._tls))

    @classmethod
    def from_url(cls, url: str, tls: EtcdTls | None = None) -> Etcd:
        return cls(parse_endpoints(url), tls=tls)

    def _post(self, op: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        count = len(self._clients)
        for step in range(count):
            index = (self._preferred + step) % count
            client = self._clients[index]
            started = time.monotonic()
            try:
                result = run_blocking(partial(client.post, client.get_url(path),
                                              data=json.dumps(body)))
            except etcd_errors.Etcd3Exception as exc:
                errors.append(f"{client.host}:{client.port}: {_reason(exc)}")
                continue
            finally:
                STORE_SECONDS.labels(op).observe(time.monotonic() - started)
            self._preferred = index
            return result
        raise StoreUnavailable("etcd did not answer (" + "; ".join(errors) + ")")

    def get(self, key: str) -> Entry | None:
        found = self._post("get", "/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _entry(found[0]) if found else None

    def get_prefix(self, prefix: str) -> list[Entry]:
        result = self._post("get", "/kv/range", {"key": _b64(prefix),
                                                "range_end": _b64(prefix_end(prefix))})
        return [_entry(item) for item in result.get("kvs", [])]

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> bool:
        """Apply `success` if every comparison holds (else `failure`); True if they held."""
        result = self._post("txn", "/kv/txn", {"compare": compare, "success": success,
                                               "failure": failure or []})
        return bool(result.get("succeeded", False))

    def put(self, key: str, value: Any, lease: int = 0) -> None:
        self.txn([], [put(key, value, lease)])

    def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of `ttl` seconds: its id and the ttl etcd granted (it may raise
        a short one to its minimum)."""
        result = self._post("lease", "/lease/grant", {"TTL": ttl, "ID": 0})
        return int(result["ID"]), int(result.get("TTL", ttl))

    def keepalive(self, lease: int) -> int:
        """Renew `lease`; its remaining TTL in seconds, or -1 if it has expired."""
        result = self._post("lease", "/lease/keepalive", {"ID": lease})
        return int(result.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self._post("lease", "/kv/lease/revoke", {"ID": lease})

    def members(self) -> list[dict[str, Any]]:
        """The etcd cluster's members (name, peer and client URLs), and which answer."""
        members = self._post("members", "/cluster/member/list", {}).get("members", [])
        for member in members:
            member["healthy"] = any(self._answers(url) for url in member.get("clientURLs", []))
        return members

    def _answers(self, url: str) -> bool:
        parts = urlsplit(url)
        client = self._client(parts.hostname, parts.port, 0.5)
        try:
            run_blocking(client.status)
        except etcd_errors.Etcd3Exception:
            return False
        return True


def _reason(exc: etcd_errors.Etcd3Exception) -> str:
    detail = getattr(exc, "detail_text", None) or str(exc)
    return f"{type(exc).__name__}: {str(detail)[:200]}"
