"""What `/probe` accepts as a target, which targets a module's globs allow, and the `[probe]`
configuration (a module with an API key must name its targets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pmta_snmp.config import ConfigError, ProbeModule, ProbeSection, load_config, with_overrides
from pmta_snmp.probe import Prober, ProbeRefused, parse_target, target_matcher


@pytest.mark.parametrize(
    ("target", "origin"),
    [
        ("https://PMTA-01.Example.NET:8080", "https://pmta-01.example.net:8080"),
        ("https://pmta-01.example.net:8080/", "https://pmta-01.example.net:8080"),
        ("http://pmta", "http://pmta:80"),
        ("https://pmta", "https://pmta:443"),
        ("HTTPS://10.0.0.7:8080", "https://10.0.0.7:8080"),
        ("https://[fd00::7]:8080", "https://[fd00::7]:8080"),
        ("http://[::1]", "http://[::1]:80"),
        ("http://[0:0:0:0:0:0:0:1]:8080", "http://[::1]:8080"),
        ("https://[FD00:0::0007]", "https://[fd00::7]:443"),
        ("https://[::1]:443", "https://[::1]:443"),
    ],
)
def test_a_target_is_reduced_to_its_origin(target: str, origin: str) -> None:
    assert parse_target(target) == origin


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (None, "missing target"),
        ("", "missing target"),
        ("pmta:8080", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://pmta:70", "http:// or https://"),
        ("https://user:pw@pmta:8080", "credentials"),
        ("https://user@pmta:8080", "credentials"),
        ("https://pmta:8080/status", "without path"),
        ("https://pmta:8080?x=1", "without path"),
        ("https://pmta:8080#f", "without path"),
        ("https://pmta:8080/..%2fx", "without path"),
        ("https://pm_ta:8080", "malformed host"),
        ("https://pmta%2eevil:8080", "malformed host"),
        ("https://-pmta:8080", "malformed host"),
        ("https://[::1:8080", "malformed host"),
        ("https://[]:8080", "malformed host"),
        ("https://[::1]]:8080", "malformed host"),
        ("https://[::1]evil:8080", "malformed host"),
        ("https://pmta:0", "malformed port"),
        ("https://pmta:65536", "malformed port"),
        ("https://pmta:80a", "malformed port"),
        ("https://pmta\n:8080", "not printable"),
        ("https://pmtä:8080", "not printable ASCII"),
        ("https://" + "a" * 600 + ":8080", "too long"),
    ],
)
def test_targets_other_than_an_origin_are_refused_with_400(target: str | None,
                                                          reason: str) -> None:
    with pytest.raises(ProbeRefused) as caught:
        parse_target(target)
    assert caught.value.status == 400
    assert reason in caught.value.reason
    assert "pw" not in caught.value.reason


def test_a_star_stays_within_one_label_and_the_port_and_scheme_must_match() -> None:
    allowed = target_matcher(["https://pmta-*.example.net:8080", "http://10.0.0.?:80*",
                              "https://mx.example.org"])
    assert allowed(parse_target("https://pmta-07.example.net:8080"))
    assert allowed(parse_target("https://PMTA-x.example.net:8080"))
    assert not allowed(parse_target("https://pmta-07.example.net.evil.test:8080"))
    assert not allowed(parse_target("https://pmta-07.evil.test:8080"))
    assert not allowed(parse_target("https://pmta-a.b.example.net:8080"))
    assert not allowed(parse_target("http://pmta-07.example.net:8080"))
    assert not allowed(parse_target("https://pmta-07.example.net:8081"))
    assert allowed(parse_target("http://10.0.0.7:8080"))
    assert allowed(parse_target("http://10.0.0.7:80"))
    assert not allowed(parse_target("http://10.0.0.77:8080"))
    assert allowed(parse_target("https://mx.example.org"))
    assert allowed(parse_target("https://mx.example.org:443"))
    assert not allowed(parse_target("https://mx.example.org:8443"))
    assert not target_matcher([])(parse_target("https://mx.example.org"))


def test_an_ipv6_target_matches_its_pattern_however_either_is_written() -> None:
    allowed = target_matcher(["https://[FD00:0:0::7]:8080", "http://[::1]"])
    assert allowed(parse_target("https://[fd00::7]:8080"))
    assert allowed(parse_target("https://[fd00:0000::0007]:8080"))
    assert allowed(parse_target("http://[0:0:0:0:0:0:0:1]:80"))
    assert not allowed(parse_target("https://[fd00::8]:8080"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_probe_modules_load_from_toml_with_their_targets(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
[probe]
max_concurrent = 3
[probe.modules.default]
timeout = 4
[probe.modules.fleet]
api_key_file = "/etc/pmta-snmp/fleet-key"
ca_file = "/etc/pmta-snmp/fleet-ca.pem"
api_format = "json"
targets = ["https://pmta-*.example.net:8080"]
license_interval = 0
"""), environ={})
    assert cfg.probe.max_concurrent == 3
    assert cfg.probe.modules["default"] == ProbeModule(timeout=4)
    fleet = cfg.probe.modules["fleet"]
    assert fleet.targets == ("https://pmta-*.example.net:8080",)
    assert fleet.api_format == "json" and fleet.license_interval == 0
    assert not cfg.pmta_url_set


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[probe.modules.k]\napi_key_file = "/k"\n', "must list the targets"),
        ('[probe.modules.m]\ntargets = ["pmta-*:8080"]\n', "is not scheme://host"),
        ('[probe.modules.m]\ntargets = ["https://pmta:8080/x"]\n', "is not scheme://host"),
        ('[probe.modules.m]\ntargets = "https://pmta:8080"\nbogus = 1\n', "unknown key"),
        ("[probe]\nmax_concurrent = 0\n[probe.modules.m]\n", "max_concurrent"),
        ("[probe.modules.m]\ntimeout = 0\n", "timeout must be positive"),
        ('[probe.modules."a b"]\n', "module name"),
        ('[probe.modules.m]\napi_format = "csv"\n', "api_format"),
        ("[probe]\nmodules = 3\n", "must be a table"),
    ],
)
def test_bad_probe_configuration_is_refused_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_the_environment_overrides_probe_keys(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[probe.modules.default]\n"),
                      environ={"PMTA_SNMP_PROBE_MAX_CONCURRENT": "5"})
    assert cfg.probe.max_concurrent == 5


