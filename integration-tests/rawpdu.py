"""Hand-made DICOM Upper Layer PDUs (PS3.8) for feeding the node bad input.

Only what the tests need: A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE-RQ, A-ABORT, a
parser for A-ASSOCIATE-AC / -RJ, and DIMSE command sets in implicit VR LE.
"""
from __future__ import annotations

import socket
import struct
import time

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
APP_CONTEXT = "1.2.840.10008.3.1.1.1"

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}


def _ae(title: str) -> bytes:
    b = title.encode("ascii")
    assert 0 < len(b) <= 16
    return b.ljust(16, b" ")


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(called: str, calling: str, contexts: list[tuple[int, str, list[str]]],
                 max_pdu: int = 16384,
                 impl_uid: str = "1.2.826.0.1.3680043.10.1137.99.2",
                 impl_name: str = "AINODE_RAWTEST") -> bytes:
    """A-ASSOCIATE-RQ. contexts: (id (odd), abstract syntax UID, [transfer syntax UIDs])."""
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\x00" * 32
    body += _item(0x10, APP_CONTEXT.encode())
    for cid, abstract, tss in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in tss)
        body += _item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    user = (_item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, impl_uid.encode())
            + _item(0x55, impl_name.encode()))
    body += _item(0x50, user)
    return pdu(A_ASSOCIATE_RQ, body)


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, b"\x00" * 4)


def abort() -> bytes:
    return pdu(A_ABORT, b"\x00\x00\x00\x00")


def pdv(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs))


def parse_pdvs(body: bytes) -> list[tuple[int, int, bytes]]:
    """P-DATA-TF body -> [(context id, control header, fragment)]."""
    out, i = [], 0
    while i + 6 <= len(body):
        length, cid, ctrl = struct.unpack(">IBB", body[i:i + 6])
        out.append((cid, ctrl, body[i + 6:i + 4 + length]))
        i += 4 + length
    return out


# --- implicit VR little endian encoding (commands and tiny datasets) -----------------

def element(group: int, elem: int, value: bytes, length: int | None = None) -> bytes:
    """Implicit VR LE element; `length` overrides the encoded length (to lie)."""
    return struct.pack("<HHI", group, elem, len(value) if length is None else length) + value


def uid_value(uid: str) -> bytes:
    b = uid.encode()
    return b + b"\x00" if len(b) % 2 else b


def text_value(s: str) -> bytes:
    b = s.encode()
    return b + b" " if len(b) % 2 else b


