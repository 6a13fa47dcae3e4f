"""The provider map: recipient domain first (exact, then name.*), then the MX host in dsnMta;
the shipped file; an edited file's error paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pmta_snmp.outcomes import providers
from pmta_snmp.outcomes.files import OutcomesFileError
from pmta_snmp.outcomes.providers import (
    OTHER,
    default_providers,
    load_providers,
    mx_host,
    rcpt_domain,
)

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"gmail", "microsoft", "yahoo", "apple", "comcast", "att", "gmx", "orange",
            "t-online", "mailru", "yandex", "qq", "proofpoint", "mimecast", "other"}


@pytest.mark.parametrize(("domain", "dsn_mta", "provider"), [
    ("gmail.com", "gmail-smtp-in.l.google.com (192.0.2.26)", "gmail"),
    ("googlemail.com", "", "gmail"),
    # Google Workspace and Microsoft 365 customers' own domains, by their MX
    ("corp.example.com", "aspmx.l.google.com (192.0.2.27)", "gmail"),
    ("corp.example.com", "ALT1.ASPMX.L.GOOGLE.COM. (192.0.2.27)", "gmail"),
    ("contoso.example", "contoso-example.mail.protection.outlook.com (192.0.2.40)", "microsoft"),
    ("contoso.example", "contoso-example.o-v1.mx.microsoft (192.0.2.41)", "microsoft"),
    ("outlook.com", "outlook-com.olc.protection.outlook.com (192.0.2.28)", "microsoft"),
    ("hotmail.co.uk", "", "microsoft"),
    ("hotmail.fr", "", "microsoft"),
    ("live.com", "", "microsoft"),
    ("msn.com", "", "microsoft"),
    ("yahoo.com", "mta5.am0.yahoodns.net (192.0.2.29)", "yahoo"),
    ("yahoo.com.br", "", "yahoo"),
    ("aol.com", "", "yahoo"),
    ("ymail.com", "", "yahoo"),
    ("icloud.com", "mx01.mail.icloud.com (192.0.2.30)", "apple"),
    ("me.com", "", "apple"),
    ("comcast.net", "", "comcast"),
    ("sbcglobal.net", "", "att"),
    ("gmx.de", "", "gmx"),
    ("gmx.net", "", "gmx"),
    ("web.de", "", "gmx"),
    ("mail.com", "", "gmx"),
    ("orange.fr", "", "orange"),
    ("wanadoo.fr", "", "orange"),
    ("t-online.de", "", "t-online"),
    ("mail.ru", "", "mailru"),
    ("yandex.ru", "", "yandex"),
    ("company.example", "mx.yandex.net (192.0.2.50)", "yandex"),
    ("qq.com", "", "qq"),
    ("bank.example", "mx0a-00123456.pphosted.com (192.0.2.60)", "proofpoint"),
    ("shop.example", "eu-smtp-inbound-1.mimecast.com (192.0.2.61)", "mimecast"),
    # not matched: a look-alike host, a name.* that is really a sub-domain, bare IPs
    ("corp.example.com", "mx.notgoogle.com (192.0.2.70)", OTHER),
    ("yahoo.example.com", "", OTHER),
    ("example.org", "[192.0.2.70]", OTHER),
    ("example.org", "2001:db8::25", OTHER),
    ("example.org", "", OTHER),
    ("", "", OTHER),
    # the domain decides before the MX; [providers.other] takes a name out of yahoo.*
    ("gmail.com", "mx.example.org (192.0.2.71)", "gmail"),
    ("yahoo.co.jp", "mx.mail.yahoo.co.jp (192.0.2.72)", OTHER),
])
def test_provider_of_a_record(domain: str, dsn_mta: str, provider: str) -> None:
    assert default_providers().provider(domain, dsn_mta) == provider


def test_the_shipped_map_has_the_required_ids_in_lower_case() -> None:
    ids = default_providers().ids
    assert set(ids) >= REQUIRED
    assert ids[-1] == OTHER and all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids)
    assert default_providers().describe("gmx").startswith("1&1")


def test_contrib_copy_is_the_shipped_file() -> None:
    shipped = Path(providers.__file__).with_name("providers.toml")
    assert (REPO / "contrib" / "outcomes" / "providers.toml").read_bytes() == \
        shipped.read_bytes()


@pytest.mark.parametrize(("value", "expected"), [
    ("gmail-smtp-in.l.google.com (192.0.2.26)", "gmail-smtp-in.l.google.com"),
    ("MX.Example.ORG. (192.0.2.1)", "mx.example.org"),
    ("[192.0.2.1]", ""), ("192.0.2.1", ""), ("2001:db8::1", ""), ("", ""), ("   ", ""),
])
def test_mx_host(value: str, expected: str) -> None:
    assert mx_host(value) == expected


@pytest.mark.parametrize(("rcpt", "expected"), [
    ("Jane@GMail.COM", "gmail.com"), ("<jane@example.org.>", "example.org"),
    ("no-domain", "no-domain"), ("", ""),
])
def test_rcpt_domain(rcpt: str, expected: str) -> None:
    assert rcpt_domain(rcpt) == expected


def test_lookups_are_cached_and_the_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "_CACHE_MAX", 8)
    m = load_providers()
    for i in range(50):
        assert m.provider(f"d{i}.example", "aspmx.l.google.com (192.0.2.1)") == "gmail"
    assert len(m._cache) <= 8


# --- an edited map --------------------------------------------------------------------------

def _map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_edited_map_is_used(tmp_path: Path) -> None:
    m = load_providers(_map(tmp_path, """
