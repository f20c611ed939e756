"""scripts/tested_versions.py and docs/tested-versions.md, the one place the docs name versions."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("tested_versions", ROOT / "scripts" / "tested_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_records_every_package_the_script_reports():
    script = load_script()
    recorded = script.recorded(script.DOC.read_text())
    assert list(recorded) == ["python", *script.PACKAGES]
    assert all(v[0].isdigit() for v in recorded.values()), recorded


def test_write_replaces_the_table_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    script = load_script()
    doc = tmp_path / "tested-versions.md"
    doc.write_text(
        "intro\n\nLast recorded: 2000-01-01.\n\n| package | version |\n|---|---|\n| `torch` | 0.1 |\n\ntail\n"
    )
    monkeypatch.setattr(script, "DOC", doc)
    monkeypatch.setattr(script, "installed", lambda: {"python": "3.11.7", "torch": "2.14.1"})
    assert script.main([]) == 0
    assert "torch            2.14.1   <- tested-versions.md says 0.1" in capsys.readouterr().out
    assert script.main(["--write"]) == 0
    text = doc.read_text()
    assert script.recorded(text) == {"python": "3.11.7", "torch": "2.14.1"}
    assert text.startswith("intro\n") and text.endswith("\n\ntail\n") and "2000-01-01" not in text
    assert "<-" not in capsys.readouterr().out
