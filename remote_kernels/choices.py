"""Resources a user may choose for a kernel within the bounds the spec's admin declares.

Pure (no I/O).  The declaration is the spec's ``user_choices`` option::

    {"partition": {"choices": ["debug", "long"]},
     "time": {"min": "0:10:00", "max": "4:00:00"},
     "cpus": {"min": 1, "max": 4}, "mem": {"min": "1G", "max": "8G"}, "gpus": {"min": 0, "max": 1}}

A choice is a mapping of some of those fields to values (the launch dialog's, kept in the
notebook's metadata).  ``declaration`` checks a declaration (install, KernelOptions);
``resolve`` turns a choice into option values, or raises ``Refused`` naming the bound.  Every
error is one line naming the field, the bound and the fix.
"""

from __future__ import annotations

from typing import Any, Mapping

from .schedulers._common import hms, megabytes, seconds

RANGES = ("time", "cpus", "mem", "gpus")
FIELDS = ("partition", *RANGES)


class Refused(ValueError):
    """A choice outside the declared bounds (or a field the spec does not offer)."""


def _measure(field: str, value: Any) -> int:
    """A range field's value as a number to compare: seconds, megabytes or a count.  ValueError."""
    if field in ("cpus", "gpus"):
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise ValueError(f"{field} {value!r} is not a whole number")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{field} {value!r} is not a {'wall-time' if field == 'time' else 'size'}")
    try:
        return seconds(value) if field == "time" else megabytes(value)
    except ValueError:
        hint = "[D-]HH:MM:SS or minutes" if field == "time" else "a number with K, M, G or T, e.g. 4G"
        raise ValueError(f"{field} {value!r} is not a {'wall-time' if field == 'time' else 'size'}; use {hint}") from None


def declaration(raw: Any) -> dict:
    """The declaration ``raw`` (a mapping as above), checked; ValueError in one line."""
    if not isinstance(raw, Mapping):
        raise ValueError("user_choices must map resource names to their bounds")
    checked: dict = {}
    for field, bounds in raw.items():
        if field not in FIELDS:
            raise ValueError(f"user_choices: {field!r} cannot be chosen; choosable: {', '.join(FIELDS)}")
        if field == "partition":
            names = bounds.get("choices") if isinstance(bounds, Mapping) else None
            if (not isinstance(names, list) or not names or set(bounds) != {"choices"}
                    or not all(isinstance(n, str) and n.strip() for n in names)):
                raise ValueError('user_choices: partition needs {"choices": [NAME, ...]} (a non-empty list of names)')
            checked[field] = {"choices": list(names)}
            continue
        if not isinstance(bounds, Mapping) or set(bounds) != {"min", "max"}:
            raise ValueError(f'user_choices: {field} needs {{"min": LOW, "max": HIGH}}')
        try:
            low, high = _measure(field, bounds["min"]), _measure(field, bounds["max"])
        except ValueError as e:
            raise ValueError(f"user_choices: {e}") from None
        if low > high:
            raise ValueError(f"user_choices: {field} min {bounds['min']} is above its max {bounds['max']}")
        if field == "time" and low == 0:
            raise ValueError("user_choices: time min must be above 0")
        checked[field] = {"min": bounds["min"], "max": bounds["max"]}
    return checked


def within(field: str, value: Any, bounds: Mapping, whose: str = "this spec's") -> str | None:
    """Why ``value`` of ``field`` is outside ``bounds`` (a declaration's entry), or None."""
    if field == "partition":
        if value not in bounds["choices"]:
            return f"partition {value!r} is not one of {whose} choices ({', '.join(bounds['choices'])})"
        return None
    try:
        number = _measure(field, value)
    except ValueError as e:
        return str(e)
    if number < _measure(field, bounds["min"]):
        return f"{field} {value} is below {whose} minimum {bounds['min']}"
    if number > _measure(field, bounds["max"]):
        return f"{field} {value} is above {whose} maximum {bounds['max']}"
    return None


def resolve(decl: Mapping, choice: Any) -> dict:
    """The option values of a choice (``{"time": "00:20:00", "cpus": 2}``); empty or None values
    are left out (the spec's own value applies).  Refused, naming the first bound broken."""
    if choice is None:
        return {}
    if not isinstance(choice, Mapping):
        raise Refused("the chosen resources must be a mapping of resource names to values")
    options: dict = {}
    for field, value in choice.items():
        if value is None or value == "":
            continue
        if field not in decl:
            offered = ", ".join(decl) or "nothing"
            raise Refused(f"{field} cannot be chosen for this spec (it offers {offered})")
        why = within(field, value, decl[field])
        if why:
            raise Refused(why)
        if field in ("cpus", "gpus"):
            options[field] = int(value)
        elif field == "time":
            options[field] = hms(seconds(value))
        else:
            options[field] = value.strip()
    return options


def default_outside(decl: Mapping, values: Mapping) -> str | None:
    """Why a spec's own value (``values``: option -> value) of a choosable resource lies outside
    its declared bounds; None when every set one (not empty or 0) lies within."""
    for field, bounds in decl.items():
        value = values.get(field)
        if value not in (None, "", 0) and (why := within(field, value, bounds, "its user_choices'")):
            return f"the spec's own {why}"
    return None


def parse_flag(text: str) -> tuple[str, dict]:
    """``--user-choice`` text: ``partition=A,B`` or ``FIELD=LOW..HIGH`` -> (field, bounds).  ValueError."""
    field, sep, rest = text.partition("=")
    field = field.strip()
    if not sep or field not in FIELDS:
        raise ValueError(f"{text!r}: use partition=NAME,NAME... or FIELD=MIN..MAX "
                         f"with FIELD one of {', '.join(RANGES)}")
    if field == "partition":
        return field, {"choices": [n.strip() for n in rest.split(",") if n.strip()]}
    low, dots, high = rest.partition("..")
    if not dots or not low.strip() or not high.strip():
        raise ValueError(f"{text!r}: a range is MIN..MAX, e.g. {field}="
                         + {"time": "0:10:00..4:00:00", "mem": "1G..8G"}.get(field, "1..4"))
    low, high = low.strip(), high.strip()
    if field in ("cpus", "gpus") and low.isdigit() and high.isdigit():
        return field, {"min": int(low), "max": int(high)}
    return field, {"min": low, "max": high}


def largest_choices(decl: Mapping) -> list[dict]:
    """The largest requests users may choose: each declared maximum, in each offered partition
    (install checks them against the site).  [] when the declaration offers nothing."""
    top = {f: (int(b["max"]) if f in ("cpus", "gpus") else b["max"]) for f, b in decl.items() if f in RANGES}
    partitions = decl.get("partition", {}).get("choices", [])
    if partitions:
        return [{"partition": p, **top} for p in partitions]
    return [top] if top else []
