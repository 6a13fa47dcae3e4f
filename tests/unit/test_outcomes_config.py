"""The [acct] keys: file, environment, command line; what the engine gets; refused values; the
shipped example config."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmta_snmp.config import ConfigError, load_config
from pmta_snmp.integrations.cli import main as integrations_main
from pmta_snmp.outcomes.engine import EngineSettings

REPO = Path(__file__).resolve().parents[2]


def test_acct_section_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[acct]\nfiles = "/var/log/pmta/acct*.csv"\nbackfill = 3600\n'
                    "max_source_ips = 10\n")
    cfg = load_config(path, environ={"PMTA_SNMP_ACCT_STATE_DIR": "/srv/state",
                                     "PMTA_SNMP_ACCT_MAX_SENDING_DOMAINS": "7"})
    s = EngineSettings.from_config(cfg.acct)
    assert (s.files, s.state_dir, s.backfill, s.max_source_ips, s.max_sending_domains) == (
        "/var/log/pmta/acct*.csv", "/srv/state", 3600.0, 10, 7)


@pytest.mark.parametrize("text", ["[acct]\nbackfill = -1\n", "[acct]\ninterval = 0\n",
                                  "[acct]\nmax_source_ips = -2\n", "[acct]\nfile = 'x'\n"])
def test_bad_acct_values_are_refused_with_the_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="acct"):
        load_config(path, environ={})


def test_the_shipped_example_config_loads() -> None:
    cfg = load_config(REPO / "contrib" / "config" / "agent.toml", environ={})
    assert cfg.acct.files is None and cfg.acct.backfill == 86400


def test_exporter_refuses_an_unusable_provider_map_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text("[providers.Gmail]\ndomains = ['gmail.com']\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[acct]\nfiles = "{tmp_path}/acct.csv"\nproviders_file = "{bad}"\n')
    rc = integrations_main(["exporter", "--config", str(config), "--listen", "127.0.0.1:0",
                            "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert rc == 2 and "providers.toml" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
