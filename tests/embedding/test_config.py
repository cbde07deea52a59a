"""The server's settings: flags over environment over defaults, and the combinations it
refuses to start with."""

from __future__ import annotations

import pytest

from embedding import config as contract


def test_defaults_then_environment_then_flags():
    plain = contract.parse([], {})
    assert (plain.shard_index, plain.shard_count, plain.host) == (0, 1, contract.LOOPBACK)
    assert plain.limits == contract.LookupLimits()
    assert plain.stream_auth is None
    environ = {contract.LOOKUP_PORT.env: "7000", contract.SHARD_COUNT.env: "4",
               contract.SHARD_INDEX.env: "3"}
    assert contract.parse([], environ).lookup_port == 7000
    flagged = contract.parse([contract.LOOKUP_PORT.flag, "7001"], environ)
    assert (flagged.lookup_port, flagged.shard_index, flagged.shard_count) == (7001, 3, 4)


def test_every_setting_has_a_flag_or_a_variable_and_names_are_unique():
    flags = [o.flag for o in contract.OPTIONS if o.flag]
    envs = [o.env for o in contract.OPTIONS if o.env]
    dests = [o.dest for o in contract.OPTIONS]
    assert all(o.flag or o.env for o in contract.OPTIONS)
    for names in (flags, envs, dests):
        assert len(names) == len(set(names))


def test_the_stream_password_comes_from_the_environment_only():
    assert contract.KAFKA_PASSWORD.flag is None
    environ = {contract.KAFKA_SECURITY_PROTOCOL.env: "SASL_SSL",
               contract.KAFKA_SASL_MECHANISM.env: "PLAIN",
               contract.KAFKA_USERNAME.env: "emb", contract.KAFKA_PASSWORD.env: "hunter2"}
    auth = contract.parse([], environ).stream_auth
    assert auth == contract.StreamAuth("SASL_SSL", "PLAIN", "emb", "hunter2")
    assert "hunter2" not in repr(auth) and "hunter2" not in auth.describe()


@pytest.mark.parametrize("argv,environ,needle", [
    (["--shard-index", "2", "--shard-count", "2"], {}, "shard-index < shard-count"),
    (["--max-ids", "0"], {}, "lookup limits"),
    (["--admin-tls-cert", "/c.pem"], {}, "go together"),
    (["--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", "PLAIN",
      "--kafka-username", "emb"], {}, "RECOP_KAFKA_PASSWORD"),
    (["--kafka-sasl-mechanism", "GSSAPI"], {}, "invalid choice"),
])
def test_settings_the_server_cannot_run_with_are_refused(argv, environ, needle, capsys):
    with pytest.raises(SystemExit):
        contract.parse(argv, environ)
    assert needle in capsys.readouterr().err
