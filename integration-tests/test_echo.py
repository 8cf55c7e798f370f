"""1. C-ECHO: called AE check, [[accept]] list (calling AE and host), `ainode echo`."""
from conftest import ainode_bin, free_port, pynetdicom_ae, run, tool


def echoscu(port: int, called: str, calling: str):
    return run([tool("echoscu"), "-to", "10", "-ta", "10", "-td", "10",
                "-aec", called, "-aet", calling, "127.0.0.1", port], timeout=40)


def pynetdicom_echo(port: int, called: str, calling: str, bind: str):
    """C-ECHO from a chosen source address; returns (established, status)."""
    ae = pynetdicom_ae(calling)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called, bind_address=(bind, 0))
        if not assoc.is_established:
            return False, None
        st = assoc.send_c_echo()
        assoc.release()
        return True, (int(st.Status) if st is not None and "Status" in st else None)
    finally:
        ae.shutdown()


def test_echo_called_ae(node):
    n = node()
    ok = echoscu(n.port, n.ae, "ANYONE")
    assert ok.returncode == 0, f"C-ECHO to the right AE failed:\n{ok.stderr}\n{n.log_tail()}"
    bad = echoscu(n.port, "WRONG", "ANYONE")
    assert bad.returncode != 0, "association with called AE 'WRONG' was accepted"
    n.echo_ok()  # still serving
    assert "127.0.0.1" in n.log_text(), "node log never names the peer address"


def test_echo_accept_list(node):
    n = node(config={"accept": [
        {"calling_ae": "ALLOWED", "host": "127.0.0.1"},
        {"calling_ae": "FARHOST", "host": "127.0.0.2"},
    ]})
    ok = echoscu(n.port, n.ae, "ALLOWED")
    assert ok.returncode == 0, f"listed calling AE was refused:\n{ok.stderr}\n{n.log_tail()}"
    stranger = echoscu(n.port, n.ae, "STRANGER")
    assert stranger.returncode != 0, "unlisted calling AE 'STRANGER' was accepted"
    # FARHOST is listed, but only from 127.0.0.2; echoscu connects from 127.0.0.1
    wrong_host = echoscu(n.port, n.ae, "FARHOST")
    assert wrong_host.returncode != 0, "calling AE 'FARHOST' accepted from a host not in its entry"

    # From 127.0.0.2 (loopback too, so the node sees that source address):
    # ALLOWED is refused there, FARHOST is accepted -- the host is really checked.
    established, _ = pynetdicom_echo(n.port, n.ae, "ALLOWED", bind="127.0.0.2")
    assert not established, "calling AE 'ALLOWED' accepted from 127.0.0.2, its entry says 127.0.0.1"
    established, status = pynetdicom_echo(n.port, n.ae, "FARHOST", bind="127.0.0.2")
    assert established and status == 0x0000, (
        f"'FARHOST' from 127.0.0.2 should be accepted (established={established}, "
        f"status={status}):\n{n.log_tail()}")
    assert "127.0.0.2" in n.log_text(), "node log does not name the peer address 127.0.0.2"
    n.echo_ok("ALLOWED")


def test_ainode_echo_cli(storescp, tmp_path):
    scp = storescp(ae="ECHODEST")
    bin_ = ainode_bin()
    res = run([bin_, "echo", f"ECHODEST@127.0.0.1:{scp.port}"], timeout=60, cwd=tmp_path)
    assert res.returncode == 0, f"ainode echo failed:\n{res.stdout}\n{res.stderr}"
    res = run([bin_, "echo", f"ECHODEST@127.0.0.1:{scp.port}", "--calling-ae", "CLITEST"],
              timeout=60, cwd=tmp_path)
    assert res.returncode == 0, f"ainode echo --calling-ae failed:\n{res.stdout}\n{res.stderr}"
    assert "CLITEST" in scp.log_text(), "storescp did not see calling AE CLITEST"
    # nothing listens on this port: the command must fail, not hang or succeed
    res = run([bin_, "echo", f"NOBODY@127.0.0.1:{free_port()}"], timeout=90, cwd=tmp_path)
    assert res.returncode != 0, "ainode echo to a closed port reported success"
