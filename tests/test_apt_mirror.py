"""scripts/apt-mirror.sh: the image build takes the Debian mirror from the host's apt sources, not from the code."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "apt-mirror.sh"


def mirror(apt_dir: Path) -> subprocess.CompletedProcess:
    (apt_dir / "sources.list.d").mkdir(exist_ok=True)
    return subprocess.run([str(SCRIPT), str(apt_dir)], capture_output=True, text=True)


def test_a_deb822_source_gives_the_main_archive_not_the_security_one(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.test/debian/\nSuites: bookworm bookworm-updates\n"
    )
    assert mirror(tmp_path).stdout == "http://mirror.test/debian\n"


def test_a_one_line_source_with_options_gives_its_address(tmp_path):
    line = "deb [arch=amd64 signed-by=/k.gpg] http://other.test/debian bookworm main"
    (tmp_path / "sources.list").write_text(f"# a comment\n{line}\n")
    assert mirror(tmp_path).stdout == "http://other.test/debian\n"


def test_no_source_at_all_is_one_line_naming_the_way_out(tmp_path):
    found = mirror(tmp_path)
    assert found.returncode == 1 and found.stdout == ""
    assert found.stderr == f"no Debian mirror in {tmp_path}/sources.list or {tmp_path}/sources.list.d/: set DEBIAN_MIRROR=URL\n"
