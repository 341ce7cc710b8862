"""Resources users choose within the spec's bounds (choices.py, chosen.py): the declaration is
checked as installed, a choice is resolved or refused naming the bound, and a notebook's stored
choice applies to that kernel's options only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from traitlets import TraitError

from remote_kernels.choices import Refused, declaration, default_outside, parse_flag, resolve
from remote_kernels.chosen import apply_choice, stored_choice
from remote_kernels.errors import KernelStartError
from remote_kernels.options import KernelOptions

DECL = {"partition": {"choices": ["debug", "long"]}, "time": {"min": "0:10:00", "max": "4:00:00"},
        "cpus": {"min": 1, "max": 2}, "mem": {"min": "512M", "max": "4G"}, "gpus": {"min": 0, "max": 1}}


def test_a_choice_within_the_bounds_gives_option_values():
    assert resolve(DECL, {"time": "0:20:00", "cpus": 2, "mem": "1G", "partition": "long", "gpus": 0}) == {
        "time": "00:20:00", "cpus": 2, "mem": "1G", "partition": "long", "gpus": 0}
    assert resolve(DECL, {"time": "30", "cpus": "1"}) == {"time": "00:30:00", "cpus": 1}   # minutes; digits
    assert resolve(DECL, {"time": "", "cpus": None}) == {} == resolve(DECL, None)   # unset: the spec's own


@pytest.mark.parametrize("choice, message", [
    ({"time": "5:00:00"}, "time 5:00:00 is above this spec's maximum 4:00:00"),
    ({"time": "0:05:00"}, "time 0:05:00 is below this spec's minimum 0:10:00"),
    ({"cpus": 3}, "cpus 3 is above this spec's maximum 2"),
    ({"cpus": 0}, "cpus 0 is below this spec's minimum 1"),
    ({"cpus": 1.5}, "cpus 1.5 is not a whole number"),
    ({"cpus": True}, "cpus True is not a whole number"),
    ({"mem": "8G"}, "mem 8G is above this spec's maximum 4G"),
    ({"mem": "lots"}, "mem 'lots' is not a size"),
    ({"time": "soon"}, "time 'soon' is not a wall-time"),
    ({"partition": "urgent"}, "partition 'urgent' is not one of this spec's choices (debug, long)"),
    ({"account": "physics"}, "account cannot be chosen for this spec (it offers partition, time, cpus, mem, gpus)"),
])
def test_a_choice_outside_the_bounds_is_refused_naming_the_bound(choice, message):
    with pytest.raises(Refused) as err:
        resolve(DECL, choice)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_spec_without_choices_refuses_any():
    with pytest.raises(Refused, match="time cannot be chosen for this spec .it offers nothing."):
        resolve({}, {"time": "10"})
    with pytest.raises(Refused, match="must be a mapping"):
        resolve(DECL, ["time"])


@pytest.mark.parametrize("raw, message", [
    ({"account": {"choices": ["a"]}}, "'account' cannot be chosen; choosable: partition, time, cpus, mem, gpus"),
    ({"partition": {"choices": []}}, "partition needs"),
    ({"partition": ["debug"]}, "partition needs"),
    ({"time": {"min": "1:00:00"}}, 'time needs {"min": LOW, "max": HIGH}'),
    ({"time": {"min": "2:00:00", "max": "1:00:00"}}, "time min 2:00:00 is above its max 1:00:00"),
    ({"time": {"min": "0", "max": "1:00:00"}}, "time min must be above 0"),
    ({"cpus": {"min": "one", "max": 2}}, "cpus 'one' is not a whole number"),
    ({"mem": {"min": "1X", "max": "2G"}}, "mem '1X' is not a size"),
    (["time"], "user_choices must map resource names to their bounds"),
])
def test_a_bad_declaration_is_refused_in_one_line(raw, message):
    with pytest.raises(ValueError) as err:
        declaration(raw)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TraitError, match="user_choices"):
        KernelOptions(environ={}, user_choices=raw)


def test_the_spec_default_must_lie_within_its_bounds():
    assert default_outside(DECL, {"time": "1:00:00", "cpus": 0, "mem": ""}) is None   # 0/"": unset
    assert default_outside(DECL, {"time": "8:00:00"}) == \
        "the spec's own time 8:00:00 is above its user_choices' maximum 4:00:00"


@pytest.mark.parametrize("text, parsed", [
    ("time=0:10:00..4:00:00", ("time", {"min": "0:10:00", "max": "4:00:00"})),
    ("cpus=1..4", ("cpus", {"min": 1, "max": 4})),
    ("mem=1G..8G", ("mem", {"min": "1G", "max": "8G"})),
    ("partition=debug, long", ("partition", {"choices": ["debug", "long"]})),
])
def test_the_install_flag(text, parsed):
    assert parse_flag(text) == parsed


@pytest.mark.parametrize("text", ["time=1:00:00", "account=a..b", "cpus", "cpus=..4"])
def test_a_bad_install_flag_says_the_form(text):
    with pytest.raises(ValueError, match="partition=NAME,NAME... or FIELD=MIN..MAX|a range is MIN..MAX"):
        parse_flag(text)


def notebook(tmp_path, resources: dict | None, name: str = "a.ipynb") -> str:
    meta = {"kernelspec": {"name": "rk-choose"}}
    if resources is not None:
        meta["remote_kernels"] = {"resources": resources}
    path = tmp_path / name
    path.write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
    return str(path)


def test_the_notebooks_choice_applies_to_that_kernels_options_over_the_spec(tmp_path):
    opts = KernelOptions(environ={}, time="1:00:00", cpus=1, mem="1G", user_choices=DECL)
    env = {"JPY_SESSION_NAME": notebook(tmp_path, {"rk-choose": {"time": "0:20:00", "cpus": 2},
                                                  "other-spec": {"time": "9:00:00"}})}
    base = apply_choice(opts, "rk-choose", env)
    assert (opts.time, opts.cpus, opts.mem) == ("00:20:00", 2, "1G")
    assert base["time"] == "1:00:00" and base["cpus"] == 1
    # A restart after the choice was removed: back to the spec's own values.
    env = {"JPY_SESSION_NAME": notebook(tmp_path, None, "b.ipynb")}
    apply_choice(opts, "rk-choose", env, base)
    assert (opts.time, opts.cpus) == ("1:00:00", 1)


def test_a_kernel_without_a_notebook_or_choice_keeps_the_spec(tmp_path):
    for env in ({}, {"JPY_SESSION_NAME": str(tmp_path / "missing.ipynb")},
                {"JPY_SESSION_NAME": notebook(tmp_path, {"another": {"cpus": 2}})}):
        opts = KernelOptions(environ={}, cpus=1, user_choices=DECL)
        apply_choice(opts, "rk-choose", env)
        assert opts.cpus == 1
    (tmp_path / "bad.ipynb").write_text("{not json")
    opts = KernelOptions(environ={}, cpus=1)
    apply_choice(opts, "rk-choose", {"JPY_SESSION_NAME": str(tmp_path / "bad.ipynb")})
    assert opts.cpus == 1


def test_a_stored_choice_outside_the_bounds_fails_the_start_naming_bound_and_fix(tmp_path):
    opts = KernelOptions(environ={}, cpus=1, user_choices=DECL)
    env = {"JPY_SESSION_NAME": notebook(tmp_path, {"rk-choose": {"cpus": 16}})}
    with pytest.raises(KernelStartError) as err:
        apply_choice(opts, "rk-choose", env)
    message = str(err.value)
    assert "cpus 16 is above this spec's maximum 2" in message and "a.ipynb" in message
    assert "metadata.remote_kernels.resources.rk-choose" in message and "\n" not in message
    assert opts.cpus == 1


def test_stored_choice_reads_only_well_formed_metadata():
    assert stored_choice({}, "s") is None
    assert stored_choice({"metadata": {"remote_kernels": "x"}}, "s") is None
    assert stored_choice({"metadata": {"remote_kernels": {"resources": {"s": {"cpus": 2}}}}}, "s") == {"cpus": 2}


def install(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "remote_kernels", "install", *args, "--no-check", "--prefix",
                           str(tmp_path)], capture_output=True, text=True)


def test_install_writes_the_declared_bounds(tmp_path):
    res = install(tmp_path, "ch", "--time", "1:00:00", "--user-choice", "time=0:10:00..4:00:00",
                  "--user-choice", "cpus=1..2", "--user-choice", "partition=debug,long")
    assert res.returncode == 0, res.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/ch/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["user_choices"] == {
        "time": {"min": "0:10:00", "max": "4:00:00"}, "cpus": {"min": 1, "max": 2},
        "partition": {"choices": ["debug", "long"]}}


@pytest.mark.parametrize("args, message", [
    (["--user-choice", "time=1:00:00"], "a range is MIN..MAX, e.g. time=0:10:00..4:00:00"),
    (["--user-choice", "cpus=4..1"], "user_choices: cpus min 4 is above its max 1"),
    (["--time", "8:00:00", "--user-choice", "time=0:10:00..4:00:00"],
     "the spec's own time 8:00:00 is above its user_choices' maximum 4:00:00; widen the bounds"),
])
def test_install_refuses_a_bad_declaration_in_one_line(tmp_path, args, message):
    res = install(tmp_path, "ch", *args)
    assert res.returncode != 0 and message in res.stderr.strip().splitlines()[-1], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "share/jupyter/kernels/ch").exists()


def test_the_largest_choices_are_each_maximum_in_each_partition():
    from remote_kernels.choices import largest_choices

    assert largest_choices(DECL) == [
        {"partition": p, "time": "4:00:00", "cpus": 2, "mem": "4G", "gpus": 1} for p in ("debug", "long")]
    assert largest_choices({"cpus": {"min": 1, "max": 4}}) == [{"cpus": 4}]
    assert largest_choices({}) == []
