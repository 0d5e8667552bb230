"""The command line as a person first meets it: --version and --help."""

from __future__ import annotations

from conftest import framechain


def test_version_and_help_speak_to_users() -> None:
    version = framechain("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("framechain ")
    assert version.stdout.split()[1][0].isdigit() or "source tree" in version.stdout
    helped = framechain("--help")
    assert helped.returncode == 0
    text = helped.stdout
    assert "Turns camera streams into analytics events" in text
    assert "framechain run configs/demo.yaml" in text and "Exit status" in text
    # no reStructuredText quoting, no notes meant for the code's readers
    assert "``" not in text and "only place" not in text and "module" not in text
