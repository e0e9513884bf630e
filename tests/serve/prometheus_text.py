"""A strict reader of the Prometheus text exposition format (0.0.4), for the tests of
``gaf-trt serve``'s ``/metrics``: every line is a HELP, a TYPE or a sample of the family
typed just before it; no family twice; histogram buckets cumulative and ending at +Inf."""

from __future__ import annotations

import math
import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({NAME})(\{{(?:{LABEL})(?:,{LABEL})*\}})? (\S+)")
SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",),
            "summary": ("", "_sum", "_count"), "histogram": ("_bucket", "_sum", "_count")}


def parse_labels(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple(sorted((k, v) for k, v in re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"',
                                                     text)))


def parse_value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text), f"bad value {text!r}"
    return float(text)


def parse(text: str) -> tuple[dict[str, str], dict[tuple, float]]:
    """``(types, samples)``: family name -> type, ``(sample name, labels)`` -> value.
    Fails (AssertionError naming the line) on anything out of the format."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple, float] = {}
    family = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in helps, where
            helps.add(name)
        elif line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and parts[3] in SUFFIXES, where
            assert parts[2] in helps and parts[2] not in types, where
            family = parts[2]
            types[family] = parts[3]
        else:
            m = SAMPLE.fullmatch(line)
            assert m and family is not None, where
            name, labels = m.group(1), parse_labels(m.group(2))
            assert name in {family + s for s in SUFFIXES[types[family]]}, where
            assert (name, labels) not in samples, f"duplicate sample, {where}"
            samples[(name, labels)] = parse_value(m.group(3))
    for fam, kind in types.items():
        if kind == "histogram":
            check_histogram(fam, samples)
    return types, samples


def check_histogram(fam: str, samples: dict[tuple, float]) -> None:
    buckets = sorted((parse_value(dict(lb)["le"]), v) for (n, lb), v in samples.items()
                     if n == fam + "_bucket")
    assert buckets and math.isinf(buckets[-1][0]), f"{fam}: no +Inf bucket"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{fam}: buckets not cumulative"
    assert counts[-1] == samples[(fam + "_count", ())], f"{fam}: +Inf bucket != count"


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]
