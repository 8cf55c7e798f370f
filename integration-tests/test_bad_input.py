"""6. Bad input on one connection must not disturb a healthy association next to it.

Each test keeps a pynetdicom association storing synthetic CT instances in a
thread while a raw socket feeds the node something broken. Afterwards: the bad
connection was closed / aborted / answered with a failure, the node log names that
connection's peer address (127.0.0.1:<its port>), the node answers C-ECHO, and every
healthy C-STORE succeeded.
"""
import os
import socket
import struct
import threading
import time

import pytest
from pydicom.uid import generate_uid

import rawpdu
from conftest import make_ct_dataset, pynetdicom_ae


class HealthyTraffic:
    """C-STOREs on one long association, every `interval` seconds, in a thread."""

    def __init__(self, n, interval: float = 0.05):
        self.n = n
        self.interval = interval
        self.statuses: list[int | None] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._started = threading.Event()
        self.study = generate_uid()
        self.series = generate_uid()
        self.frame = generate_uid()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        ae = pynetdicom_ae("HEALTHY")
        try:
            assoc = ae.associate("127.0.0.1", self.n.port, ae_title=self.n.ae)
            if not assoc.is_established:
                self.error = "healthy association not established"
                return
            i = 0
            while not self._stop.is_set():
                ds = make_ct_dataset(i, self.study, self.series, self.frame, rows=32, cols=32)
                try:
                    rsp = assoc.send_c_store(ds)
                    st = int(rsp.Status) if rsp is not None and "Status" in rsp else None
                except Exception as e:
                    self.error = f"healthy C-STORE #{i} raised {e!r}"
                    return
                self.statuses.append(st)
                self._started.set()
                if st != 0x0000:
                    self.error = f"healthy C-STORE #{i} got status {st}"
                    return
                if not assoc.is_established:
                    self.error = "healthy association dropped"
                    return
                i += 1
                self._stop.wait(self.interval)
            assoc.release()
        except Exception as e:  # pragma: no cover - reported by check()
            self.error = f"healthy sender crashed: {e!r}"
        finally:
            self._started.set()
            ae.shutdown()

    def __enter__(self):
        self._thread.start()
        assert self._started.wait(30), "healthy traffic did not start"
        assert self.error is None, f"{self.error}\n{self.n.log_tail()}"
        return self

    def __exit__(self, exc_type, *rest):
        before = len(self.statuses)
        time.sleep(0.5)  # it must still be going after the bad input
        self._stop.set()
        self._thread.join(timeout=30)
        if exc_type is None:
            assert not self._thread.is_alive(), "healthy sender hung"
            assert self.error is None, f"{self.error}\nnode log:\n{self.n.log_tail()}"
            assert len(self.statuses) > before, "healthy traffic stalled"
            assert self.statuses and all(s == 0 for s in self.statuses), self.statuses
        return False


def _after(n, client_port: int):
    """The checks shared by every bad-input test."""
    n.wait_log(f"127.0.0.1:{client_port}", timeout=10)
    n.echo_ok()
    assert n.alive(), "node process died"


@pytest.fixture
def node_under_load(node):
    # artim_seconds (conf/node.toml): how long the node waits for a first PDU; kept
    # short so that a node that simply waits out bad bytes does not slow the suite
    return node(config={"node": {"max_pdu": 65536, "artim_seconds": 10}})


def test_garbage_bytes(node_under_load):
    n = node_under_load
    with HealthyTraffic(n):
        # an HTTP request: PDU type 'G', length 'T / ' = 1.4 GB
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + os.urandom(2048))
            end = c.wait_end(20)
            port1 = c.local_port
        _after(n, port1)
        # an A-ASSOCIATE-RQ header with a plausible length and a random body
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            c.send(struct.pack(">BBI", 0x01, 0, 200) + os.urandom(200))
            end2 = c.wait_end(20)
            port2 = c.local_port
        _after(n, port2)
        # random bytes that end in the middle of a PDU header, then half-close
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            c.send(b"\x04\x00\x00")
            c.sock.shutdown(socket.SHUT_WR)
            end3 = c.wait_end(20)
            port3 = c.local_port
        _after(n, port3)
    print(f"garbage: {end}, random A-ASSOCIATE-RQ: {end2}, short header: {end3}")


def test_truncated_dataset(node_under_load):
    n = node_under_load
    uid, study, series = generate_uid(), generate_uid(), generate_uid()
    with HealthyTraffic(n):
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            kind, info = c.associate(n.ae, "TRUNCATOR",
                                     [(1, rawpdu.CT_IMAGE_STORAGE, [rawpdu.IMPLICIT_LE])])
            assert kind == "AC", f"CT storage association refused: {kind} {info}"
            assert info["contexts"].get(1, (None,))[0] == 0, f"CT context not accepted: {info}"
            outcome, status = rawpdu.store_truncated(c, 1, uid, study, series, timeout=20)
            if outcome == "status":
                assert status is not None, "C-STORE-RSP without a status"
                assert status != 0x0000, "a truncated data set was answered with success"
                outcome = f"status {status:#06x}"
            if outcome.startswith("status"):
                c.release()
            port = c.local_port
        _after(n, port)
        time.sleep(0.5)
        stored = n.find_in_spool(uid)
        assert not stored, f"the truncated instance was stored: {stored}"
    print(f"truncated data set: {outcome}")


def test_unsupported_sop_class(node_under_load):
    n = node_under_load
    with HealthyTraffic(n):
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            kind, info = c.associate(n.ae, "ODDBALL", [(1, "1.2.3.4.5.6.7", [rawpdu.IMPLICIT_LE])])
            if kind == "AC":
                result = info["contexts"].get(1, (None,))[0]
                assert result is not None and result != 0, (
                    f"context for abstract syntax 1.2.3.4.5.6.7 accepted: {info}")
                c.release()
            else:
                assert kind in ("RJ", "ABORT", "CLOSED"), kind
            port = c.local_port
        _after(n, port)
    print(f"unsupported SOP class: {kind} {info}")


def test_oversized_pdu(node_under_load):
    n = node_under_load
    with HealthyTraffic(n):
        with rawpdu.RawClient("127.0.0.1", n.port) as c:
            kind, info = c.associate(n.ae, "BIGPDU", [(1, rawpdu.CT_IMAGE_STORAGE, [rawpdu.IMPLICIT_LE])])
            assert kind == "AC", f"CT storage association refused: {kind} {info}"
            max_pdu = info.get("max_pdu")
            assert max_pdu == 65536, f"node should advertise its max_pdu (65536): {info}"
            length = rawpdu.send_oversized_p_data(c, max_pdu)
            end = c.wait_end(20)
            port = c.local_port
        _after(n, port)
    print(f"oversized PDU ({length} > {max_pdu}): {end}")