def test_pmta_url_set_says_whether_a_url_was_given(tmp_path: Path) -> None:
    assert not load_config(None, environ={}).pmta_url_set
    assert load_config(write(tmp_path, '[pmta]\nurl = "https://pmta:8080"\n'),
                       environ={}).pmta_url_set
    assert load_config(None, environ={"PMTA_SNMP_PMTA_URL": "https://pmta:8080"}).pmta_url_set
    cli = with_overrides(load_config(None, environ={}), pmta={"url": "https://pmta:8080"})
    assert cli.pmta_url_set
    assert not with_overrides(load_config(None, environ={}), pmta={"url": None}).pmta_url_set


def test_an_unreadable_module_key_file_fails_at_start(tmp_path: Path) -> None:
    section = ProbeSection(modules={"fleet": ProbeModule(
        api_key_file=str(tmp_path / "missing"), targets=("https://pmta:8080",))})
    with pytest.raises(ConfigError, match=r"probe\.modules\.fleet: cannot read API key file"):
        Prober(section)


def test_a_key_module_refuses_other_targets_with_403_and_the_default_applies(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n", encoding="utf-8")
    prober = Prober(ProbeSection(modules={
        "fleet": ProbeModule(api_key_file=str(key), targets=("https://pmta-*.example.net:8080",)),
        "default": ProbeModule(),
    }))
    mod, origin = prober.check("https://pmta-1.example.net:8080", "fleet")
    assert (mod.name, origin) == ("fleet", "https://pmta-1.example.net:8080")
    assert mod.api_key == "k" * 40
    with pytest.raises(ProbeRefused) as caught:
        prober.check("https://evil.test:8080", "fleet")
    assert caught.value.status == 403
    mod, _ = prober.check("https://evil.test:8080", None)
    assert mod.name == "default" and mod.api_key is None
    with pytest.raises(ProbeRefused) as unknown:
        prober.check("https://pmta-1.example.net:8080", "nope")
    assert unknown.value.status == 400 and "unknown module" in unknown.value.reason


def test_the_contrib_config_loads_with_its_probe_examples_uncommented(tmp_path: Path) -> None:
    """The commented [probe.modules] examples of contrib/config/agent.toml stay valid."""
    text = (Path(__file__).resolve().parents[2] / "contrib/config/agent.toml").read_text()
    assert load_config(write(tmp_path, text), environ={}).probe.modules == {}
    lines, in_probe = [], False
    for line in text.splitlines():
        if line.startswith("["):
            in_probe = line.startswith("[probe]")
        example = in_probe and re.match(r"# (\[probe\.|[a-z_]+ = )", line)
        lines.append(line[2:] if example else line)
    cfg = load_config(write(tmp_path, "\n".join(lines)), environ={})
    assert set(cfg.probe.modules) == {"default", "licensed"}
    assert cfg.probe.modules["licensed"].api_key_file == "/etc/pmta-snmp/fleet-api-key"
