"""The local broker's choice and its binary (streams/tools/devbroker.py); no broker is started."""
import os
import types

import pytest

from streams.tools import devbroker


def test_the_broker_is_chosen_by_one_variable_with_noida_db_by_default(monkeypatch):
    monkeypatch.delenv(devbroker.BROKER_ENV, raising=False)
    assert devbroker.broker_kind().name == "noida"
    monkeypatch.setenv(devbroker.BROKER_ENV, "tansu")
    assert devbroker.broker_kind().name == "tansu"
    assert devbroker.broker_kind("noida").name == "noida"  # named explicitly
    monkeypatch.setenv(devbroker.BROKER_ENV, "kafka")
    with pytest.raises(SystemExit, match="one of noida, tansu"):
        devbroker.broker_kind()


def test_each_broker_states_its_gaps():
    noida, tansu = devbroker.KINDS["noida"], devbroker.KINDS["tansu"]
    assert (noida.true_end_offsets, noida.expires_sessions) == (True, False)
    assert (tansu.true_end_offsets, tansu.expires_sessions) == (False, True)


def test_a_proxy_port_is_refused_by_a_broker_that_cannot_advertise_it(tmp_path):
    with pytest.raises(ValueError, match="cannot advertise"):
        devbroker.DevBroker(tmp_path / "b.log", port=1, advertised_port=2, kind="noida")


def test_the_noida_binary_is_made_executable_when_an_install_left_it_without_the_mode(tmp_path, monkeypatch):
    binary = tmp_path / "noida-db"
    binary.write_bytes(b"#!/bin/sh\n")
    binary.chmod(0o644)
    monkeypatch.setitem(__import__("sys").modules, "noida_db",
                        types.SimpleNamespace(__file__=str(tmp_path / "__init__.py")))
    assert devbroker._noida_binary() == str(binary)
    assert os.access(binary, os.X_OK)
