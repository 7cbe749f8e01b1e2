"""eximtrack.ports: the ports the local broker and the dev stack are told to use lie below the kernel's
ephemeral range (where outgoing connections take their local ports), bind, and are not taken twice in a row."""

from __future__ import annotations

import socket

from eximtrack import ports


def test_free_ports_lie_below_the_ephemeral_range_and_bind():
    eph = ports.ephemeral_ports()
    got = {ports.free_port() for _ in range(20)}
    assert len(got) > 1  # picked at random, not one fixed port
    for port in got:
        assert port not in eph and port >= ports.LOWEST_PORT, (port, eph)
        assert ports.port_free(port)


def test_a_port_someone_listens_on_is_not_free_and_not_picked(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.free_port()))
        s.listen()
        taken = s.getsockname()[1]
        assert not ports.port_free(taken) and not ports.port_free(taken, reuse=True)
        # the only port of the pool is taken: the kernel picks one (in its ephemeral range)
        monkeypatch.setattr(ports, "LOWEST_PORT", taken)
        monkeypatch.setattr(ports, "ephemeral_ports", lambda: range(taken + 1, 65536))
        got = ports.free_port()
        assert got != taken and got in range(taken + 1, 65536) and ports.port_free(got)
    assert ports.port_free(taken, reuse=True)


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path, monkeypatch):
    f = tmp_path / "ip_local_port_range"
    f.write_text("40000\t50000\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", f)
    assert ports.ephemeral_ports() == range(40000, 50001)
    assert 28000 <= ports.free_port() < 40000
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    low, high = ports.DEFAULT_EPHEMERAL
    assert ports.ephemeral_ports() == range(low, high + 1)