def command_set(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    return command_set([
        element(0x0000, 0x0002, uid_value(sop_class)),
        element(0x0000, 0x0100, struct.pack("<H", 0x0001)),        # C-STORE-RQ
        element(0x0000, 0x0110, struct.pack("<H", message_id)),
        element(0x0000, 0x0700, struct.pack("<H", 0x0000)),        # priority medium
        element(0x0000, 0x0800, struct.pack("<H", 0x0000)),        # a data set follows
        element(0x0000, 0x1000, uid_value(sop_instance)),
    ])


def c_echo_rq(message_id: int) -> bytes:
    return command_set([
        element(0x0000, 0x0002, uid_value(VERIFICATION)),
        element(0x0000, 0x0100, struct.pack("<H", 0x0030)),
        element(0x0000, 0x0110, struct.pack("<H", message_id)),
        element(0x0000, 0x0800, struct.pack("<H", 0x0101)),        # no data set
    ])


def parse_implicit(data: bytes) -> dict[tuple[int, int], bytes]:
    """Flat implicit VR LE parse (no sequences): {(group, element): value bytes}."""
    out, i = {}, 0
    while i + 8 <= len(data):
        g, e, n = struct.unpack("<HHI", data[i:i + 8])
        out[(g, e)] = data[i + 8:i + 8 + n]
        i += 8 + n
    return out


def command_status(command: bytes) -> int | None:
    v = parse_implicit(command).get((0x0000, 0x0900))
    return struct.unpack("<H", v[:2])[0] if v and len(v) >= 2 else None


def truncated_ct_dataset(sop_instance: str, study: str, series: str) -> bytes:
    """A CT dataset in implicit VR LE whose last element (Pixel Data) claims 8192
    bytes but carries only 64: the element runs past the end of the data set."""
    els = [
        element(0x0008, 0x0016, uid_value(CT_IMAGE_STORAGE)),
        element(0x0008, 0x0018, uid_value(sop_instance)),
        element(0x0008, 0x0060, text_value("CT")),
        element(0x0010, 0x0010, text_value("TRUNCATED^TEST")),
        element(0x0010, 0x0020, text_value("TRUNC")),
        element(0x0020, 0x000D, uid_value(study)),
        element(0x0020, 0x000E, uid_value(series)),
        element(0x0028, 0x0002, struct.pack("<H", 1)),
        element(0x0028, 0x0004, text_value("MONOCHROME2")),
        element(0x0028, 0x0010, struct.pack("<H", 64)),
        element(0x0028, 0x0011, struct.pack("<H", 64)),
        element(0x0028, 0x0100, struct.pack("<H", 16)),
        element(0x0028, 0x0101, struct.pack("<H", 12)),
        element(0x0028, 0x0102, struct.pack("<H", 11)),
        element(0x0028, 0x0103, struct.pack("<H", 0)),
        element(0x7FE0, 0x0010, b"\x01\x02" * 32, length=8192),
    ]
    return b"".join(els)


# --- association info ----------------------------------------------------------------

def parse_associate_ac(body: bytes) -> dict:
    """A-ASSOCIATE-AC body -> {"contexts": {id: (result, ts)}, "max_pdu": int|None, ...}."""
    info = {"called": body[4:20].decode(errors="replace").strip(),
            "calling": body[20:36].decode(errors="replace").strip(),
            "contexts": {}, "max_pdu": None}
    i = 68
    while i + 4 <= len(body):
        itype, _, ilen = struct.unpack(">BBH", body[i:i + 4])
        payload = body[i + 4:i + 4 + ilen]
        if itype == 0x21:
            cid, _, result, _ = payload[:4]
            ts = None
            j = 4
            while j + 4 <= len(payload):
                st, _, sl = struct.unpack(">BBH", payload[j:j + 4])
                if st == 0x40:
                    ts = payload[j + 4:j + 4 + sl].decode(errors="replace").rstrip("\x00 ")
                j += 4 + sl
            info["contexts"][cid] = (result, ts)
        elif itype == 0x50:
            j = 0
            while j + 4 <= len(payload):
                st, _, sl = struct.unpack(">BBH", payload[j:j + 4])
                if st == 0x51 and sl == 4:
                    info["max_pdu"] = struct.unpack(">I", payload[j + 4:j + 8])[0]
                j += 4 + sl
        i += 4 + ilen
    return info


def parse_associate_rj(body: bytes) -> dict:
    return {"result": body[1], "source": body[2], "reason": body[3]} if len(body) >= 4 else {}


class RawClient:
    """A TCP connection that speaks PDUs byte by byte."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, bind: str | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if bind:
            self.sock.bind((bind, 0))
        self.sock.connect((host, port))
        self.local_port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> bool:
        """Send; False when the peer has already closed / reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def recv_pdu(self, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """Next PDU as (type, body); None when the connection is closed or reset.
        Raises socket.timeout if nothing comes within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            head = self._recv_exact(6)
            if head is None:
                return None
            ptype, _, length = struct.unpack(">BBI", head)
            body = self._recv_exact(length) if length else b""
            if body is None:
                return None
            return ptype, body
        except ConnectionResetError:
            return None

    def associate(self, called: str, calling: str, contexts, max_pdu: int = 16384,
                  timeout: float = 10.0) -> tuple[str, dict]:
        """Send A-ASSOCIATE-RQ; returns ("AC", info) / ("RJ", info) / ("ABORT", {}) /
        ("CLOSED", {})."""
        self.send(associate_rq(called, calling, contexts, max_pdu))
        got = self.recv_pdu(timeout)
        if got is None:
            return "CLOSED", {}
        ptype, body = got
        if ptype == A_ASSOCIATE_AC:
            return "AC", parse_associate_ac(body)
        if ptype == A_ASSOCIATE_RJ:
            return "RJ", parse_associate_rj(body)
        if ptype == A_ABORT:
            return "ABORT", {}
        raise AssertionError(f"unexpected answer to A-ASSOCIATE-RQ: PDU type {ptype:#x}")

    def wait_end(self, timeout: float) -> str:
        """Read (and drop) PDUs until the peer aborts or closes. Returns
        "abort", "reject" or "closed"; raises AssertionError if the connection is
        still open after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s")
            try:
                got = self.recv_pdu(left)
            except socket.timeout:
                raise AssertionError(f"connection still open after {timeout}s") from None
            except OSError:
                return "closed"
            if got is None:
                return "closed"
            if got[0] == A_ABORT:
                return "abort"
            if got[0] == A_ASSOCIATE_RJ:
                return "reject"

    def release(self, timeout: float = 10.0) -> str:
        """A-RELEASE-RQ; returns "released", "abort" or "closed"."""
        if not self.send(release_rq()):
            return "closed"
        try:
            got = self.recv_pdu(timeout)
        except socket.timeout:
            return "timeout"
        if got is None:
            return "closed"
        return {A_RELEASE_RP: "released", A_ABORT: "abort"}.get(got[0], f"pdu {got[0]:#x}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- the bad-input procedures (shared by the node tests and the harness self-check) ---

def send_oversized_p_data(c: RawClient, max_pdu: int, context_id: int = 1, excess: int = 4096) -> int:
    """Send one P-DATA-TF whose length is `excess` bytes over the peer's advertised
    maximum PDU length (one data PDV of zeros). Stops quietly if the peer closes
    the connection while we are still sending. Returns the PDU length used."""
    length = max_pdu + excess
    pdv_len = length - 4
    header = struct.pack(">BBI", P_DATA_TF, 0, length) + struct.pack(">IBB", pdv_len, context_id, 0x00)
    c.sock.settimeout(10)
    if c.send(header):
        try:
            c.sock.sendall(b"\x00" * (pdv_len - 2))
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
    return length


def store_truncated(c: RawClient, context_id: int, sop_instance: str, study: str, series: str,
                    timeout: float = 20.0) -> tuple[str, int | None]:
    """C-STORE-RQ followed by a data set that ends inside an element. Returns
    ("status", status) for a C-STORE-RSP, ("abort", None) or ("closed", None).
    Raises AssertionError when nothing happens within `timeout`."""
    c.send(p_data(pdv(context_id, c_store_rq(1, CT_IMAGE_STORAGE, sop_instance), command=True, last=True)))
    c.send(p_data(pdv(context_id, truncated_ct_dataset(sop_instance, study, series),
                      command=False, last=True)))
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no C-STORE-RSP, A-ABORT or close within {timeout}s")
        try:
            got = c.recv_pdu(left)
        except socket.timeout:
            continue
        if got is None:
            return "closed", None
        if got[0] == A_ABORT:
            return "abort", None
        if got[0] == P_DATA_TF:
            for _cid, ctrl, frag in parse_pdvs(got[1]):
                if ctrl & 0x01:
                    return "status", command_status(frag)
