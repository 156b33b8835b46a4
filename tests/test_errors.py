"""Tests of covseg.errors: the wording and classification its messages share."""

from __future__ import annotations

from pathlib import Path

import pytest

from covseg.errors import (
    CovsegError,
    byte_size,
    failure_reason,
    out_of_memory_text,
    read_naming_out_of_memory,
    terminal_safe,
)


def test_8_bit_controls_and_bidirectional_overrides_are_shown_escaped() -> None:
    """C1 codes (0x80-0x9f: 0x9b is the 8-bit CSI that starts an ANSI sequence) and the
    overrides that reorder what follows are escaped as ESC is; tab and newline are kept."""
    assert terminal_safe("a\x9b2Jb\x85c\x80") == "a\\x9b2Jb\\x85c\\x80"
    assert terminal_safe("x\u202egnp.exe\u2066") == "x\\u202egnp.exe\\u2066"
    assert terminal_safe("tab\tnew\nline é ü") == "tab\tnew\nline é ü"


def test_a_read_out_of_memory_names_its_file_and_a_bug_passes_through(tmp_path: Path) -> None:
    """A failed allocation while reading one file is that file's error, with its size beside
    the size asked for; any other RuntimeError is a bug and is raised as it is, not called
    "out of memory"."""
    path = tmp_path / "x.npy"
    path.write_bytes(b"x" * 193)

    def bug(_: Path) -> None:
        raise RuntimeError("index 3 is out of bounds")

    with pytest.raises(RuntimeError, match="^index 3 is out of bounds$"):
        read_naming_out_of_memory(bug, path)

    def lying_header(_: Path) -> None:
        raise MemoryError("Unable to allocate 298. GiB for an array")

    with pytest.raises(CovsegError) as caught:
        read_naming_out_of_memory(lying_header, path)
    assert str(caught.value) == (f"{path}: out of memory (could not allocate 298. GiB) "
                                 "reading it; the file holds 193 bytes: is the file corrupt? "
                                 "If not, free memory or use a machine with more")
    assert read_naming_out_of_memory(lambda named: named.stat().st_size, path) == 193


def test_byte_sizes_are_shown_in_the_largest_binary_unit_of_at_least_1() -> None:
    assert [byte_size(n) for n in (1000, 1023, 1024, 3 * 2 ** 40, 2 ** 60)] == [
        "1000 bytes", "1023 bytes", "1 KiB", "3 TiB", "1.02e+03 PiB"]


def test_an_allocation_of_a_few_mib_is_named_in_mib_not_as_0_gib() -> None:
    """torch's "allocate N bytes" was shown in GiB to two decimals: a slice's 4 MiB read
    "could not allocate 0.00 GiB"."""
    failed = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                          "4194304 bytes. Error code 12 (Cannot allocate memory)")
    assert out_of_memory_text(failed).startswith("out of memory (could not allocate 4 MiB): ")


def test_a_failed_studys_reason_is_one_line(tmp_path: Path) -> None:
    """matplotlib's TypeError of four lines (its signature dump) made summary.csv's error cell
    and the console's error four lines: the reason is one line, whatever the exception."""
    error = TypeError("set_text(): incompatible function arguments.\n    1. (self) -> None\n\n"
                      "Invoked with: 't\\udcc3'")
    assert failure_reason(error, tmp_path) == ("TypeError: set_text(): incompatible function "
                                               "arguments. 1. (self) -> None Invoked with: "
                                               "'t\\udcc3'")
    assert failure_reason(CovsegError("bad\nname"), tmp_path) == "bad name"


def test_a_study_failing_for_no_temporary_folder_says_to_set_tmpdir(tmp_path: Path) -> None:
    """A batch's CT study that met no writable temporary folder (a locked-down container) had
    Python's bare "FileNotFoundError: [Errno 2] No usable temporary directory found in [...]",
    the advice to set TMPDIR reaching only the command's own error."""
    error = FileNotFoundError(2, "No usable temporary directory found in ['/tmp', '/var/tmp']")
    assert failure_reason(error, tmp_path) == (
        "FileNotFoundError: [Errno 2] No usable temporary directory found in ['/tmp', "
        "'/var/tmp']; set TMPDIR to a writable folder")
    assert failure_reason(FileNotFoundError(2, "No such file or directory"), tmp_path) == (
        "FileNotFoundError: [Errno 2] No such file or directory")
