"""``check-config`` (and ``serve``, which loads the same way) refuses what issue 10 found
accepted: duplicate AE titles, a peer without ``kind``, routes to engines that are not
installed, lower-case modalities and a malformed private-tag allow-list (``serve`` used to
crash on it at the first instance).  One line per error, naming the key."""

from __future__ import annotations

from pathlib import Path

from dicom_node.cli import main

PEER = '[[peers]]\nname = "pacs"\nae_title = "PACS"\nport = 104\nkind = "clinical"\n'
ROUTE = '[[routes]]\nengine = "ct_lung"\nmodality = "CT"\n'


def check(tmp_path: Path, text: str, capsys, command: str = "check-config") -> tuple[int, str]:  # noqa: ANN001
    path = tmp_path / "node.toml"
    path.write_text(text)
    args = [command, str(path)] if command == "check-config" else [command, "--config", str(path)]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_good_file_passes(tmp_path, capsys):
    code, out = check(tmp_path, PEER + ROUTE, capsys)
    assert code == 0 and "OK (1 peers, 1 routes" in out and "warning" not in out


def test_each_field_error_is_one_line_naming_its_key(tmp_path, capsys):
    text = ('[deid]\nprivate_tag_allowlist = ["0019,xx0c SIEMENS", "(0018,xx01) EVEN GROUP"]\n'
            '[[peers]]\nname = "pacs"\nae_title = "PACS"\nport = 104\n'
            '[[routes]]\nengine = "ct_lung"\nmodality = "ct"\nrequires = ["rtstruct"]\n')
    code, out = check(tmp_path, text, capsys)
    assert code == 2
    lines = [x.strip() for x in out.splitlines() if x.startswith("  ")]
    keys = sorted(line.split(":")[0] for line in lines)
    assert keys == ["deid.private_tag_allowlist", "peers.0.kind", "routes.0.modality",
                    "routes.0.requires.0"], lines
    assert "'0019,xx0c SIEMENS' is not '(gggg,xxee) CREATOR'" in out


def test_second_allowlist_entry_even_group(tmp_path, capsys):
    code, out = check(tmp_path, PEER + ROUTE + '[deid]\nprivate_tag_allowlist = '
                      '["(0019,xx0c) SIEMENS MR HEADER", "(0018,xx01) EVEN"]\n', capsys)
    assert code == 2 and "'(0018,xx01) EVEN' is not" in out


def test_serve_refuses_a_malformed_allowlist_instead_of_crashing(tmp_path, capsys):
    code, out = check(tmp_path, PEER + '[deid]\nprivate_tag_allowlist = ["SIEMENS"]\n', capsys,
                      command="serve")
    assert code == 2 and "deid.private_tag_allowlist" in out


def test_duplicate_ae_titles(tmp_path, capsys):
    code, out = check(tmp_path, PEER + PEER.replace('"pacs"', '"pacs2"') + ROUTE, capsys)
    assert code == 2 and "duplicate AE title(s) ['PACS']" in out


def test_unknown_engine(tmp_path, capsys):
    code, out = check(tmp_path, PEER + ROUTE.replace("ct_lung", "ct_lungs"), capsys)
    assert code == 2 and "routes.0.engine: 'ct_lungs' is not an installed engine" in out


def test_accept_unknown_calling_ae_and_open_peer_warn(tmp_path, capsys):
    code, out = check(tmp_path, '[node]\naccept_unknown_calling_ae = true\n'
                      + PEER + "check_host = false\n" + ROUTE, capsys)
    assert code == 0
    assert "warning: node.accept_unknown_calling_ae" in out
    assert "warning: peers.0.check_host" in out


def test_tls_files_that_cannot_be_loaded(tmp_path, capsys):
    code, out = check(tmp_path, PEER + ROUTE + '[tls]\nreceive = true\n'
                      f'certificate_file = "{tmp_path}/none.crt"\n'
                      f'private_key_file = "{tmp_path}/none.key"\nca_file = "{tmp_path}/ca.crt"\n',
                      capsys)
    assert code == 2
    assert "tls.certificate_file/private_key_file/ca_file: cannot load" in out
