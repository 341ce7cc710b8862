"""remote_command(): one command line that sh, bash and tcsh (csh) all split back into the same argv."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import unavailable
from remote_kernels.runner import remote_command

SHELLS = ["/bin/sh", "/bin/bash", "/usr/bin/tcsh"]
WORDS = [
    "plain", "with space", "it's", "%i|%T|%r|%N|%S", "$HOME", "`id`", "$(id)", "a;b", "a&b", "{x,y}", "*",
    "~", "back\\slash", 'dq"uote', "tab\there", "echo $!", "$!", "x!=y", "", "-n", "a'b'c", "#hash", "é ü",
    "script=$(cat) || exit 1; printf \"%s\\n\" \"$script\" | X=\"$1\" setsid nohup bash -s >/dev/null 2>&1 & echo $!",
]


@pytest.mark.parametrize("shell", SHELLS)
def test_every_login_shell_reads_the_same_argv(shell):
    if not shutil.which(shell):   # tcsh is one of the test site's packages
        unavailable(f"{shell} missing (apt-get install tcsh; make deps does)")
    line = remote_command(["printf", "%s\\0", *WORDS])
    out = subprocess.run([shell, "-c", line], capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\0")[:-1] == WORDS


@pytest.mark.parametrize("word", ["two\nlines", "!x", "a!b", "\\! x"])
def test_words_csh_would_read_otherwise_are_refused(word):
    with pytest.raises(ValueError, match="remote shell"):
        remote_command(["echo", word])