[providers.acme]
description = "ACME's own mail"
domains = ["acme.example", "ACME.*"]
mx = ["mail.acme.example"]
"""))
    assert m.ids == ("acme", OTHER)
    assert m.provider("acme.example") == "acme"
    assert m.provider("acme.co.uk") == "acme"
    assert m.provider("x.example", "in1.mail.acme.example (192.0.2.9)") == "acme"
    assert m.provider("gmail.com", "gmail-smtp-in.l.google.com (192.0.2.26)") == OTHER


@pytest.mark.parametrize(("text", "message"), [
    ("[providers.gmail]\ndomains = [gmail.com]\n",
     r"not valid TOML: .*\(at line 2, column 12\)"),
    ("[providers.gmail]\ndomains = ['gmail.com']\n\n[providers.Big_Mail]\n"
     "domains = ['x.example']\n",
     r"line 4 \[providers\.Big_Mail\]: provider id 'Big_Mail' must be lower case"),
    ("[providers.gmail]\ndomains = ['gmail.com']\n\n[providers.acme]\n"
     "domains = ['*.acme.example']\n",
     r"line 4 \[providers\.acme\]: domains entry '\*\.acme\.example' is not a domain"),
    ("[providers.acme]\nmx = ['mx acme']\n",
     r"line 1 \[providers\.acme\]: mx entry 'mx acme' is not a host suffix"),
    ("[providers.acme]\ndomains = 'acme.example'\n",
     r"line 1 \[providers\.acme\]: domains must be a list of strings"),
    ("[providers.acme]\ndomain = ['acme.example']\n",
     r"line 1 \[providers\.acme\]: unknown key 'domain'"),
    ("[providers.acme]\ndescription = 3\n", r"description must be a string"),
    ("[providers.a]\ndomains = ['x.example']\n[providers.b]\ndomains = ['X.example']\n",
     r"domain 'x\.example' is listed under both \[providers\.a\] and \[providers\.b\]"),
    ("[providers.a]\nmx = ['google.com']\n[providers.b]\nmx = ['google.com']\n",
     r"mx suffix 'google\.com' is listed under both"),
    ("[provider.gmail]\ndomains = ['gmail.com']\n", r"unknown top-level key 'provider'"),
    ("# nothing\n", r"no \[providers\.<id>\] tables"),
    ("providers = 3\n", r"no \[providers\.<id>\] tables"),
])
def test_a_broken_map_names_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _map(tmp_path, text)
    with pytest.raises(OutcomesFileError) as err:
        load_providers(path)
    assert str(err.value).startswith(str(path)), err.value
    assert re.search(message, str(err.value)), err.value


def test_an_unreadable_map_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutcomesFileError, match=r"providers\.toml: cannot read: No such file"):
        load_providers(tmp_path / "providers.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[providers.caf\xe9]\n")
    with pytest.raises(OutcomesFileError, match=r"latin1\.toml: cannot read: .*utf-8"):
        load_providers(bad)
